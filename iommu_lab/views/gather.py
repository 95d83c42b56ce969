"""Views for lesson 05: the gather per era, SMMUv3 batches, range TLBIs, several CPUs.

Pure functions from the rows of :mod:`iommu_lab.analysis.lessons` to DataFrames (addresses
in hex, sizes as ``4K``/``2M``, times in µs) and plotly figures. Times are simulated, from
the cost model: :func:`iommu_lab.hw.costs.cost_table` says which numbers are assumptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..analysis.lessons import GATHER_ERAS, PUBLISHED_CMDQ
from ..core.gather import ULONG_MAX
from ..hw.costs import cost_table
from ._fmt import LEAN_TEMPLATE, hx, size_label

STRATEGY_COLORS = ("#0f766e", "#2563eb", "#f59e0b", "#dc2626", "#7c3aed", "#64748b")


def us(ns: float) -> float:
    """Nanoseconds as microseconds, rounded to 0.01 µs (what every table here shows)."""
    return round(float(ns) / 1000, 2)


def _range(r: Any) -> str:
    return "" if r is None else f"{hx(r[0])} +{size_label(r[1])}"


def _end(v: int, start: int) -> str:
    return "—" if start == ULONG_MAX else hx(v)


def gather_table(rows: Sequence[Mapping[str, Any]], eras: Sequence[Any] = GATHER_ERAS,
                 amd: bool = True) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons.gather_walk` as a table: per page, each era's
    action, the range an early sync flushed, and ``start``/``end`` as that era stores them
    (``end`` one past the range in v5.4, its last byte from v5.10). ``amd`` adds AMD's
    v5.15 bare-metal column (``add_range`` only: it never syncs)."""
    out = []
    for r in rows:
        row: dict[str, Any] = {"unmapped page": f"{hx(r['iova'])} ({size_label(r['size'])})"}
        for rules in eras:
            e = rules.era
            row[f"{e}: action"] = r[f"{e} action"]
            row[f"{e}: flushed early"] = _range(r[f"{e} flushed"])
            row[f"{e}: start, end"] = f"{hx(r[f'{e} start'])}, {_end(r[f'{e} end'], r[f'{e} start'])}"
        if amd:
            row["AMD v5.15: start, end"] = f"{hx(r['AMD v5.15 start'])}, {hx(r['AMD v5.15 end'])}"
        out.append(row)
    return pd.DataFrame(out)


def gather_text(gather: Any, dom: Any) -> str:
    """One line for a caller's gather on ``dom``: the range it holds (its last byte, as
    ``[start, end]``, whatever the era stores), the page size, and the raw fields as the
    domain's kernel era keeps them (``end`` exclusive in v5.4, inclusive from v5.10)."""
    rules = dom.core.gather_rules()
    if not gather.pgsize:
        return f"empty gather ({rules.era}: start={hx(gather.start)}, end={hx(gather.end)})"
    start, size = rules.span(gather)
    return (f"holds {hx(start)}..{hx(start + size - 1)} ({size_label(size)}) at pgsize "
            f"{size_label(gather.pgsize)} — {rules.era} fields: start={hx(gather.start)}, "
            f"end={hx(gather.end)}")


def batches_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons.sync_batches`: one row per
    ``arm_smmu_cmdq_issue_cmdlist`` call (each is one doorbell when its CPU owns the batch)."""
    cols = ["call", "slots", "commands", "first", "last", "ends with CMD_SYNC",
            "doorbell (owner)"]
    return pd.DataFrame(list(rows), columns=cols).set_index("call")


def ril_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons.ril_commands`: the encoded fields of each range
    TLBI and what it covers: ``(NUM+1) × 2^SCALE`` pages from ``addr``."""
    out = [{"command": r["command"], "addr": hx(r["addr"]), "NUM": r["NUM"],
            "SCALE": r["SCALE"], "TG": r["TG"], "TTL": r["TTL"], "Leaf": r["Leaf"],
            "covers": f"({r['NUM']}+1) × 2^{r['SCALE']} = {r['pages']} pages "
                      f"({size_label(r['bytes'])})"} for r in rows]
    return pd.DataFrame(out)


PHASE_METRICS = ("map_calls", "unmap_calls", "sync_calls", "inv_cmds", "sync_cmds", "doorbells")
TIME_COLUMNS = {"duration_ns": "duration (µs)", "cpu_ns": "CPU time (µs)",
                "iommu_ns": "IOMMU busy (µs)", "lock_wait_ns": "lock wait (µs)",
                "spin_ns": "spinning, lock wait included (µs)",
                "cacheline_ns": "cacheline transfers (µs)"}


def phase_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = PHASE_METRICS,
                times: Sequence[str] = ("duration_ns", "cpu_ns", "iommu_ns"),
                phase: str | None = None) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons.phases` rows: strategy, caller, phase, the
    ``metrics`` (counts) and the ``times`` in µs (``phase`` keeps one phase only)."""
    out = []
    for r in rows:
        if phase is not None and r["phase"] != phase:
            continue
        row = {"strategy": r["strategy"], "caller": r["caller"], "phase": r["phase"]}
        row.update({m: r[m] for m in metrics})
        row.update({TIME_COLUMNS.get(t, t): us(r[t]) for t in times})
        out.append(row)
    return pd.DataFrame(out)


