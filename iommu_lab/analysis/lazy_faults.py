"""A trace's device faults, replayed strict and lazy: which would have been stale hits?

An ``iommu:io_page_fault`` line means the IOMMU had no translation for the IOVA, so the
device's access was stopped. Under lazy flushing (``DMA_FQ``) an unmapped IOVA waits in the
flush queue (``IOVA_FQ_SIZE`` 256 entries per CPU, ``IOVA_FQ_TIMEOUT`` 10 ms;
kernel-api-history §5.2) and its IOTLB entry is not invalidated until the next flush-all:
had the device's translation still been cached, the same access would have *succeeded* into
freed memory — a stale hit, which prints nothing. :func:`stale_under_lazy` replays the trace
under ``dma-strict`` and ``dma-lazy`` and reports, per fault, what each would have done.

One assumption, stated in every result: the device had used the IOVA before the unmap (its
translation was in the IOTLB). The trace cannot show it — successful DMA is not traced —
but a device that touches a buffer after the unmap was almost always using it before.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

import numpy as np
import pandas as pd

from ..errors import einval
from ..inputs.ops import Op
from ..inputs.trace import trace_to_ops
from .callers import CALLERS
from .session import Session

STRICT, LAZY = "dma-strict", "dma-lazy"
FQ_FLUSH = "fq_flush_iotlb"     # the trace record of a flush-queue flush (core/dma_iommu.py)
DEFAULT_STRATEGY = "smmuv3-v5.4"
ASSUMPTION = ("assumes the device had used each faulting IOVA before it was unmapped (its "
              "translation was cached); the trace cannot show successful DMA")


class Intervals:
    """Disjoint half-open ``[lo, hi)`` ranges: what the trace has mapped so far."""

    def __init__(self) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        """Mark ``[lo, hi)`` mapped (merging with neighbours it touches)."""
        i, j = bisect_left(self.hi, lo), bisect_right(self.lo, hi)
        if i < j:
            lo, hi = min(lo, self.lo[i]), max(hi, self.hi[j - 1])
        self.lo[i:j], self.hi[i:j] = [lo], [hi]

    def remove(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Unmark ``[lo, hi)``; returns the pieces of it that were *not* marked."""
        i, j = bisect_right(self.hi, lo), bisect_left(self.lo, hi)
        missing, at = [], lo
        keep_lo, keep_hi = [], []
        for a, b in zip(self.lo[i:j], self.hi[i:j], strict=True):
            if a > at:
                missing.append((at, a))
            at = max(at, b)
            if a < lo:
                keep_lo.append(a)
                keep_hi.append(lo)
            if b > hi:
                keep_lo.append(hi)
                keep_hi.append(b)
        if at < hi:
            missing.append((at, hi))
        self.lo[i:j], self.hi[i:j] = keep_lo, keep_hi
        return missing


