"""The strategy catalogue: each driver strategy pinned to a kernel version and its source.

``iommu_domain_alloc(name, type=..., ias=..., api=..., **params)`` builds a domain from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.dma_iommu import IOVA_FQ_SIZE, IOVA_FQ_TIMEOUT_MS, FlushQueue, IovaDomain
from ..core.domain import IommuDomain
from ..errors import einval
from ..hw.costs import Costs
from ..hw.iotlb import Iotlb
from ..io_pgtable.arm import ARM_64_LPAE_S1, ARM_64_LPAE_S2, IoPgtableArm, IoPgtableCfg
from ..units import SZ_1G, SZ_2M, SZ_4K
from .amd_iommu import AMD_IOMMU_PGSIZES, AmdIommuFlushAll, AmdIommuRange
from .arm_smmu import ArmSmmuV2
from .arm_smmu_v3 import ArmSmmuV3, ArmSmmuV3Early, ArmSmmuV3Ril, ArmSmmuV3Strict
from .base import Driver
from .intel_iommu import INTEL_IOMMU_PGSIZES, IntelIommu
from .virtio_iommu import VIRTIO_IOMMU_PGSIZES, VirtioIommu

LPAE_4K = SZ_4K | SZ_2M | SZ_1G


@dataclass(frozen=True)
class Strategy:
    """One driver strategy: how a driver implements the callbacks in one kernel era."""

    name: str
    hardware: str
    kernel: str
    summary: str
    source: str
    driver: type[Driver]
    core_era: str
    pgsize_bitmap: int
    supports_fq: bool
    sync_on_unmap: bool = False


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("smmuv3-v4.14", "ARM SMMUv3", "v4.14",
             "flush inside unmap: a TLBI per granule + CMD_SYNC per unmap piece",
             "drivers/iommu/arm-smmu-v3.c, io-pgtable-arm.c @v4.14.5",
             ArmSmmuV3Strict, "v4.14", LPAE_4K, False, sync_on_unmap=True),
    Strategy("smmuv3-v4.15", "ARM SMMUv3", "v4.15",
             "TLBIs issued early inside ->unmap, one CMD_SYNC in iotlb_sync (Will's design)",
             "drivers/iommu/arm-smmu-v3.c @v4.15 (kernel-api-history §3.4)",
             ArmSmmuV3Early, "v4.14", LPAE_4K, False),
    Strategy("smmuv3-v5.4", "ARM SMMUv3", "v5.4",
             "gather in ->unmap; TLBIs built at sync in batches of 64 + one CMD_SYNC",
             "drivers/iommu/arm-smmu-v3.c @v5.4.6", ArmSmmuV3, "v5.4", LPAE_4K, True),
    Strategy("smmuv3-ril", "ARM SMMUv3.2 (RIL)", "v5.10",
             "gather; range TLBIs (NUM/SCALE/TG/TTL) + one CMD_SYNC",
             "drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c @v5.10.89",
             ArmSmmuV3Ril, "v5.10", LPAE_4K, True),
    Strategy("smmuv2", "ARM SMMUv2", "v4.14",
             "TLBIVAL register write per granule + TLBSYNC/TLBSTATUS poll per unmap piece",
             "drivers/iommu/arm-smmu.c @v4.14.5", ArmSmmuV2, "v4.14", LPAE_4K, False,
             sync_on_unmap=True),
    Strategy("vtd-psi", "Intel VT-d (QI)", "v5.10",
             "PSI with address mask per ->unmap (DSI above cap_max_amask_val) + wait",
             "drivers/iommu/intel/iommu.c, dmar.c @v5.10.89", IntelIommu, "v5.10",
             INTEL_IOMMU_PGSIZES, True),
    Strategy("amd-flush-all", "AMD-Vi", "v5.10",
             "whole-domain INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT at every sync",
             "drivers/iommu/amd/iommu.c @v5.10.89", AmdIommuFlushAll, "v5.10",
             AMD_IOMMU_PGSIZES, True),
    Strategy("amd-range", "AMD-Vi", "v5.15",
             "S-bit naturally aligned range + COMPLETION_WAIT (NpCache: aligned pieces)",
             "drivers/iommu/amd/iommu.c @v5.15 (and v6.18.2)", AmdIommuRange, "v5.15",
             AMD_IOMMU_PGSIZES, True),
    Strategy("virtio-iommu", "virtio-iommu (paravirtual)", "v5.15",
             "one UNMAP request per unmap call, kick + wait at sync; MAP requests synchronous",
             "drivers/iommu/virtio-iommu.c @v5.15", VirtioIommu, "v5.15",
             VIRTIO_IOMMU_PGSIZES, False),
)}

COMMON_PARAMS: dict[str, Any] = {
    "iotlb_entries": 64, "iotlb_replacement": "lru", "walk_cache_entries": 16,
    "cache_non_present": False, "seed": 0, "cmdq_entries": None, "costs": None,
    "fq_size": IOVA_FQ_SIZE, "fq_timeout_ms": IOVA_FQ_TIMEOUT_MS, "split_blocks": True,
    "oas": 48, "asid": 1, "trace_limit": 200_000,
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; EINVAL naming the known ones otherwise."""
    if name not in STRATEGIES:
        raise einval(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def known_params(strategy: Strategy) -> dict[str, Any]:
    """Every parameter ``iommu_domain_alloc`` accepts for ``strategy``, with defaults."""
    return {**COMMON_PARAMS, **strategy.driver.params}


def iommu_domain_alloc(strategy: str, type: str = "UNMANAGED", ias: int = 48,
                       api: str = "kernel", **params: Any) -> IommuDomain:
    """Allocate a domain driven by ``strategy`` (see :func:`strategies`)."""
    strat = get_strategy(strategy)
    allowed = known_params(strat)
    unknown = set(params) - set(allowed)
    if unknown:
        raise einval(f"unknown parameter(s) {', '.join(sorted(unknown))} for {strategy}; "
                     f"known: {', '.join(sorted(allowed))}")
    p = {**allowed, **params}
    if isinstance(ias, bool) or not isinstance(ias, int):
        raise einval(f"ias must be an integer number of bits, not {ias!r}")
    costs = Costs().with_overrides(p["costs"])
    np_cache = bool(p.get("np_cache") or p.get("caching_mode"))
    iotlb = Iotlb(p["iotlb_entries"], p["iotlb_replacement"], p["walk_cache_entries"],
                  p["cache_non_present"] or np_cache, p["seed"])
    fmt = ARM_64_LPAE_S2 if p.get("stage") == 2 else ARM_64_LPAE_S1
    if p.get("stage") not in (None, 1, 2):
        raise einval(f"stage {p['stage']!r} must be 1 or 2")
    cfg = IoPgtableCfg(pgsize_bitmap=LPAE_4K, ias=ias, oas=p["oas"], fmt=fmt,
                       sync_on_unmap=strat.sync_on_unmap, split_blocks=p["split_blocks"])
    dom = IommuDomain(strat, type, api, IoPgtableArm(cfg), costs, iotlb, p["asid"],
                      p["trace_limit"])
    driver_params = {k: p[k] for k in strat.driver.params}
    if p["cmdq_entries"] is not None:
        driver_params["cmdq_entries"] = _positive(p["cmdq_entries"], "cmdq_entries")
    dom.driver = strat.driver(dom, driver_params)
    dom.ops = dom.driver.domain_ops()
    if type in ("DMA", "DMA_FQ"):
        dom.iovad = IovaDomain()
    if type == "DMA_FQ":
        if strat.supports_fq and not np_cache:
            dom.fq = FlushQueue(_positive(p["fq_size"], "fq_size"),
                                _positive(p["fq_timeout_ms"], "fq_timeout_ms") * 1_000_000)
        else:
            dom.type = "DMA"
            dom.notes.append(f"{strategy} ({strat.kernel}) has no lazy flush queue here: "
                             "DMA_FQ downgraded to strict DMA")
    return dom


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise einval(f"{what} must be a positive integer, not {value!r}")
    return value


def strategy_rows() -> list[dict[str, Any]]:
    """One dict per strategy: name, hardware, kernel, summary, source, lazy support."""
    return [{"name": s.name, "hardware": s.hardware, "kernel": s.kernel, "summary": s.summary,
             "source": s.source, "supports_lazy": s.supports_fq} for s in STRATEGIES.values()]



