"""Views for lesson 06: what one unmap (or map) issues on each kind of IOMMU.

Pure functions from :class:`~iommu_lab.analysis.lessons.UnmapProbe` /
:class:`~iommu_lab.analysis.lessons.MapProbe` and ``compare()``-style rows to DataFrames:
addresses in hex, sizes as ``4K``/``256K``, times in µs (simulated, from the cost model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..analysis.lessons import MapProbe, UnmapProbe
from ..hw.commands import INV_ALL, REQUEST, SYNC
from ._fmt import hx, size_label
from .gather import us

PROBE_COUNTERS = ("inv_cmds", "inv_all_cmds", "sync_cmds", "atc_inv_cmds", "doorbells",
                  "mmio_reads", "request_waits", "over_invalidated")


def commands_table(probe: UnmapProbe | MapProbe) -> pd.DataFrame:
    """Every command the probed call issued, in queue order per IOMMU, with the address
    range an invalidation covers (``whole domain`` for DSI / ASID / all-pages)."""
    out = []
    for c in probe.commands:
        cov = c["covers"]
        if cov is not None:
            covers = f"{hx(cov[0])}..{hx(cov[1] - 1)} ({size_label(cov[1] - cov[0])})"
        else:
            covers = {INV_ALL: "whole domain", SYNC: "(completion)",
                      REQUEST: "(host request)"}.get(c["kind"], "")
        out.append({"IOMMU": c["iommu"], "command": c["command"], "fields": c["fields"],
                    "covers": covers})
    return pd.DataFrame(out, columns=["IOMMU", "command", "fields", "covers"])


def probe_summary(probes: Sequence[UnmapProbe],
                  counters: Sequence[str] = PROBE_COUNTERS) -> pd.DataFrame:
    """One row per probe: the unmap's counts, its time in µs, and how the device's reads of
    the unmapped pages came out afterwards (``fault`` is right; ``stale`` is freed memory)."""
    out = []
    for p in probes:
        row: dict[str, Any] = {"strategy": p.strategy,
                               "unmap": f"{hx(p.iova)} +{size_label(p.size)}"}
        row.update({c: p.counters.get(c, 0) for c in counters})
        row["time (µs)"] = us(p.time_ns)
        row["device reads after"] = ", ".join(f"{n}× {r}" for r, n in
                                              pd.Series(p.after).value_counts().items())
        out.append(row)
    return pd.DataFrame(out)


def after_table(probe: UnmapProbe) -> pd.DataFrame:
    """What the device gets from each unmapped page after the unmap returned."""
    return pd.DataFrame({"iova": [hx(probe.iova + i * 0x1000) for i in range(len(probe.after))],
                         "device read": probe.after})


def map_table(probes: Sequence[MapProbe]) -> pd.DataFrame:
    """Sync on map: what the device got before and after ``iommu_map``, and what the map
    itself issued (invalidations on map, and those that found nothing to drop)."""
    return pd.DataFrame([{"strategy": p.strategy, "device before map": p.before,
                          "device after map": p.after,
                          "invalidations on map": p.counters.get("inv_cmds", 0),
                          "needless (nothing cached)": p.counters.get("needless_inv_cmds", 0),
                          "syncs / waits": p.counters.get("sync_cmds", 0)
                          + p.counters.get("request_waits", 0),
                          "stale faults": p.counters.get("stale_faults", 0)}
                         for p in probes])


def caches_table(dom: Any) -> pd.DataFrame:
    """What the first IOMMU's IOTLB and, with ATS, the endpoint's device TLB (ATC) hold
    now: one row per entry with the cache it sits in and whether it is stale (the page
    table no longer maps it there)."""
    rows = [{"cache": v.cache, "iova": hx(v.entry.iova), "pgsize": size_label(v.entry.pgsize),
             "paddr": hx(v.entry.paddr), "state": "STALE" if v.stale else "valid",
             "page table now": hx(v.page_table_now) if v.page_table_now else "unmapped"}
            for v in dom.iotlb_entries()]
    return pd.DataFrame(rows, columns=["cache", "iova", "pgsize", "paddr", "state",
                                       "page table now"])


def per_iommu_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows that carry ``per_iommu`` (``compare()`` rows, lesson phases): one line per
    (strategy, IOMMU) with that IOMMU's commands, invalidations, syncs, ATC invalidations,
    doorbells and completion waits."""
    out = []
    for r in rows:
        for i, t in enumerate(r["per_iommu"]):
            line: dict[str, Any] = {"strategy": r["strategy"]}
            if "phase" in r:
                line["phase"] = r["phase"]
            line["IOMMU"] = i
            line.update(t)
            out.append(line)
    return pd.DataFrame(out)


__all__ = ["after_table", "caches_table", "commands_table", "map_table", "per_iommu_table", "probe_summary"]
