"""The cost model as equations (analysis/cost_model.py): each strategy's strict 4 KiB unmap
round trip, checked exactly against what the simulator charges, at the default costs and
at two other cost sets (within ``X <= w + d``, where the equations hold)."""

from __future__ import annotations

import pytest

from iommu_lab.analysis.cost_model import EQUATIONS, equation, equation_rows, simulated_ns
from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.hw.costs import Costs

OVERRIDES = [None, {"call_ns": 70, "hw_sync_ns": 800, "mmio_read_ns": 300, "pte_update_ns": 5},
             {"cmd_write_ns": 30, "mmio_write_ns": 250, "mem_poll_ns": 120, "hw_tlbi_ns": 90}]


@pytest.mark.parametrize("strategy", list(EQUATIONS))
@pytest.mark.parametrize("overrides", OVERRIDES)
def test_each_equation_is_what_the_model_charges(strategy, overrides):
    costs = Costs().with_overrides(overrides)
    for pages in (1, 3):
        assert simulated_ns(strategy, pages, overrides) == pages * equation(strategy).ns(costs)


def test_equation_values_at_the_default_costs():
    # 1.34 / 0.89 / 0.84 µs: v4.14 pays a second doorbell and an MMIO poll of CMDQ_CONS
    assert {r["strategy"]: r["µs"] for r in equation_rows()} == {
        "smmuv3-v4.14": 1.34, "smmuv3-v4.15": 0.89, "smmuv3-v5.4": 0.84}
    with pytest.raises(IommuError) as exc:
        equation("vtd-psi")
    assert exc.value.errno == EINVAL