def scaling_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons.cpu_scaling`: per strategy, phase and CPU count,
    the calls per second (unmaps in the unmap phase), doorbells (and insertions an owner's
    doorbell published for another CPU), and where the CPUs' time went, in µs."""
    out = []
    for r in rows:
        calls = r["unmap_calls"] if r["phase"] == "unmap" else r["map_calls"]
        out.append({"strategy": r["strategy"], "phase": r["phase"], "cpus": r["cpus"],
                    "calls/s": r["calls_per_s"], "doorbells": r["doorbells"],
                    "gathered by an owner": "—" if r["gathered"] is None else r["gathered"],
                    "lock wait (µs)": us(r["lock_wait_ns"]),
                    "spinning, lock wait included (µs)": us(r["spin_ns"]),
                    "cacheline transfers (µs)": us(r["cacheline_ns"]),
                    "CPU time per call (µs)": us(r["cpu_ns"] / max(1, calls)),
                    "duration (µs)": us(r["duration_ns"])})
    return pd.DataFrame(out)


def scaling_figure(rows: Sequence[Mapping[str, Any]], metric: str = "calls_per_s",
                   title: str | None = None, phase: str = "unmap") -> go.Figure:
    """Lines: x = CPUs, y = ``metric`` of the ``phase`` rows (default: unmaps per second),
    one line per strategy."""
    rows = [r for r in rows if r["phase"] == phase]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    traces = []
    for i, s in enumerate(strategies):
        mine = sorted((r for r in rows if r["strategy"] == s), key=lambda r: r["cpus"])
        traces.append({"type": "scatter", "mode": "lines+markers", "name": s,
                       "x": [r["cpus"] for r in mine], "y": [r[metric] for r in mine],
                       "line": {"color": STRATEGY_COLORS[i % len(STRATEGY_COLORS)]}})
    label = f"{phase}s per second" if metric == "calls_per_s" else metric
    return go.Figure(data=traces, layout={
        "title": {"text": title or f"{label} against CPUs"},
        "xaxis": {"title": {"text": f"CPUs issuing {phase}s at once"}, "type": "log", "dtick": 0.30103,
                  "tickvals": sorted({r["cpus"] for r in rows})},
        "yaxis": {"title": {"text": label}, "rangemode": "tozero"},
        "height": 360, "margin": {"l": 60, "r": 10, "t": 50, "b": 50},
        "template": LEAN_TEMPLATE})


def costs_table(names: Sequence[str] | None = None,
                overrides: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The cost model (``iommu_lab.hw.costs``) in µs: each parameter's default (and the
    value a run overrode it with), what it stands for, and whether it is an assumption."""
    out = []
    for r in cost_table():
        if names is not None and r["name"] not in names:
            continue
        row = {"parameter": r["name"], "default (µs)": us(r["default_ns"])}
        if overrides is not None:
            row["this run (µs)"] = us(overrides.get(r["name"], r["default_ns"]))
        row.update({"meaning": r["meaning"], "source": r["source"]})
        out.append(row)
    return pd.DataFrame(out)


def published_table() -> pd.DataFrame:
    """The numbers published for the lock-free command queue (hardware-invalidation.md
    §1.5): whole-system throughput and profile shares, not per-command costs."""
    return pd.DataFrame(list(PUBLISHED_CMDQ))


__all__ = ["batches_table", "costs_table", "gather_table", "gather_text", "phase_table", "published_table", "ril_table",
           "scaling_figure", "scaling_table", "us"]
