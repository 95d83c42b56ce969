"""iommu_lab: a teaching simulator of how Linux invalidates IOMMU TLBs.

Public names mirror the kernel (DESIGN.md §9). Layers, bottom up: ``hw`` (hardware model)
→ ``io_pgtable.arm``, ``core``, ``drivers`` (kernel mirror) → ``inputs`` (``ops``,
``workloads``, ``csv``, ``trace``: source, parse, record, frame, to_ops) → ``analysis`` →
``views`` → ``ui``.
"""

from __future__ import annotations

from typing import Any

from . import native  # noqa: F401  first: it loads the hot modules' fresh builds (native.py)
from .analysis.check import check_strategy
from .analysis.race import race
from .analysis.replay import replay
from .core.dma_iommu import iommu_dma_map, iommu_dma_unmap
from .core.domain import IommuDomain
from .core.gather import IommuIotlbGather, iommu_iotlb_gather_init
from .core.iommu import (
    iommu_flush_iotlb_all,
    iommu_iotlb_sync,
    iommu_iova_to_phys,
    iommu_map,
    iommu_map_sg,
    iommu_pgsize,
    iommu_unmap,
    iommu_unmap_fast,
)
from .core.rfc2017 import (
    iommu_flush_tlb_all,
    iommu_map_sync,
    iommu_tlb_range_add,
    iommu_tlb_sync,
    iommu_unmap_sync,
)
from .drivers.registry import STRATEGIES, iommu_domain_alloc
from .drivers.user import driver_class, gather_span, register_strategy, unregister_strategy
from .errors import EEXIST, EINVAL, ENOENT, ENOSPC, ERANGE, IommuError
from .hw.costs import Costs
from .inputs import workloads
from .inputs.ops import Op
from .inputs.trace.frame import read_trace
from .prot import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
)

__version__ = "0.1.0"


def dma_access(dom: IommuDomain, iova: int, write: bool = False) -> str:
    """The device reads (or writes) ``iova``: ``"hit"`` | ``"walk"`` | ``"fault"`` | ``"stale"``."""
    from .core.dma_iommu import fq_check_timer

    fq_check_timer(dom)
    return dom.dma_access(int(iova), bool(write))


def compare(workload: Any, strategies: Any = None, callers: Any = None, params: Any = None,
            executor: Any = None, progress: bool = False) -> Any:
    """Run a workload under every (strategy, caller): one DataFrame row each (DESIGN §9)."""
    from .analysis.compare import compare as _compare

    return _compare(workload, strategies, callers, params, executor, progress)


def sweep(workload: Any, strategies: Any = None, callers: Any = None, grid: Any = None,
          executor: Any = None, **kwargs: Any) -> Any:
    """``compare()`` at every point of a parameter grid: one row per (strategy, caller,
    grid point); ``executor`` may be a dask.distributed Client's executor (DESIGN §9)."""
    from .analysis.sweep import sweep as _sweep

    return _sweep(workload, strategies, callers, grid, executor, **kwargs)


def strategies() -> Any:
    """Every driver strategy as a DataFrame (name, hardware, kernel, summary, source...)."""
    import pandas as pd

    from .drivers.registry import strategy_rows

    return pd.DataFrame(strategy_rows())


__all__ = [
    "EEXIST", "EINVAL", "ENOENT", "ENOSPC", "ERANGE", "IOMMU_CACHE", "IOMMU_MMIO",
    "IOMMU_NOEXEC", "IOMMU_PRIV", "IOMMU_READ", "IOMMU_WRITE", "STRATEGIES", "Costs",
    "IommuDomain", "IommuError", "IommuIotlbGather", "Op", "dma_access", "iommu_dma_map",
    "iommu_dma_unmap", "iommu_domain_alloc", "iommu_flush_iotlb_all", "iommu_flush_tlb_all",
    "iommu_iotlb_gather_init", "iommu_iotlb_sync", "iommu_iova_to_phys", "iommu_map",
    "iommu_map_sg", "iommu_map_sync", "iommu_pgsize", "iommu_tlb_range_add", "iommu_tlb_sync",
    "iommu_unmap", "iommu_unmap_fast", "iommu_unmap_sync", "read_trace", "replay",
    "strategies", "compare", "sweep", "workloads", "register_strategy", "unregister_strategy",
    "driver_class", "gather_span", "check_strategy", "race",
]
