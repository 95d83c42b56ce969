"""The trace-upload app without widgets: load a trace file, replay it, read the results.

``load(content, name)`` parses uploaded bytes (text or ``.gz``) leniently: malformed lines
are listed in :attr:`skips`, never a traceback. It also ranks the caller patterns
(:func:`~.infer.infer_callers`) and, when the trace has faults, replays them strict and lazy
(:func:`~.lazy_faults.stale_under_lazy`). ``run(strategies, callers)`` replays the trace
under each pair (:func:`~.replay_phases.replay_phases`, ``replay()``'s rows plus the map and
unmap CPU time). Every action is atomic (``ActionModel``): a bad file or setting sets
:attr:`error` and keeps the previous trace and results.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import einval
from ..inputs.trace import read_trace
from .compare import resolve_jobs
from .infer import infer_callers
from .lazy_faults import complete_trace, stale_under_lazy
from .replay_phases import replay_phases
from .stepping import ActionModel

MAX_UPLOAD = 8 << 20          # bytes as uploaded: the browser sends them over the kernel's
#                               websocket, whose default message limit is 10 MiB (Tornado)
MAX_TEXT = 64 << 20           # bytes after gunzip
MAX_WORK = 40_000             # events x (strategy, caller) pairs per run (~0.5 ms each here)
MAX_LAZY_EVENTS = 5_000       # the strict/lazy fault replay steps each event (to the last
#                               fault) twice, ~0.4 ms per event here
DEFAULT_STRATEGIES = ("smmuv3-v4.14", "smmuv3-v5.4", "vtd-psi", "amd-range")
DEFAULT_CALLERS = ("unmap-each", "unmap-fast-batch", "dma-strict", "dma-lazy")
LAZY_STRATEGY = "smmuv3-v5.4"
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "data" / "traces"


def examples() -> list[str]:
    """The bundled example traces: the real excerpts (``data/traces/real/*.txt``) first,
    then the synthetic ones (``data/traces/*.txt``); names relative to ``data/traces``."""
    real = sorted(f"real/{p.name}" for p in (EXAMPLES_DIR / "real").glob("*.txt"))
    return real + sorted(p.name for p in EXAMPLES_DIR.glob("*.txt"))


def decode(content: bytes | bytearray | memoryview | str, name: str = "") -> list[str]:
    """Lines of an upload: gunzipped if it starts with the gzip magic, size-checked."""
    if isinstance(content, str):
        data = content.encode("utf-8", "surrogateescape")
    else:
        data = bytes(content)
    if len(data) > MAX_UPLOAD:
        raise einval(f"{name or 'the file'} is {len(data) / 2**20:.1f} MiB; the app takes up to "
                     f"{MAX_UPLOAD >> 20} MiB (gzip it, or use read_trace() in a notebook or "
                     "python -m iommu_lab replay for bigger traces)")
    if data[:2] == b"\x1f\x8b":
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = d.decompress(data, MAX_TEXT + 1)
        except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
            raise einval(f"{name or 'the file'} looks gzipped but does not decompress: "
                         f"{exc}") from None
        if len(data) > MAX_TEXT:
            raise einval(f"{name or 'the file'} unpacks to more than {MAX_TEXT >> 20} MiB; "
                         "use read_trace() in a notebook for traces this big")
    if b"\x00" in data[:4096]:
        raise einval(f"{name or 'the file'} is binary, not trace text (trace-cmd's trace.dat "
                     "needs `trace-cmd report > iommu.txt` first)")
    return [ln.decode("utf-8", "surrogateescape") for ln in data.splitlines(keepends=True)]


class ReplayModel(ActionModel):
    """The trace-upload app's state and actions (no widgets)."""

    def __init__(self, strategies: Sequence[str] = DEFAULT_STRATEGIES,
                 callers: Sequence[str] = DEFAULT_CALLERS, metric: str = "inv_cmds",
                 log: bool = True, complete: bool = True) -> None:
        super().__init__()
        self.name = ""
        self.trace: Any = None          # read_trace() DataFrame
        self.ranked: Any = None         # infer_callers()
        self.lazy: Any = None           # stale_under_lazy(), or None without faults
        self.results: Any = None        # replay_phases()
        self.strategies, self.callers = tuple(strategies), tuple(callers)
        self.metric, self.log_scale, self.complete = metric, log, complete
        self.lazy_notice = ""           # what was left out, and why (not errors)
        self.replay_notice = ""

    def _state(self) -> Any:
        return (self.name, self.trace, self.ranked, self.lazy, self.results, self.strategies,
                self.callers, self.metric, self.log_scale, self.complete, self.lazy_notice,
                self.replay_notice)

    def _restore(self, state: Any) -> None:
        (self.name, self.trace, self.ranked, self.lazy, self.results, self.strategies,
         self.callers, self.metric, self.log_scale, self.complete, self.lazy_notice,
                self.replay_notice) = state

    # ---- actions -----------------------------------------------------------------------
    def load(self, content: bytes | str, name: str = "upload") -> Any:
        """Parse an uploaded trace (lenient), rank the callers, analyse the faults, replay."""
        def go() -> str:
            lines = decode(content, name)
            df = read_trace(lines, strict=False)
            if not len(df):
                skipped = len(df.attrs.get("skips", []))
                raise einval(f"no iommu map/unmap/io_page_fault events in {name} "
                             f"({len(lines):,} lines: {df.attrs.get('skipped_other', 0):,} "
                             f"other lines, {skipped:,} malformed) — is it a trace of the "
                             "iommu events (see docs/capturing-traces.md)?")
            self.name, self.trace, self.results = name, df, None
            self.lazy_notice = self.replay_notice = ""
            self.ranked = infer_callers(df)
            self.lazy = None
            fault_rows = (df["event"].astype(str) == "io_page_fault").to_numpy().nonzero()[0]
            if len(fault_rows) and fault_rows[-1] < MAX_LAZY_EVENTS:
                self.lazy = stale_under_lazy(df, LAZY_STRATEGY)
            elif len(fault_rows):
                self.lazy_notice = (f"the faults were not replayed strict and lazy: the last is "
                               f"event {fault_rows[-1] + 1:,} (the app replays up to "
                               f"{MAX_LAZY_EVENTS:,}); use stale_under_lazy() in a notebook")
            self.replay_notice = self._too_big()
            if not self.replay_notice:
                self._replay()
            return f"{name}: {len(df):,} events"
        self._act("load", go)
        return self.results if self.error is None else None

    def load_example(self, name: str) -> Any:
        """Load one of :func:`examples` by file name."""
        if name not in examples():
            def bad() -> None:
                raise einval(f"no example {name!r}; examples: {', '.join(examples())}")
            self._act("load", bad)
            return None
        return self.load((EXAMPLES_DIR / name).read_bytes(), name)

    def run(self, strategies: Sequence[str] | None = None, callers: Sequence[str] | None = None,
            complete: bool | None = None) -> Any:
        """Replay the loaded trace under every (strategy, caller) pair."""
        def go() -> str:
            if self.trace is None:
                raise einval("load a trace first")
            if strategies is not None:
                self.strategies = tuple(strategies)
            if callers is not None:
                self.callers = tuple(callers)
            if complete is not None:
                self.complete = bool(complete)
            self._replay()
            return f"{len(self.results)} runs"
        self._act("replay", go)
        return self.results if self.error is None else None

    def set_metric(self, metric: str, log: bool | None = None) -> None:
        """Chart another counter (and optionally switch the log scale) without re-running."""
        def go() -> str:
            if self.results is not None and metric not in self.results.columns:
                raise einval(f"no column {metric!r} in the replay result")
            self.metric = metric
            if log is not None:
                self.log_scale = bool(log)
            return metric
        self._act("metric", go)

    # ---- helpers -------------------------------------------------------------------------
    def _too_big(self) -> str:
        """Why the chosen pairs cannot be replayed on this trace in the app ("" if they can)."""
        if not self.strategies or not self.callers:
            raise einval("pick at least one strategy and one caller")
        jobs = resolve_jobs(self.strategies, self.callers)
        if len(self.trace) * len(jobs) <= MAX_WORK:
            return ""
        fits = max(1, MAX_WORK // max(1, len(self.trace)))
        return (f"{len(self.trace):,} events x {len(jobs)} pairs is too much for the app "
                f"(limit {MAX_WORK:,} event-runs): pick at most {fits} pair(s) and press "
                "replay, or run python -m iommu_lab replay on the file")

    def _replay(self) -> None:
        too_big = self._too_big()
        if too_big:
            raise einval(too_big)
        df = complete_trace(self.trace) if self.complete else self.trace
        self.results = replay_phases(df, self.strategies, self.callers)
        self.replay_notice = ""

    @property
    def notice(self) -> str:
        """What the app left out of this trace, and why ("" if nothing)."""
        return "; ".join(filter(None, [self.lazy_notice, self.replay_notice]))

    @property
    def skips(self) -> list[tuple[int, str]]:
        """Malformed lines of the loaded trace: ``(line, reason)``."""
        return list(self.trace.attrs.get("skips", [])) if self.trace is not None else []

    @property
    def summary(self) -> str:
        """One line about the loaded trace: events, formats, skipped and completed lines."""
        if self.trace is None:
            return "no trace loaded"
        df = self.trace
        ev = df["event"].astype(str).value_counts()
        done = complete_trace(df).attrs["completed"] if self.complete else 0
        parts = [f"{self.name}: {ev.get('map', 0):,} maps, {ev.get('unmap', 0):,} unmaps, "
                 f"{ev.get('io_page_fault', 0):,} faults",
                 "format " + (", ".join(df.attrs.get("generations", [])) or "unknown"),
                 f"{df.attrs.get('skipped_other', 0):,} other lines skipped",
                 f"{len(self.skips):,} malformed lines skipped"]
        if df.attrs.get("lost_events"):
            parts.append(f"{df.attrs['lost_events']:,} events LOST by ftrace")
        if done:
            parts.append(f"{done:,} regions unmapped but mapped before the capture: mapped at "
                         "its start")
        return "; ".join(parts)
