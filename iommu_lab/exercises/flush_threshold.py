"""Notebook 10: the commands of "range below T pages, whole ASID above" on SMMUv3 (v5.4).

``iommu_lab.drivers.examples.RangeOrAll``: ``iotlb_sync`` invalidates the gathered range
with v5.4's one ``CMD_TLBI_NH_VA`` per 4K page (batches of 64, the last with CMD_SYNC) —
unless the range is more than ``T`` pages, then one ``CMD_TLBI_NH_ASID`` and one CMD_SYNC
(``arm_smmu_tlb_inv_context``). The caller is the strict DMA API: one
``iommu_dma_unmap`` (``iommu_unmap_fast`` + ``iommu_iotlb_sync``) per buffer. Seeds may be
ints or student-ID strings.
"""

from __future__ import annotations

from typing import Any

from ..analysis.stepping import StepperModel
from ..drivers.examples import RangeOrAll
from ..drivers.user import scratch_strategy
from ..units import SZ_4K
from ._base import (
    Problem,
    commands_text,
    dict_of_ints,
    explainer,
    md_table,
    new_slots,
    rng_for,
    run_check,
    seeded,
)

NAME = "flush_threshold"
NOTEBOOK = "10"
KIND = "numeric"
FIELDS = ("inv_cmds", "inv_all_cmds", "sync_cmds")
BASE = 0x100_0000


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """T in {4, 8, 16}; three buffers of 1..40 pages (one near T)."""
    rng = rng_for(NAME, seed)
    t = rng.choice((4, 8, 16))
    sizes = [rng.randrange(1, 41), rng.choice((t, t + 1)), rng.randrange(1, 2 * t + 1)]
    rng.shuffle(sizes)
    text = (f"Strategy range-or-all with T = {t} pages on smmuv3-v5.4, a strict DMA domain. "
            f"The driver maps three buffers of {', '.join(map(str, sizes))} x 4K pages, then "
            "unmaps each with iommu_dma_unmap (iommu_unmap_fast + iommu_iotlb_sync).\n"
            "How many invalidation commands does the SMMU receive in total (inv_cmds: TLBIs, "
            "NH_ASID included), how many of them are whole-ASID (inv_all_cmds), and how many "
            "CMD_SYNCs (sync_cmds)?")
    return Problem(NAME, seed, text, {"t": t, "sizes": sizes},
                   answer_format='a dict, e.g. {"inv_cmds": 12, "inv_all_cmds": 1, '
                                 '"sync_cmds": 3}',
                   hint=f"more than {t} pages: 1 NH_ASID + 1 CMD_SYNC; otherwise one NH_VA per "
                        "page + 1 CMD_SYNC; mapping issues nothing.")


def solve(problem: Problem) -> dict[str, int]:
    """Replay it on a stepper model (the strategy registered only meanwhile) and read the
    counters after the three unmaps."""
    p = problem.params
    with scratch_strategy(RangeOrAll) as name:
        m = StepperModel(name, type="DMA", paused=False, flush_all_above=p["t"])
        spans = [(BASE + i * 0x10_0000, pages) for i, pages in enumerate(p["sizes"])]
        for iova, pages in spans:
            m.map(hex(iova), pages * SZ_4K)
        for iova, pages in spans:
            m.unmap(hex(iova), pages * SZ_4K)
        st = m.domain.stats()
        return {k: st[k] for k in FIELDS}


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "Fewer commands above T — and the IOTLB refills the rest of the domain.")


@explainer
def explain(problem: Problem) -> str:
    """Each buffer's unmap: its size against T, the commands it wrote."""
    p = problem.params
    rows = []
    with scratch_strategy(RangeOrAll) as name:
        m = StepperModel(name, type="DMA", paused=False, flush_all_above=p["t"])
        for i, pages in enumerate(p["sizes"]):
            m.map(hex(BASE + i * 0x10_0000), pages * SZ_4K)
        for i, pages in enumerate(p["sizes"]):
            since = m.queue.state().prod
            m.unmap(hex(BASE + i * 0x10_0000), pages * SZ_4K)
            rows.append({"buffer": f"{pages} pages", "vs T": f"> {p['t']}" if pages > p["t"]
                         else f"≤ {p['t']}",
                         "commands of its iommu_dma_unmap": commands_text(
                             new_slots(m.queue, since))})
        st = m.domain.stats()
    return (f"`iotlb_sync` of a gathered range of more than T = {p['t']} pages drops the whole "
            "ASID (`CMD_TLBI_NH_ASID` + `CMD_SYNC`); a smaller one gets v5.4's one "
            "`CMD_TLBI_NH_VA` per page and a `CMD_SYNC`. Mapping issues nothing on SMMUv3.\n\n"
            + md_table(rows) + "\n\nIn all: "
            + ", ".join(f"`{k}` = {st[k]}" for k in FIELDS) + ".")
