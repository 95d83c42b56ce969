"""Counters as a table: requested work kept apart from work issued to the hardware."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..stats import COUNTERS

GROUPS: dict[str, tuple[str, ...]] = {
    "requested (API)": ("map_calls", "unmap_calls", "pages_mapped", "pages_unmapped",
                        "bytes_mapped", "bytes_unmapped", "sync_calls", "flush_all_calls",
                        "driver_callbacks"),
    "issued to hardware": ("inv_cmds", "inv_all_cmds", "sync_cmds", "doorbells", "mmio_reads",
                           "requests", "request_waits", "cmdq_full_stalls", "wasted_inv_cmds",
                           "needless_sync_cmds", "needless_inv_cmds", "walk_flushes"),
    "IOTLB and device": ("dma_accesses", "iotlb_hits", "iotlb_misses", "walk_cache_hits",
                         "faults", "stale_hits", "stale_faults", "over_invalidated",
                         "refill_misses", "max_stale_ns"),
    "DMA flush queue": ("fq_queued", "fq_flushes", "fq_timer_flushes"),
    "time (simulated ns)": ("cpu_ns", "iommu_ns", "device_ns"),
}

MEANING: dict[str, str] = {
    "map_calls": "iommu_map calls", "unmap_calls": "iommu_unmap / iommu_unmap_fast calls",
    "pages_mapped": "granules mapped", "pages_unmapped": "granules unmapped",
    "bytes_mapped": "bytes mapped", "bytes_unmapped": "bytes unmapped",
    "sync_calls": "iommu_iotlb_sync / iommu_tlb_sync calls",
    "flush_all_calls": "iommu_flush_iotlb_all / iommu_flush_tlb_all calls",
    "driver_callbacks": "->map / ->unmap driver callbacks",
    "inv_cmds": "invalidation commands (TLBI, PSI, INV_PAGES..., flush-all included)",
    "inv_all_cmds": "whole-domain / ASID invalidations among them",
    "sync_cmds": "completion commands (CMD_SYNC, wait descriptor, COMPLETION_WAIT, TLBSYNC)",
    "doorbells": "MMIO doorbell / register writes", "mmio_reads": "MMIO polling reads",
    "requests": "virtio-iommu requests that are not invalidations (MAP)",
    "request_waits": "virtio-iommu round trips: the guest waits for its requests (VM exit)",
    "cmdq_full_stalls": "times the CPU waited for a full queue",
    "wasted_inv_cmds": "invalidations a later whole-domain flush made moot (no DMA between)",
    "needless_sync_cmds": "syncs with nothing to complete (e.g. the sync after map)",
    "needless_inv_cmds": "map-side invalidations that found nothing cached to drop",
    "walk_flushes": "non-leaf (walk-cache) flushes when a table page was freed",
    "dma_accesses": "device reads/writes", "iotlb_hits": "served from the IOTLB",
    "iotlb_misses": "needed a table walk", "walk_cache_hits": "walks shortened by the walk cache",
    "faults": "device faults", "stale_hits": "DMA served by a STALE entry (freed memory!)",
    "stale_faults": "cached 'not present' hid a new mapping",
    "over_invalidated": "valid entries dropped by a too-wide invalidation",
    "refill_misses": "misses re-filling an over-invalidated entry",
    "max_stale_ns": "longest window a stale entry was used (ns)",
    "fq_queued": "IOVAs put on the flush queue", "fq_flushes": "flush-queue flushes",
    "fq_timer_flushes": "flushes by the 10 ms timer", "cpu_ns": "CPU time",
    "iommu_ns": "IOMMU busy time", "device_ns": "device walk time",
}

KEY_COUNTERS: tuple[str, ...] = (
    "map_calls", "unmap_calls", "pages_mapped", "pages_unmapped", "sync_calls",
    "flush_all_calls", "inv_cmds", "inv_all_cmds", "sync_cmds", "doorbells", "wasted_inv_cmds",
    "needless_sync_cmds", "cmdq_full_stalls", "iotlb_hits", "iotlb_misses", "stale_hits",
    "max_stale_ns", "cpu_ns", "iommu_ns",
)

_GROUP_OF = {name: g for g, names in GROUPS.items() for name in names}


def counters_table(stats: Mapping[str, int], names: Sequence[str] | str = "key",
                   before: Mapping[str, int] | None = None,
                   commands: bool = True) -> pd.DataFrame:
    """Counters indexed by name: group, value (and ``delta`` from ``before``), meaning.

    ``names``: ``"key"`` (the ones the stepper shows), ``"all"``, ``"nonzero"``, or a list.
    ``commands`` adds the per-name command counts (``cmd:CMD_SYNC``...).
    """
    rows = counters_rows(stats, names, before, commands)
    cols = ["counter", "group", "value"] + (["delta"] if before is not None else []) + ["meaning"]
    return pd.DataFrame(rows, columns=cols).set_index("counter")


def counters_rows(stats: Mapping[str, int], names: Sequence[str] | str = "key",
                  before: Mapping[str, int] | None = None,
                  commands: bool = True) -> list[dict[str, Any]]:
    """The rows of :func:`counters_table` as dicts (``counter`` first), without pandas."""
    if isinstance(names, str):
        if names == "key":
            chosen = list(KEY_COUNTERS)
        elif names == "all":
            chosen = list(COUNTERS)
        elif names == "nonzero":
            chosen = [n for n in COUNTERS if stats.get(n, 0)]
        else:
            raise ValueError(f"names must be 'key', 'all', 'nonzero' or a list, not {names!r}")
    else:
        chosen = list(names)
    if commands:
        chosen += sorted(k for k in stats if k.startswith("cmd:"))
    rows = []
    for name in chosen:
        row: dict[str, Any] = {"counter": name,
                               "group": "commands by name" if name.startswith("cmd:")
                               else _GROUP_OF.get(name, "other"),
                               "value": int(stats.get(name, 0))}
        if before is not None:
            row["delta"] = row["value"] - int(before.get(name, 0))
        row["meaning"] = (f"{name[4:]} commands issued" if name.startswith("cmd:")
                          else MEANING.get(name, ""))
        rows.append(row)
    return rows


def counters_diff(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Only the counters that changed: ``{name: after - before}``."""
    keys = list(COUNTERS) + sorted(k for k in set(before) | set(after) if k.startswith("cmd:"))
    out = {}
    for k in keys:
        d = int(after.get(k, 0)) - int(before.get(k, 0))
        if d:
            out[k] = d
    return out


def counters_styler(df: pd.DataFrame) -> Any:
    """Styler for the stepper: changed counters in bold, a stable table class for tests."""
    def bold(row: pd.Series) -> list[str]:
        changed = "delta" in row and row["delta"]
        return ["font-weight: bold; background-color: #fef9c3" if changed else ""] * len(row)

    return df.style.apply(bold, axis=1).set_table_attributes('class="iommu-counters-table"')
