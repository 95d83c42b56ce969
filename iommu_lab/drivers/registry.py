"""The strategy catalogue: each driver strategy pinned to a kernel version and its source.

``iommu_domain_alloc(name, type=..., ias=..., api=..., **params)`` builds a domain from it,
choosing everything that varies once, from tables: the strategy row, the core's rules for
its kernel (:data:`~iommu_lab.core.era.CORE_ERAS`), the domain type, and the API variant
(:data:`API_VARIANTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.dma_iommu import IOMMU_DMA_OPS, IOVA_FQ_SIZE, IOVA_FQ_TIMEOUT_MS, FlushQueue, IovaDomain
from ..core.domain import DOMAIN_TYPES, ApiVariant, IommuDomain, get_domain_type
from ..core.era import CoreRules, KernelVersion, core_rules
from ..core.iommu import KERNEL_API
from ..core.rfc2017 import RFC_2017_API
from ..errors import einval
from ..hw.costs import Costs
from ..hw.iotlb import Iotlb
from ..io_pgtable.arm import ARM_64_LPAE_S1, ARM_64_LPAE_S2, IoPgtableArm, IoPgtableCfg
from ..units import SZ_1G, SZ_2M, SZ_4K
from .amd_iommu import AMD_IOMMU_PGSIZES, AmdIommuFlushAll, AmdIommuRange
from .arm_smmu import ArmSmmuV2
from .arm_smmu_v3 import (
    ArmSmmuV3,
    ArmSmmuV3Early,
    ArmSmmuV3NonStrict,
    ArmSmmuV3Ril,
    ArmSmmuV3Strict,
)
from .base import Driver
from .intel_iommu import INTEL_IOMMU_PGSIZES, IntelIommu
from .rfc2017_ref import Rfc2017Reference
from .virtio_iommu import VIRTIO_IOMMU_PGSIZES, VirtioIommu

LPAE_4K = SZ_4K | SZ_2M | SZ_1G

API_VARIANTS: dict[str, ApiVariant] = {a.name: a for a in (KERNEL_API, RFC_2017_API)}


@dataclass(frozen=True)
class Strategy:
    """One driver strategy: how a driver implements the callbacks in one kernel era."""

    name: str
    hardware: str
    kernel: str
    summary: str
    source: str
    driver: type[Driver]
    pgsize_bitmap: int
    supports_fq: bool
    sync_on_unmap: bool = False
    user_defined: bool = False
    core: CoreRules = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "core", core_rules(self.kernel))  # EINVAL outside the eras

    @property
    def version(self) -> KernelVersion:
        """The kernel version, ordered."""
        return KernelVersion.parse(self.kernel)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy(name="smmuv3-v4.14", hardware="ARM SMMUv3", kernel="v4.14",
             summary="flush inside unmap: a TLBI per granule + CMD_SYNC per unmap piece",
             source="drivers/iommu/arm-smmu-v3.c, io-pgtable-arm.c @v4.14.5",
             driver=ArmSmmuV3Strict, pgsize_bitmap=LPAE_4K, supports_fq=False,
             sync_on_unmap=True),
    Strategy(name="smmuv3-v4.15", hardware="ARM SMMUv3", kernel="v4.15",
             summary="TLBIs issued early inside ->unmap, one CMD_SYNC in iotlb_sync "
                     "(Will's design)",
             source="drivers/iommu/arm-smmu-v3.c @v4.15 (kernel-api-history §3.4)",
             driver=ArmSmmuV3Early, pgsize_bitmap=LPAE_4K, supports_fq=False),
    Strategy(name="smmuv3-v4.20", hardware="ARM SMMUv3", kernel="v4.20",
             summary="early TLBIs in ->unmap, CMD_SYNC in iotlb_sync; non-strict (lazy) "
                     "domains; flush_iotlb_all = TLBI_NH_ASID + CMD_SYNC",
             source="drivers/iommu/arm-smmu-v3.c, io-pgtable-arm.c @v4.20.0",
             driver=ArmSmmuV3NonStrict, pgsize_bitmap=LPAE_4K, supports_fq=True),
    Strategy(name="smmuv3-v5.4", hardware="ARM SMMUv3", kernel="v5.4",
             summary="gather in ->unmap; TLBIs built at sync in batches of 64 + one CMD_SYNC",
             source="drivers/iommu/arm-smmu-v3.c @v5.4.59", driver=ArmSmmuV3,
             pgsize_bitmap=LPAE_4K, supports_fq=True),
    Strategy(name="smmuv3-ril", hardware="ARM SMMUv3.2 (RIL)", kernel="v5.10",
             summary="gather; range TLBIs (NUM/SCALE/TG/TTL) + one CMD_SYNC",
             source="drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c @v5.10.89",
             driver=ArmSmmuV3Ril, pgsize_bitmap=LPAE_4K, supports_fq=True),
    Strategy(name="smmuv2", hardware="ARM SMMUv2", kernel="v4.14",
             summary="TLBIVAL register write per granule + TLBSYNC/TLBSTATUS poll per "
                     "unmap piece",
             source="drivers/iommu/arm-smmu.c @v4.14.5", driver=ArmSmmuV2,
             pgsize_bitmap=LPAE_4K, supports_fq=False, sync_on_unmap=True),
    Strategy(name="vtd-psi", hardware="Intel VT-d (QI)", kernel="v5.10",
             summary="PSI with address mask per ->unmap (DSI above cap_max_amask_val) + wait",
             source="drivers/iommu/intel/iommu.c, dmar.c @v5.10.89", driver=IntelIommu,
             pgsize_bitmap=INTEL_IOMMU_PGSIZES, supports_fq=True),
    Strategy(name="amd-flush-all", hardware="AMD-Vi", kernel="v5.10",
             summary="whole-domain INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT at every sync",
             source="drivers/iommu/amd/iommu.c @v5.10.89", driver=AmdIommuFlushAll,
             pgsize_bitmap=AMD_IOMMU_PGSIZES, supports_fq=True),
    Strategy(name="amd-range", hardware="AMD-Vi", kernel="v5.15",
             summary="S-bit naturally aligned range + COMPLETION_WAIT (NpCache: aligned pieces)",
             source="drivers/iommu/amd/iommu.c @v5.15 (and v6.18.2)", driver=AmdIommuRange,
             pgsize_bitmap=AMD_IOMMU_PGSIZES, supports_fq=True),
    Strategy(name="virtio-iommu", hardware="virtio-iommu (paravirtual)", kernel="v5.15",
             summary="one UNMAP request per unmap call, kick + wait at sync; MAP requests "
                     "synchronous",
             source="drivers/iommu/virtio-iommu.c @v5.15", driver=VirtioIommu,
             pgsize_bitmap=VIRTIO_IOMMU_PGSIZES, supports_fq=False),
)}

# Reference drivers: models of a proposal's contract, never merged kernel code. Allocatable
# by name, kept out of STRATEGIES (the shipped drivers every table, picker and check covers).
REFERENCE_STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy(name="rfc2017-ref", hardware="ARM SMMUv3 (reference driver, not kernel code)",
             kernel="v4.14",
             summary="reference driver of the 2017 API: iotlb_range_add records ranges, "
                     "iotlb_sync invalidates only those (a TLBI per 4K) + CMD_SYNC",
             source="[PATCH 02/13] iommu: Introduce Interface for IOMMU TLB Flushing (LKML, "
                    "17 Aug 2017); add02cfdc9bc include/linux/iommu.h @v4.14",
             driver=Rfc2017Reference, pgsize_bitmap=LPAE_4K, supports_fq=False),
)}

COMMON_PARAMS: dict[str, Any] = {
    "iotlb_entries": 64, "iotlb_replacement": "lru", "walk_cache_entries": 16,
    "cache_non_present": False, "seed": 0, "cmdq_entries": None, "costs": None,
    "fq_size": IOVA_FQ_SIZE, "fq_timeout_ms": IOVA_FQ_TIMEOUT_MS, "split_blocks": True,
    "oas": 48, "asid": 1, "trace_limit": 200_000, "compact": True, "memo": True, "cpus": 1,
    "ats": False, "atc_entries": 64, "iommus": 1,
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; EINVAL naming the known ones otherwise."""
    if name in REFERENCE_STRATEGIES and name not in STRATEGIES:
        return REFERENCE_STRATEGIES[name]
    if name not in STRATEGIES:
        raise einval(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def add_strategy(row: Strategy) -> None:
    """Add (or replace) a row: user-defined strategies, after :mod:`.user` checked them."""
    STRATEGIES[row.name] = row


def remove_strategy(name: str) -> Strategy:
    """Remove a row (user-defined strategies; :mod:`.user` refuses shipped names)."""
    return STRATEGIES.pop(name)


def get_api(name: str) -> ApiVariant:
    """The API variant called ``name``; EINVAL naming the known ones otherwise."""
    if name not in API_VARIANTS:
        raise einval(f"unknown api {name!r}; expected one of {tuple(API_VARIANTS)}")
    return API_VARIANTS[name]


def known_params(strategy: Strategy) -> dict[str, Any]:
    """Every parameter ``iommu_domain_alloc`` accepts for ``strategy``, with defaults."""
    return {**COMMON_PARAMS, **strategy.driver.params}


def iommu_domain_alloc(strategy: str, type: str = "UNMANAGED", ias: int = 48,
                       api: str = "kernel", **params: Any) -> IommuDomain:
    """Allocate a domain driven by ``strategy`` (see :func:`strategies`)."""
    strat = get_strategy(strategy)
    dtype, variant = get_domain_type(type), get_api(api)
    p = _params(strat, params)
    if isinstance(ias, bool) or not isinstance(ias, int):
        raise einval(f"ias must be an integer number of bits, not {ias!r}")
    costs = Costs().with_overrides(p["costs"])
    iotlbs, atcs = _caches(p)
    if p.get("stage") not in (None, 1, 2):
        raise einval(f"stage {p['stage']!r} must be 1 or 2")
    fmt = ARM_64_LPAE_S2 if p.get("stage") == 2 else ARM_64_LPAE_S1
    cfg = IoPgtableCfg(pgsize_bitmap=LPAE_4K, ias=ias, oas=p["oas"], fmt=fmt,
                       sync_on_unmap=strat.sync_on_unmap, split_blocks=p["split_blocks"])
    dom = IommuDomain(strat, dtype, variant, strat.core, IoPgtableArm(cfg), costs, iotlbs,
                      p["asid"], p["trace_limit"], p["cpus"], atcs)
    driver_params = {k: p[k] for k in strat.driver.params}
    if p["cmdq_entries"] is not None:
        driver_params["cmdq_entries"] = _positive(p["cmdq_entries"], "cmdq_entries")
    # a user's driver may keep state of its own (a counter, say) that no compact-run
    # signature or memo key sees: its ops are stepped, every one
    dom.compact = bool(p["compact"]) and not strat.user_defined
    dom.memo = bool(p["memo"]) and not strat.user_defined
    dom.driver = strat.driver(dom, driver_params)
    dom.ops = variant.ops(dom.driver)
    if dtype.dma_api:
        _attach_dma(dom, strat, p)
    return dom


def _params(strat: Strategy, params: dict[str, Any]) -> dict[str, Any]:
    allowed = known_params(strat)
    unknown = set(params) - set(allowed)
    if unknown:
        raise einval(f"unknown parameter(s) {', '.join(sorted(unknown))} for {strat.name}; "
                     f"known: {', '.join(sorted(allowed))}")
    return {**allowed, **params}


def _caches(p: dict[str, Any]) -> tuple[list[Iotlb], list[Iotlb | None]]:
    """An IOTLB per IOMMU the domain spans; with ``ats`` a device TLB per endpoint (one
    endpoint behind each IOMMU, seeded like the IOTLB)."""
    np_cache = bool(p.get("np_cache") or p.get("caching_mode"))  # caches non-present PTEs
    n = _positive(p["iommus"], "iommus")
    if not isinstance(p["ats"], bool):
        raise einval(f"ats must be True or False, not {p['ats']!r}")
    iotlbs = [Iotlb(p["iotlb_entries"], p["iotlb_replacement"], p["walk_cache_entries"],
                    p["cache_non_present"] or np_cache, p["seed"] + i) for i in range(n)]
    atcs: list[Iotlb | None] = [
        Iotlb(_positive(p["atc_entries"], "atc_entries"), "lru", 0, False, p["seed"] + i)
        if p["ats"] else None for i in range(n)]
    return iotlbs, atcs


def _attach_dma(dom: IommuDomain, strat: Strategy, p: dict[str, Any]) -> None:
    """The DMA layer: an IOVA allocator, DMA ops, and on DMA_FQ the flush queue."""
    dom.iovad = IovaDomain()
    dom.dma_ops = dom.driver.dma_ops() or IOMMU_DMA_OPS
    if not dom.dtype.flush_queue:
        return
    why = (None if strat.supports_fq else "no lazy flush queue in this kernel")
    why = why or dom.driver.forces_strict()
    if why is None:
        cpus = dom.cpus
        dom.fq = FlushQueue(_positive(p["fq_size"], "fq_size"),
                            _positive(p["fq_timeout_ms"], "fq_timeout_ms") * 1_000_000,
                            ncpus=cpus.n, current=lambda: cpus.current)
        return
    dom.dtype = DOMAIN_TYPES["DMA"]
    dom.notes.append(f"{strat.name} ({strat.kernel}): {why}: DMA_FQ downgraded to strict DMA")


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise einval(f"{what} must be a positive integer, not {value!r}")
    return value


def strategy_rows() -> list[dict[str, Any]]:
    """One dict per strategy: name, hardware, kernel, summary, source, lazy support, and
    what the never-merged 2017 API means for it (kernel ops, or a reconstruction)."""
    return [{"name": s.name, "hardware": s.hardware, "kernel": s.kernel, "summary": s.summary,
             "source": s.source, "supports_lazy": s.supports_fq,
             "api_2017": _api_2017(s), "user_defined": s.user_defined}
            for s in STRATEGIES.values()]


def _api_2017(s: Strategy) -> str:
    """How ``api="rfc-2017"`` treats this driver (every such domain is hypothetical)."""
    if s.driver.rfc2017_flush_all is not None:
        return ("reconstruction, not kernel code: flush_tlb_all drops the whole context "
                "(the merged op differs)")
    return "hypothetical: the driver's merged ops behind the 2017 names"
