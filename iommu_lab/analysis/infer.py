"""Which caller pattern made this trace? Evidence from map/unmap shapes, since tracepoints
record no syncs (kernel-api-history §6.2).

``iommu:map`` / ``iommu:unmap`` show *calls*, never invalidations, so the caller pattern
cannot be read off a trace; it can be inferred from what each caller does to IOVAs:

- **Who chose the IOVA.** The DMA API's allocator (drivers/iommu/dma-iommu.c
  ``iommu_dma_alloc_iova`` -> iova.c ``alloc_iova_fast(..., size_aligned=true)``) hands out
  IOVAs aligned to their size rounded up to a power of two, top-down below the DMA limit
  (below 4 GiB first for PCI devices). VFIO's user (QEMU) maps guest-physical addresses:
  from 0 upwards, chunk by chunk, in ascending order, unmapped in ascending sweeps
  (vfio_iommu_type1.c ``vfio_unmap_unpin``).
- **When a freed IOVA comes back.** Strict DMA frees the IOVA at unmap into a per-CPU
  cache (iova.c ``__iova_rcache_insert`` -> ``iova_magazine_push``, ``__iova_rcache_get`` ->
  ``iova_magazine_pop``, which takes the last suitable pfn pushed; sizes up to
  ``IOVA_RANGE_CACHE_MAX_SIZE`` = 32 pages), so the next map of that size
  class on that CPU gets it straight back. Lazy DMA queues it (``queue_iova``) until a
  flush-queue flush (256-entry queue full, or the 10 ms timer), so it mostly does not.
- **The kernel era.** The format generation bounds the kernel version; VFIO type1 batched
  its unmaps (``unmap_unpin_fast`` + one sync per 512 regions) by v4.20 (L4.20).

Each rule prints its numbers; :func:`infer_callers` ranks every caller of :data:`SIGNATURES`
with the evidence for and against it. A never-merged caller (the 2017 RFC) is kept as a
what-if: no real kernel can have made the trace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..core.era import KernelVersion
from ..errors import einval
from .callers import CALLERS

V = KernelVersion.parse
OWNER_ALLOCATOR, OWNER_USER = "allocator", "user"
REUSE_IMMEDIATE, REUSE_AFTER_FLUSH, REUSE_NONE = "immediate", "after flush", "chosen by user"
RCACHE_MAX = 32 * 4096          # IOVA_RANGE_CACHE_MAX_SIZE 6 -> up to 2^5 pages (iova.h)
REUSE_WINDOW_NS = 1_000_000     # "at once": the next same-class map within 1 ms
FQ_TIMEOUT_NS = 10_000_000      # IOVA_FQ_TIMEOUT, include/linux/iova.h (v4.14..v5.15)
LOW_IOVA = 16 << 20             # guest RAM starts at guest-physical 0
VMM_TASKS = re.compile(r"qemu|kvm|vfio|crosvm|cloud-hyperv|firecracker|vhost|libvirt",
                       re.IGNORECASE)

GENERATION_KERNELS = {"v3.16": (V("v3.16"), V("v3.19")), "v4.0": (V("v4.0"), V("v5.16")),
                      "v5.17": (V("v5.17"), None)}
"""Kernel versions each trace format generation was printed by (kernel-api-history §6.1;
the range form came with commit 94aedac49d92, merged for v5.17)."""


@dataclass(frozen=True)
class Signature:
    """What a caller pattern's trace looks like, and where the kernel does it.

    ``owner``: who picks the IOVAs; ``reuse``: when a freed IOVA can come back; ``strict``:
    invalidation is complete when (or within µs of when) the unmap returns; ``kernels``:
    first and last version that used the pattern (None: open-ended)."""

    owner: str
    reuse: str
    strict: bool
    kernels: tuple[KernelVersion | None, KernelVersion | None]
    where: str


SIGNATURES: dict[str, Signature] = {
    "unmap-each": Signature(OWNER_USER, REUSE_NONE, True, (None, V("v4.19")),
                            "VFIO type1 up to v4.19: iommu_unmap per chunk (L4.14 "
                            "vfio_iommu_type1.c vfio_unmap_unpin)"),
    "unmap-fast-batch": Signature(OWNER_USER, REUSE_NONE, True, (V("v4.15"), None),
                                  "VFIO type1 by v4.20: unmap_unpin_fast, one sync per 512 "
                                  "regions (L4.20, L5.4 vfio_iommu_type1.c)"),
    "unmap-then-flush-all": Signature(OWNER_USER, REUSE_NONE, False, (None, None),
                                      "Joerg Roedel's 2017 KVM teardown (never merged)"),
    "rfc-2017-wrappers": Signature(OWNER_USER, REUSE_NONE, True, (None, None),
                                   "the 2017 RFC's iommu_map_sync/iommu_unmap_sync (never "
                                   "merged)"),
    "dma-strict": Signature(OWNER_ALLOCATOR, REUSE_IMMEDIATE, True, (None, None),
                            "DMA API, strict: IOVA freed at unmap (dma-iommu.c "
                            "__iommu_dma_unmap, iova.c rcache)"),
    "dma-lazy": Signature(OWNER_ALLOCATOR, REUSE_AFTER_FLUSH, False, (None, None),
                          "DMA API, lazy: IOVA queued until a flush-queue flush (dma-iommu.c "
                          "queue_iova; iova.c up to v5.16)"),
}
"""The trace signature of each caller pattern in ``CALLERS`` that a kernel trace can show."""


@dataclass(frozen=True)
class Count:
    """``k`` of ``n`` events have a property."""

    k: int
    n: int

    @property
    def frac(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def __str__(self) -> str:
        return f"{self.k:,} of {self.n:,}"


@dataclass(frozen=True)
class TraceFeatures:
    """The measurable facts :func:`infer_callers` reasons from (see the module docstring)."""

    maps: int
    unmaps: int
    faults: int
    timed: bool
    generations: tuple[str, ...]
    aligned: Count          # map/unmap > 4 KiB at an IOVA aligned to its power-of-two size
    near_limit: Count       # map/unmap IOVAs within 1 GiB below a 2^n (n >= 32) DMA limit
    min_iova: int | None
    ascending: Count        # consecutive maps (or unmaps) at rising IOVAs
    vmm_tasks: Count        # map/unmap issued by a VMM task (qemu, kvm, crosvm, ...)
    reuse: Count            # freed rcache-size IOVAs handed out again at once (same CPU)
    faults_after_unmap: Count   # faults <= 10 ms after an unmap covering their IOVA
    longest_unmap_run: int

    def table(self) -> pd.DataFrame:
        """One row per feature, with what it suggests."""
        rows = [
            ("map / unmap / io_page_fault events", f"{self.maps:,} / {self.unmaps:,} / "
             f"{self.faults:,}", ""),
            ("format generation(s)", ", ".join(self.generations) or "none", "bounds the kernel"),
            ("timestamps", "yes" if self.timed else "no", "needed for reuse timing"),
            ("IOVA aligned to power-of-two size (> 4 KiB)", str(self.aligned),
             "DMA API allocator if nearly all"),
            ("IOVA within 1 GiB below a 2^n limit", str(self.near_limit),
             "DMA API top-down allocation"),
            ("lowest IOVA", "-" if self.min_iova is None else f"{self.min_iova:#x}",
             "guest-physical addresses start at 0"),
            ("consecutive maps/unmaps at rising IOVAs", str(self.ascending),
             "VFIO sweeps upwards; the allocator goes down"),
            ("issued by a VMM task", str(self.vmm_tasks), "qemu/kvm/crosvm: VFIO"),
            ("freed IOVA handed out again within 1 ms", str(self.reuse),
             "strict: nearly all; lazy: nearly none"),
            ("faults <= 10 ms after their IOVA was unmapped", str(self.faults_after_unmap),
             "device still using a freed buffer"),
            ("longest run of unmaps without a map", f"{self.longest_unmap_run:,}",
             "teardown"),
        ]
        return pd.DataFrame(rows, columns=["feature", "value", "suggests"])


# ---- features --------------------------------------------------------------------------

def _column(df: pd.DataFrame, name: str, default: Any) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([default] * len(df), index=df.index)


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def trace_features(df: pd.DataFrame) -> TraceFeatures:
    """Measure a :func:`~iommu_lab.inputs.trace.read_trace` DataFrame (or any frame with
    ``event``, ``iova``, ``size``; ``timestamp``, ``cpu``, ``task``, ``generation`` optional)."""
    missing = [c for c in ("event", "iova", "size") if c not in df.columns]
    if missing:
        raise einval(f"trace DataFrame lacks column(s) {', '.join(missing)}")
    event = df["event"].astype(str).to_numpy()
    iova = pd.Series(df["iova"]).fillna(0).astype("uint64").tolist()
    size = pd.Series(df["size"]).fillna(0).astype("uint64").tolist()
    ts = pd.Series(_column(df, "timestamp", np.nan), dtype="float64").to_numpy()
    cpu = pd.Series(_column(df, "cpu", -1)).fillna(-1).astype(int).tolist()
    task = _column(df, "task", "").astype(str).tolist()
    gens = tuple(sorted({str(g) for g in _column(df, "generation", None).dropna()
                         if str(g) in GENERATION_KERNELS}))
    mu = [i for i, e in enumerate(event) if e in ("map", "unmap")]
    big = [i for i in mu if size[i] > 4096]
    aligned = Count(sum(1 for i in big if iova[i] % _pow2_ceil(size[i]) == 0), len(big))
    near = Count(sum(1 for i in mu if _near_limit(iova[i])), len(mu))
    rising = _rising(event, iova)
    vmm = Count(sum(1 for i in mu if VMM_TASKS.search(task[i])), len(mu))
    timed = bool(np.isfinite(ts).any())
    reuse = _reuse(event, iova, size, ts, cpu) if timed else Count(0, 0)
    faults = _faults_after_unmap(event, iova, size, ts) if timed else Count(0, 0)
    return TraceFeatures(
        maps=int(sum(e == "map" for e in event)), unmaps=int(sum(e == "unmap" for e in event)),
        faults=int(sum(e == "io_page_fault" for e in event)), timed=timed, generations=gens,
        aligned=aligned, near_limit=near, min_iova=min((iova[i] for i in mu), default=None),
        ascending=rising, vmm_tasks=vmm, reuse=reuse, faults_after_unmap=faults,
        longest_unmap_run=_longest_run(event))


def _near_limit(iova: int) -> bool:
    """Within 1 GiB below the next power of two, itself >= 4 GiB (a DMA mask's top)."""
    top = 1 << iova.bit_length()
    return top >= 1 << 32 and top - iova <= 1 << 30


def _rising(event: Any, iova: list[int]) -> Count:
    """Consecutive maps (and consecutive unmaps) whose IOVA rises."""
    k = n = 0
    last: dict[str, int] = {}
    for e, a in zip(event, iova, strict=True):
        if e not in ("map", "unmap"):
            continue
        if e in last:
            n += 1
            k += a > last[e]
        last[e] = a
    return Count(k, n)


def _longest_run(event: Any) -> int:
    best = run = 0
    for e in event:
        if e == "unmap":
            run += 1
            best = max(best, run)
        elif e == "map":
            run = 0
    return best


def _reuse(event: Any, iova: list[int], size: list[int], ts: np.ndarray,
           cpu: list[int]) -> Count:
    """Reuse chances and how many were taken.

    A chance: an unmap of an rcache-size IOVA on a CPU, followed within 1 ms by a map of the
    same size class on that CPU with no other unmap of that class between. Taken: the map
    got the freed IOVA back (what iova.c's LIFO magazines do under strict unmapping)."""
    pending: dict[tuple[int, int], tuple[int, float]] = {}   # (cpu, class) -> (iova, t)
    k = n = 0
    for i, e in enumerate(event):
        if e not in ("map", "unmap") or not size[i] or not np.isfinite(ts[i]):
            continue
        cls = _pow2_ceil(size[i])
        if cls > RCACHE_MAX:
            continue
        key = (cpu[i], cls)
        if e == "unmap":
            pending[key] = (iova[i], ts[i])
            continue
        freed = pending.pop(key, None)
        if freed is not None and (ts[i] - freed[1]) * 1e9 <= REUSE_WINDOW_NS:
            n += 1
            k += iova[i] == freed[0]
    return Count(k, n)


def _faults_after_unmap(event: Any, iova: list[int], size: list[int],
                        ts: np.ndarray) -> Count:
    """Faults whose IOVA an unmap covered within the 10 ms before."""
    recent: list[tuple[int, int, float]] = []
    k = n = 0
    for i, e in enumerate(event):
        if e == "unmap" and np.isfinite(ts[i]):
            recent.append((iova[i], iova[i] + size[i], ts[i]))
        elif e == "io_page_fault":
            n += 1
            k += any(lo <= iova[i] < hi and 0 <= (ts[i] - t) * 1e9 <= FQ_TIMEOUT_NS
                     for lo, hi, t in recent[-4096:])
    return Count(k, n)


# ---- rules: features -> points for each signature ------------------------------------------

Rule = Callable[[TraceFeatures], list[tuple[Callable[[Signature], int], str]]]


def _by_owner(points: int, owner: str) -> Callable[[Signature], int]:
    """+points for callers whose IOVAs come from ``owner``, -points for the other owner."""
    return lambda sig: points if sig.owner == owner else -points


def _rule_alignment(f: TraceFeatures) -> list[tuple[Callable[[Signature], int], str]]:
    a = f.aligned
    if a.n < 3:
        return []
    if a.frac >= 0.9:
        return [(_by_owner(2, OWNER_ALLOCATOR), f"{a} map/unmap IOVAs (> 4 KiB) aligned to "
                 "their power-of-two size: the DMA API allocator (iova.c, size_aligned)")]
    if a.frac <= 0.6:
        return [(_by_owner(2, OWNER_USER), f"{a} map/unmap IOVAs (> 4 KiB) aligned to "
                 "their power-of-two size: not the DMA API allocator")]
    return []


def _rule_placement(f: TraceFeatures) -> list[tuple[Callable[[Signature], int], str]]:
    out = []
    if f.near_limit.n >= 3 and f.near_limit.frac >= 0.8 and (f.min_iova or 0) >= LOW_IOVA:
        out.append((_by_owner(1, OWNER_ALLOCATOR), f"{f.near_limit} IOVAs sit just below a "
                    "DMA limit (2^32 or above): top-down allocation (dma-iommu.c)"))
    if f.min_iova is not None and f.min_iova < LOW_IOVA:
        out.append((_by_owner(1, OWNER_USER), f"IOVAs start at {f.min_iova:#x}: "
                    "guest-physical addresses (the DMA API never hands out these)"))
    r = f.ascending
    if r.n >= 4 and r.frac >= 0.8:
        out.append((_by_owner(1, OWNER_USER), f"{r} consecutive maps/unmaps at rising IOVAs: "
                    "ascending sweeps (QEMU maps guest RAM upwards, vfio_unmap_unpin)"))
    elif r.n >= 4 and r.frac <= 0.2:
        out.append((_by_owner(1, OWNER_ALLOCATOR), f"{r} consecutive maps/unmaps at "
                    "rising IOVAs: the allocator works top-down"))
    return out


def _rule_tasks(f: TraceFeatures) -> list[tuple[Callable[[Signature], int], str]]:
    v = f.vmm_tasks
    if v.n and v.frac >= 0.5:
        return [(_by_owner(2, OWNER_USER), f"{v} map/unmap calls come from a VMM task "
                 "(qemu, kvm, crosvm...): VFIO")]
    return []


def _rule_reuse(f: TraceFeatures) -> list[tuple[Callable[[Signature], int], str]]:
    r = f.reuse
    if r.n < 5:
        return []

    def pts(good: str) -> Callable[[Signature], int]:
        return lambda sig: 3 if sig.reuse == good else (
            -3 if sig.reuse in (REUSE_IMMEDIATE, REUSE_AFTER_FLUSH) else 0)
    if r.frac >= 0.5:
        return [(pts(REUSE_IMMEDIATE), f"{r} freed IOVAs were handed out again within 1 ms on "
                 "the same CPU: freed at unmap (strict; iova.c LIFO rcache)")]
    if r.frac <= 0.1:
        return [(pts(REUSE_AFTER_FLUSH), f"{r} freed IOVAs came back within 1 ms although "
                 "maps of their size followed: held back until a flush (lazy flush queue)")]
    return []


def _rule_era(f: TraceFeatures) -> list[tuple[Callable[[Signature], int], str]]:
    out = []
    for g in f.generations:
        lo, hi = GENERATION_KERNELS[g]

        def pts(sig: Signature, lo: KernelVersion = lo,
                hi: KernelVersion | None = hi) -> int:
            first, last = sig.kernels
            too_new = first is not None and hi is not None and first > hi
            too_old = last is not None and last < lo
            return -3 if too_new or too_old else 0
        span = f"{lo}..{hi}" if hi else f"{lo} or later"
        out.append((pts, f"the {g} trace format means kernel {span}"))
    return out


def _rule_faults(f: TraceFeatures) -> list[tuple[Callable[[Signature], int], str]]:
    fa = f.faults_after_unmap
    if not fa.k:
        return []
    return [(lambda sig: 1 if sig.strict else 0, f"{fa} faults came <= 10 ms after their IOVA "
             "was unmapped: the IOTLB no longer translated it, as under strict invalidation "
             "(lazy might have served it stale)")]


RULES: tuple[Rule, ...] = (_rule_alignment, _rule_placement, _rule_tasks, _rule_reuse,
                           _rule_era, _rule_faults)
"""Evidence rules, in the order their evidence is listed."""

NEVER_MERGED_POINTS = -5


def infer_callers(trace_df: pd.DataFrame) -> pd.DataFrame:
    """Rank the caller patterns of :data:`SIGNATURES` for a trace, best first.

    Columns: ``rank``, ``caller``, ``score`` (sum of the evidence points), ``verdict``
    ("most likely", "consistent", "possible", "unlikely", "what-if: never merged"),
    ``evidence`` (each rule's points and numbers, "; "-joined), ``summary`` and ``where``
    (what the caller does, and where the kernel does it). ``attrs["features"]`` holds the
    :class:`TraceFeatures`; ``attrs["note"]`` says what a trace cannot show.
    """
    f = trace_features(trace_df)
    applied = [item for rule in RULES for item in rule(f)]
    rows = []
    for name, sig in SIGNATURES.items():
        caller = CALLERS[name]
        score, ev = 0, []
        for pts, text in applied:
            p = pts(sig)
            score += p
            if p:
                ev.append(f"{p:+d} {text}")
        if not caller.merged:
            score += NEVER_MERGED_POINTS
            ev.append(f"{NEVER_MERGED_POINTS:+d} never merged: no real kernel made this trace")
        rows.append({"caller": name, "score": score, "evidence": "; ".join(ev) or
                     "no evidence either way", "summary": caller.summary, "where": sig.where,
                     "merged": caller.merged})
    out = pd.DataFrame(rows).sort_values("score", ascending=False, kind="stable")
    out.insert(0, "rank", range(1, len(out) + 1))
    out.insert(3, "verdict", _verdicts(out))
    out = out.drop(columns="merged").reset_index(drop=True)
    out.attrs["features"] = f
    few = f.maps + f.unmaps < 8
    out.attrs["note"] = ("tracepoints record no syncs or flushes: the ranking rests on how "
                         "IOVAs are chosen and reused" + ("; few events, weak evidence"
                                                          if few else ""))
    return out


def _verdicts(df: pd.DataFrame) -> list[str]:
    merged = df[df["merged"]]
    best = merged["score"].max() if len(merged) else 0
    second = merged["score"].nlargest(2).iloc[-1] if len(merged) > 1 else best - 99
    out = []
    for score, is_merged in zip(df["score"], df["merged"], strict=True):
        if not is_merged:
            out.append("what-if: never merged")
        elif score == best and best - second >= 2:
            out.append("most likely")
        elif score >= best - 1:
            out.append("consistent")
        elif score < 0:
            out.append("unlikely")
        else:
            out.append("possible")
    return out