def complete_trace(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus a ``map`` row, at the first timestamp, for every region the trace unmaps
    without having mapped it (mapped before the capture began), so a replay can unmap it.

    Added rows have ``line`` 0, ``paddr`` = ``iova`` (alignment kept) and ``synthetic``
    True; ``attrs["completed"]`` counts them. Lines a replay could not use are left alone.
    """
    for c in ("event", "iova", "size"):
        if c not in df.columns:
            raise einval(f"trace DataFrame lacks column {c!r}")
    events = df["event"].astype(str).tolist()
    iovas = pd.Series(df["iova"]).fillna(0).astype("uint64").tolist()
    sizes = pd.Series(df["size"]).fillna(0).astype("uint64").tolist()
    mapped, extra = Intervals(), []
    for e, a, n in zip(events, iovas, sizes, strict=True):
        if not n:
            continue
        if e == "map":
            mapped.add(a, a + n)
        elif e == "unmap":
            extra += mapped.remove(a, a + n)
    out = df.copy()
    out["synthetic"] = False
    if extra:
        t0 = pd.Series(df["timestamp"]).min() if "timestamp" in df.columns else np.nan
        add = pd.DataFrame({"event": ["map"] * len(extra), "timestamp": t0,
                            "iova": [lo for lo, _ in extra], "paddr": [lo for lo, _ in extra],
                            "size": [hi - lo for lo, hi in extra], "line": 0,
                            "cpu": -1, "pid": -1, "synthetic": True})
        add = add[[c for c in add.columns if c in out.columns]]
        add = add.astype({k: v for k, v in out.dtypes.items() if k in add.columns},
                         errors="ignore")
        out = pd.concat([add, out], ignore_index=True)
        if "event" in df.columns and isinstance(df["event"].dtype, pd.CategoricalDtype):
            out["event"] = pd.Categorical(out["event"].astype(str),
                                          categories=df["event"].cat.categories)
    out.attrs = {**df.attrs, "completed": len(extra)}
    return out


def _covering_unmap(rows: list[dict[str, Any]], fault: int) -> int | None:
    """Index of the last unmap before row ``fault`` whose range holds the fault's IOVA."""
    iova = rows[fault]["iova"]
    for i in range(fault - 1, -1, -1):
        r = rows[i]
        if r["event"] == "unmap" and r["iova"] <= iova < r["iova"] + r["size"]:
            return i
    return None


def stale_under_lazy(trace_df: pd.DataFrame, strategy: str = DEFAULT_STRATEGY,
                     params: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per ``io_page_fault``: what ``dma-strict`` and ``dma-lazy`` would have done.

    Columns: ``line``, ``time_s``, ``iova``, ``device``, ``driver``, ``unmap_line`` (the
    last unmap covering the IOVA, or NA), ``since_unmap_us``, ``strict`` and ``lazy`` (the
    modelled outcome: "fault" or "stale"), ``in_flush_queue`` (lazy: the IOVA was still
    queued at the fault), ``flush_due_us`` (lazy: time until the queue's timer flush), and
    ``why``. ``attrs["assumption"]`` states what the trace cannot show;
    ``attrs["lazy_flushes_s"]`` the trace times of the lazy replay's flush-queue flushes.
    """
    df = complete_trace(trace_df)
    keep = (df["event"].astype(str) == "io_page_fault") | (pd.Series(df["size"]).fillna(0) > 0)
    df = df[keep.to_numpy()].reset_index(drop=True)
    faulted = np.flatnonzero((df["event"].astype(str) == "io_page_fault").to_numpy())
    if len(faulted):                  # nothing after the last fault changes an outcome
        df = df.iloc[:faulted[-1] + 1]
    rows = _rows(df)
    ops = trace_to_ops(df, merge_runs=False)
    faults = [i for i, r in enumerate(rows) if r["event"] == "io_page_fault"]
    cover = {f: _covering_unmap(rows, f) for f in faults}
    warm = {u: f for f, u in cover.items() if u is not None}
    outcome = {name: _replay(ops, rows, warm, faults, strategy, name, params)
               for name in (STRICT, LAZY)}
    out = []
    for f in faults:
        r, u = rows[f], cover[f]
        lazy = outcome[LAZY][f]
        since = (r["timestamp"] - rows[u]["timestamp"]) * 1e6 if u is not None else np.nan
        out.append({"line": r["line"], "time_s": r["timestamp"], "iova": r["iova"],
                    "device": r.get("device", ""), "driver": r.get("driver", ""),
                    "unmap_line": rows[u]["line"] if u is not None else pd.NA,
                    "since_unmap_us": round(since, 1) if since == since else np.nan,
                    "strict": outcome[STRICT][f]["result"], "lazy": lazy["result"],
                    "in_flush_queue": lazy["queued"], "flush_due_us": lazy["due_us"],
                    "why": _why(u is not None, lazy)})
    res = pd.DataFrame(out, columns=["line", "time_s", "iova", "device", "driver",
                                     "unmap_line", "since_unmap_us", "strict", "lazy",
                                     "in_flush_queue", "flush_due_us", "why"])
    t0 = float(np.nanmin(df["timestamp"])) if "timestamp" in df.columns and len(df) else 0.0
    res.attrs.update(assumption=ASSUMPTION, strategy=strategy,
                     completed=df.attrs.get("completed", 0),
                     notes=outcome[LAZY].get("notes", ""),
                     lazy_flushes_s=[t0 + ns / 1e9 for ns in outcome[LAZY]["flushes_ns"]])
    return res


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    cols = {c: df[c] for c in ("event", "timestamp", "iova", "size", "line", "device", "driver")
            if c in df.columns}
    n = len(df)
    get = {
        "event": cols["event"].astype(str).tolist(),
        "timestamp": pd.Series(cols.get("timestamp", [np.nan] * n), dtype="float64").tolist(),
        "iova": pd.Series(cols["iova"]).fillna(0).astype("uint64").tolist(),
        "size": pd.Series(cols["size"]).fillna(0).astype("uint64").tolist(),
        "line": (pd.Series(cols["line"]).tolist() if "line" in cols
                 else list(range(1, n + 1))),
        "device": (cols["device"].astype(str).tolist() if "device" in cols else [""] * n),
        "driver": (cols["driver"].astype(str).tolist() if "driver" in cols else [""] * n),
    }
    return [{k: v[i] for k, v in get.items()} for i in range(n)]


def _replay(ops: list[Op], rows: list[dict[str, Any]], warm: dict[int, int], faults: list[int],
            strategy: str, caller: str, params: dict[str, Any] | None) -> dict[Any, Any]:
    """Step the ops under one caller; before each covering unmap the device reads the
    faulting IOVA (it was in use); at each fault record the outcome and the flush queue."""
    if caller not in CALLERS:
        raise einval(f"unknown caller {caller!r}")
    s = Session(strategy, caller, params, compact=False, lenient=True)
    dom = s.dom
    result: dict[Any, Any] = {}
    fault_set = set(faults)
    for i, op in enumerate(ops):
        if i in warm:
            s.do(Op("access", rows[warm[i]]["iova"], at_ns=op.at_ns))
        got = s.do(op)
        if i in fault_set:
            result[i] = {"result": got or "fault", **_queue_state(dom, rows[i]["iova"])}
    s.finish()
    result["notes"] = "; ".join(dom.notes)
    result["flushes_ns"] = [ev.t0 for ev in dom.trace.events if ev.op == FQ_FLUSH]
    return result


def _queue_state(dom: Any, iova: int) -> dict[str, Any]:
    """Is ``iova`` still in the flush queue, and when is the timer flush due (µs)?"""
    fq = getattr(dom, "fq", None)
    if fq is None:
        return {"queued": False, "due_us": np.nan}
    queued = any(e.iova <= iova < e.iova + e.size for e in fq.all_entries())
    due = fq.timer_deadline
    return {"queued": queued,
            "due_us": round((due - dom.clock.now) / 1000, 1) if due is not None else np.nan}


def _why(covered: bool, lazy: dict[str, Any]) -> str:
    if not covered:
        return "no unmap of this IOVA in the trace: a fault either way"
    if lazy["result"] == "stale":
        due = lazy["due_us"]
        when = f"; the timer flush was {due:,.0f} µs away" if due == due else ""
        return ("stale hit under lazy: the IOVA was still in the flush queue, its IOTLB "
                f"entry not yet invalidated{when}")
    if lazy["queued"]:
        return "fault under lazy too: queued, but the IOTLB no longer held the entry"
    return "fault under lazy too: a flush-queue flush had already invalidated it"
