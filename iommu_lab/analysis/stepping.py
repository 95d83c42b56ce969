"""The stepper without widgets: a session fed one operation at a time.

``StepperModel`` is what the notebook stepper (``iommu_lab.ui.Stepper``) wraps: every
action of :data:`ACTIONS` is a method here, runs through the same caller table as a
:class:`~iommu_lab.analysis.session.Session` (the ``api-calls`` caller: each op is the call
it names), and is atomic — bad input sets :attr:`error` to a message and leaves the model
exactly as it was. The IOMMU is *paused* by default: it executes queued commands only when
told to (``consume``) or when the CPU waits for a completion.

    m = StepperModel("smmuv3-v4.15")
    m.map("0x0", "64K"); m.unmap_fast("0x0", "64K")
    m.consume(2)                       # the IOMMU executes two queued TLBIs
    m.sync()                           # CMD_SYNC: the CPU waits for the rest
    m.domain.stats()["inv_cmds"]       # 16
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import operator
import pickle
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.dma_iommu import fq_advance
from ..core.domain import IommuDomain
from ..errors import IommuError
from ..inputs.ops import Op
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import fmt_size, parse_addr, parse_size
from .session import Session

DEFAULT_PADDR_OFFSET = 0x4000_0000   # paddr = iova + 1 GiB unless given (keeps alignment)
MAX_PAGES = 16_384                   # pages one stepper action may map or invalidate
LOG_LINES = 200
TRACE_KEEP = 50_000                  # trace records kept for the timeline (oldest dropped)
PROTS = {"RW": int(IOMMU_READ | IOMMU_WRITE), "R": int(IOMMU_READ), "W": int(IOMMU_WRITE)}


class StepperInputError(ValueError):
    """Input the stepper refuses before calling the model (e.g. too many pages)."""


# Shared, not copied, by a snapshot (as copy.deepcopy shares them): code, classes, modules,
# and locks (a domain's CPUs hand a baton between threads; no thread runs between actions).
_SHARED = (types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type,
           type(threading.Lock()), type(threading.RLock()))


class SessionSnapshot:
    """A session frozen as bytes, restored (as a new, independent session) only if needed.

    A C-speed pickle of the object graph, with functions and locks shared as
    ``copy.deepcopy`` shares them: much cheaper than a deepcopy, and it leaves no Python
    objects behind for the garbage collector (a deepcopy did, and each collection walked
    the whole trace too, so actions slowed down as a session grew). Its cost follows the
    size of the page table, not the session's history.
    """

    def __init__(self, session: Session) -> None:
        self._shared: list[Any] = []
        buf = io.BytesIO()
        _SnapshotPickler(buf, self._shared).dump(session)
        self._bytes = buf.getvalue()

    def restore(self) -> Session:
        """A fresh copy of the session as it was when the snapshot was taken."""
        return _SnapshotUnpickler(io.BytesIO(self._bytes), self._shared).load()

    def __len__(self) -> int:
        return len(self._bytes)


def _shared_ref(i: int) -> Any:
    """Stands for ``shared[i]`` in a snapshot (the unpickler resolves it)."""
    raise RuntimeError("resolved by _SnapshotUnpickler")


class _SnapshotPickler(pickle.Pickler):
    def __init__(self, file: Any, shared: list[Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._shared_list = shared

    def reducer_override(self, obj: Any) -> Any:
        get = _slot_fields(type(obj))
        if get is not None:                # queued commands: the bulk of a snapshot
            return _new_slotted, (type(obj), get(obj))
        if obj is _shared_ref or obj is _new_slotted or not _is_shared(obj):
            return NotImplemented
        self._shared_list.append(obj)
        return _shared_ref, (len(self._shared_list) - 1,)


_SHARED_TYPES: dict[type, bool] = {}


def _is_shared(obj: Any) -> bool:
    """Shared by reference: :data:`_SHARED`, or another kind of unbound function (a
    module compiled by :mod:`~iommu_lab.native` defines Cython functions, which are neither
    Python nor builtin functions). Decided once per type."""
    cls = type(obj)
    try:
        return _SHARED_TYPES[cls]
    except KeyError:
        pass
    shared = isinstance(obj, _SHARED) or (      # not a bound method: it is rebound to the copy
        inspect.isroutine(obj) and not inspect.ismethod(obj) and not isinstance(obj, type))
    _SHARED_TYPES[cls] = shared
    return shared


_SLOTTED: dict[type, Any] = {}


def _slot_fields(cls: type) -> Any:
    """An attrgetter of the fields of a slotted dataclass (None for other types): C-speed,
    where pickle's default for them calls ``dataclasses.fields`` per object."""
    try:
        return _SLOTTED[cls]
    except KeyError:
        pass
    names = ([f.name for f in dataclasses.fields(cls)]
             if dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__ else [])
    get = operator.attrgetter(*names) if len(names) > 1 else None
    _SLOTTED[cls] = get
    return get


def _new_slotted(cls: type, values: tuple[Any, ...]) -> Any:
    obj = object.__new__(cls)
    for f, v in zip(dataclasses.fields(cls), values):
        object.__setattr__(obj, f.name, v)
    return obj


class _SnapshotUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, shared: list[Any]) -> None:
        super().__init__(file)
        self._shared_list = shared

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == _shared_ref.__name__:
            return self._shared_list.__getitem__
        return super().find_class(module, name)


@dataclass(frozen=True)
class Action:
    """One stepper action: a row the UI turns into a button.

    ``name`` is the :class:`StepperModel` method; ``inputs`` the fields it reads
    (``iova``, ``size``, ``paddr``, ``prot``, ``n``); ``label`` the button text (an API
    variant's own spelling for ``sync`` / ``flush_all`` / ``range_add``).
    """

    name: str
    label: str
    tip: str
    inputs: tuple[str, ...] = ()
    style: str = ""
    group: str = "api"
    css: str = ""

    @property
    def stem(self) -> str:
        """The button's id stem: ``unmap-fast`` (CSS ``iommu-unmap-fast-btn``)."""
        return self.css or self.name.replace("_", "-")


ACTIONS: tuple[Action, ...] = (
    Action("map", "map", "iommu_map (iommu_dma_map on DMA domains)",
           ("iova", "size", "paddr", "prot")),
    Action("unmap", "unmap", "iommu_unmap (iommu_dma_unmap on DMA domains)", ("iova", "size")),
    Action("unmap_fast", "unmap_fast", "iommu_unmap_fast: no sync", ("iova", "size")),
    Action("range_add", "range_add", "iommu_tlb_range_add (2017 / v4.14)", ("iova", "size")),
    Action("sync", "iotlb_sync", "complete the flush (CMD_SYNC)", style="danger"),
    Action("flush_all", "flush_all", "invalidate the whole domain"),
    Action("map_sync", "map_sync", "2017 wrapper: map + range_add + sync",
           ("iova", "size", "paddr", "prot")),
    Action("unmap_sync", "unmap_sync", "2017 wrapper: unmap + range_add + sync",
           ("iova", "size")),
    Action("unmap_cpus", "unmap on n CPUs", "n CPUs each iommu_unmap their slice of the "
           "range at the same moment (a domain with cpus >= n): lock waits, batching",
           ("iova", "size", "n"), group="cpus"),
    Action("dma_read", "DMA read", "the device reads iova", ("iova",), "info", "device"),
    Action("dma_write", "DMA write", "the device writes iova", ("iova",), "info", "device"),
    Action("consume", "IOMMU: consume n", "let the IOMMU execute n queued commands", ("n",),
           "warning", "iommu"),
    Action("run_until_idle", "IOMMU: run until idle", "execute everything published",
           style="warning", group="iommu", css="run-idle"),
)


class ActionModel:
    """Atomic actions with an error message, a log and change notification.

    ``_state()`` / ``_restore(state)`` say what an action may change; a failing action
    restores it, sets :attr:`error` and logs ``✗``. Observers registered with
    :meth:`on_change` run after every action, failed or not.
    """

    def __init__(self) -> None:
        self.error: str | None = None
        self.last: str = ""
        self.log: list[str] = []
        self._lines = 0                     # lines ever logged: numbers stay right past LOG_LINES
        self._observers: list[Callable[[Any], None]] = []

    def on_change(self, callback: Callable[[Any], None], remove: bool = False) -> None:
        """Call ``callback(model)`` after every action (``remove=True`` unregisters it)."""
        if remove:
            self._observers.remove(callback)
        else:
            self._observers.append(callback)

    def _notify(self) -> None:
        for cb in list(self._observers):
            cb(self)

    def _state(self) -> Any:
        raise NotImplementedError

    def _restore(self, state: Any) -> None:
        raise NotImplementedError

    def _stamp(self) -> str:
        return ""

    def _note(self, line: str) -> None:
        self._lines += 1
        self.log.append(f"{self._lines:3d}  {self._stamp()}{line}")
        del self.log[:-LOG_LINES]

    def _succeeded(self, state: Any) -> None:
        """After a successful action (``state`` is what it started from)."""

    def _act(self, label: str, fn: Callable[[], Any]) -> Any:
        """Run one action atomically; returns its result, or None after a failure."""
        state = self._state()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - any failure must leave the model unchanged
            self._restore(state)
            prefix = "" if isinstance(exc, (IommuError, ValueError)) else f"{type(exc).__name__}: "
            self.error = f"{label}: {prefix}{exc}"
            self._note(f"✗ {label} — {prefix}{exc}")
            self._notify()
            return None
        self.error = None
        self._succeeded(state)
        self.last = f"{label} → {result}" if result not in (None, "") else label
        self._note(f"✓ {self.last}")
        self._notify()
        return result


class StepperModel(ActionModel):
    """A live IOMMU domain stepped one API call (or one IOMMU command) at a time."""

    def __init__(self, strategy: str = "smmuv3-v4.15", api: str = "kernel",
                 type: str = "UNMANAGED", *, paused: bool = True, **params: Any) -> None:
        super().__init__()
        self.params = dict(params)
        self.notes: list[str] = []
        self.before: dict[str, int] = {}
        self._alloc(strategy, api, type, paused)
        self._note(f"domain: {self.describe()}")
        for note in self.notes:
            self._note(f"note: {note}")

    # ---- the model ---------------------------------------------------------------------
    @property
    def domain(self) -> IommuDomain:
        """The simulated ``struct iommu_domain`` being stepped."""
        return self.session.dom

    @property
    def queue(self) -> Any:
        """The domain's invalidation queue."""
        return self.domain.driver.q

    @property
    def gather(self) -> Any:
        """The gather ``unmap_fast`` fills and ``sync`` completes."""
        return self.session.gather

    @property
    def strategy(self) -> str:
        """The driver strategy's name (``smmuv3-v4.15``...)."""
        return self.domain.strategy.name

    @property
    def api(self) -> str:
        """``"kernel"`` or ``"rfc-2017"`` (Joerg Roedel's proposal)."""
        return self.domain.api.name

    def label(self, action: Action) -> str:
        """The button text of ``action`` in this domain's API (``tlb_sync`` in 2017)."""
        spelled = self.domain.api.labels.get(action.name)
        return spelled.removeprefix("iommu_") if spelled else action.label

    def describe(self) -> str:
        """One line: strategy, kernel, API, domain type, queue size, paused or running."""
        d, q = self.domain, self.queue
        return (f"{d.strategy.name} ({d.strategy.kernel}), api={d.api.name}, type={d.type}, "
                f"{q.entries}-slot queue, IOMMU {'paused' if q.paused else 'running'}")

    def _alloc(self, strategy: str, api: str, dtype: str, paused: bool) -> None:
        params, notes = dict(self.params), []
        try:
            session = Session(strategy, "api-calls", params, type=dtype, api=api)
        except IommuError as exc:
            if "cmdq_entries" not in params or "cmdq_entries" not in str(exc):
                raise
            params.pop("cmdq_entries")   # a small teaching ring this driver cannot use
            session = Session(strategy, "api-calls", params, type=dtype, api=api)
            notes.append(f"{exc.strerror}; using the driver's default "
                         f"{session.dom.driver.q.entries}-slot queue")
        self.session = session
        self.before = session.dom.stats()
        self.notes = notes + list(session.dom.notes)
        for q in session.dom.hw.queues:
            q.paused = paused

    # ---- atomicity ---------------------------------------------------------------------
    def _state(self) -> Any:
        """What a failing action restores: a byte copy of the session (not its trace, which
        is append-only: its length is enough), and the counters for the ``delta`` column."""
        trace = self.domain.trace
        events, waits, dropped = trace.events, trace.waits, trace.dropped
        trace.events, trace.waits = [], []
        try:
            snap = SessionSnapshot(self.session)
        finally:
            trace.events, trace.waits = events, waits
        return snap, (len(events), len(waits)), dropped, self.domain.stats()

    def _restore(self, state: Any) -> None:
        snap, (n_events, n_waits), dropped, _ = state
        trace = self.domain.trace
        events, waits = trace.events, trace.waits
        del events[n_events:]
        del waits[n_waits:]
        session = snap.restore()
        t = session.dom.trace
        t.events, t.waits, t.dropped = events, waits, dropped
        self.session = session

    def _stamp(self) -> str:
        return f"t={self.domain.clock.now:>9,} ns  "

    def _succeeded(self, state: Any) -> None:
        self.before = state[3]
        self._trim_trace()

    def _trim_trace(self) -> None:
        """Keep the newest records only, so a long session's timeline stays current."""
        trace = self.domain.trace
        extra = len(trace.events) - TRACE_KEEP
        if extra > 0:
            del trace.events[:extra + TRACE_KEEP // 2]
            trace.dropped += extra + TRACE_KEEP // 2
        if len(trace.waits) > TRACE_KEEP:
            del trace.waits[:len(trace.waits) - TRACE_KEEP // 2]

    def _do(self, op: Op) -> Any:
        return self.session.do(op)

    # ---- model queries -----------------------------------------------------------------
    def map_pages(self, iova: int, paddr: int, size: int) -> int:
        """How many pages ``iommu_map`` would create (the core's chunking; maps nothing)."""
        dom = self.domain
        if not size or (iova | paddr | size) % dom.min_pagesz:
            return 0
        return sum(c.pgcount * c.calls
                   for c in dom.core.chunks(dom.pgsize_bitmap, iova, paddr, size))

    def unmap_work(self, iova: int, size: int) -> int:
        """Granules an unmap would invalidate, following the core's loop (``iommu_pgsize``
        chunks, stopping at the first hole): freeing a whole table page costs one
        invalidation per granule under it on SMMU drivers. Changes nothing."""
        dom = self.domain
        if not size or (iova | size) % dom.min_pagesz or iova + size > 1 << dom.pgtable.cfg.ias:
            return 0  # the model refuses it with the kernel's errno
        g, work, at, end = dom.pgtable.granule, 0, iova, iova + size
        while at < end and work <= MAX_PAGES:
            c = next(dom.core.chunks(dom.pgsize_bitmap, at, at, end - at))
            found = dom.walk(at)
            if not found.present:
                break                                  # a hole: iommu_unmap stops here
            per_call = c.pgsize // g if found.pgsize < c.pgsize else 1
            calls = min(c.calls, MAX_PAGES + 1)
            work += per_call * c.pgcount * calls
            at += c.pgsize * c.pgcount * calls
        return work

    # ---- input parsing -------------------------------------------------------------------
    def _range(self, iova: Any, size: Any) -> tuple[int, int]:
        return parse_addr(iova, "iova"), parse_size(size, "size")

    def _paddr(self, paddr: Any, iova: int) -> int:
        if paddr is None or (isinstance(paddr, str) and not paddr.strip()):
            return iova + DEFAULT_PADDR_OFFSET
        return parse_addr(paddr, "paddr")

    def _guard_map(self, iova: int, paddr: int, size: int) -> None:
        if self.map_pages(iova, paddr, size) > MAX_PAGES:
            raise StepperInputError(
                f"{fmt_size(size)} would need more than {MAX_PAGES:,} pages; the stepper "
                "takes at most that many per action (use compare() for big workloads)")

    def _guard_unmap(self, iova: int, size: int) -> None:
        if self.unmap_work(iova, size) > MAX_PAGES:
            raise StepperInputError(
                f"that unmap would invalidate more than {MAX_PAGES:,} pages (it frees whole "
                "page-table pages); the stepper takes at most that many per action (use "
                "compare() for big workloads)")

    @staticmethod
    def prot(value: Any) -> int:
        """``"RW"`` / ``"R"`` / ``"W"`` or an int -> IOMMU_* bits."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.upper() in PROTS:
            return PROTS[value.upper()]
        raise StepperInputError(f"prot must be one of {', '.join(PROTS)} or an int, not {value!r}")

    @staticmethod
    def count(n: Any, most: int = 1_000_000) -> int:
        """A whole number in 1 .. ``most`` (from an int or a string like ``"3"``)."""
        if isinstance(n, bool):
            raise StepperInputError(f"expected a whole number, not {n!r}")
        try:
            k = int(n, 0) if isinstance(n, str) else int(n)
        except (TypeError, ValueError):
            raise StepperInputError(f"expected a whole number, not {n!r}") from None
        if k < 1 or k > most:
            raise StepperInputError(f"{k} is outside 1 .. {most:,}")
        return k

    def _leaves(self, iova: int, size: int) -> str:
        return f"{sum(1 for _ in self.domain.pgtable.leaves(iova, iova + size))} leaves"

    # ---- actions: the IOMMU API -------------------------------------------------------------
    def map(self, iova: Any, size: Any, paddr: Any = None, prot: Any = "RW") -> Any:
        """``iommu_map`` (``iommu_dma_map`` at that IOVA on DMA domains)."""
        def run() -> str:
            i, n = self._range(iova, size)
            p = self._paddr(paddr, i)
            op = Op("map", i, n, p, self.prot(prot))
            self._guard_map(i, p, n)
            self._do(op)
            return self._leaves(i, n)
        return self._act(f"map {_label(iova, size)}", run)

    def map_sync(self, iova: Any, size: Any, paddr: Any = None, prot: Any = "RW") -> Any:
        """The 2017 proposal's ``iommu_map_sync``: map, then range_add + sync (never merged)."""
        def run() -> int:
            i, n = self._range(iova, size)
            p = self._paddr(paddr, i)
            op = Op("map_sync", i, n, p, self.prot(prot))
            self._guard_map(i, p, n)
            self._do(op)
            return 0
        return self._act(f"iommu_map_sync {_label(iova, size)}", run)

    def _unmap_kind(self, kind: str, iova: Any, size: Any) -> int:
        i, n = self._range(iova, size)
        self._guard_unmap(i, n)
        before = self.domain.stats()["bytes_unmapped"]
        self._do(Op(kind, i, n))
        return self.domain.stats()["bytes_unmapped"] - before

    def unmap(self, iova: Any, size: Any) -> Any:
        """``iommu_unmap`` (``iommu_dma_unmap`` on DMA domains); returns bytes unmapped."""
        return self._act(f"unmap {_label(iova, size)}",
                         lambda: self._unmap_kind("unmap", iova, size))

    def unmap_sync(self, iova: Any, size: Any) -> Any:
        """The 2017 proposal's ``iommu_unmap_sync``: unmap, then range_add + sync."""
        return self._act(f"iommu_unmap_sync {_label(iova, size)}",
                         lambda: self._unmap_kind("unmap_sync", iova, size))

    def unmap_fast(self, iova: Any, size: Any) -> Any:
        """``iommu_unmap_fast`` into :attr:`gather`; returns bytes unmapped."""
        return self._act(f"unmap_fast {_label(iova, size)}",
                         lambda: self._unmap_kind("unmap_fast", iova, size))

    def unmap_cpus(self, iova: Any, size: Any, n: Any = 2) -> Any:
        """``n`` CPUs each ``iommu_unmap`` one equal slice of the range, all starting now,
        on the shared clock (:mod:`iommu_lab.hw.cpus`): the timeline shows one lane per CPU
        and its lock waits. Returns bytes unmapped."""
        def run() -> int:
            start, length = self._range(iova, size)
            k, have = self.count(n, 256), self.domain.cpus.n
            if not 2 <= k <= have:
                raise StepperInputError(
                    f"unmap on {k} CPUs needs a domain with at least {max(k, 2)} CPUs; this "
                    f"one has {have} (StepperModel(..., cpus={max(k, 2)}))")
            if length % (k * self.domain.min_pagesz):
                raise StepperInputError(f"{fmt_size(length)} does not split into {k} slices "
                                        f"of whole {fmt_size(self.domain.min_pagesz)} pages")
            self._guard_unmap(start, length)
            part, before = length // k, self.domain.stats()["bytes_unmapped"]
            self.session.run([Op("unmap", start + c * part, part, cpu=c) for c in range(k)])
            return self.domain.stats()["bytes_unmapped"] - before
        return self._act(f"unmap {_label(iova, size)} on {n} CPUs", run)

    def range_add(self, iova: Any, size: Any) -> Any:
        """``iommu_tlb_range_add`` (2017/v4.14): tell the driver a range needs flushing."""
        def run() -> None:
            i, n = self._range(iova, size)
            self._do(Op("range_add", i, n))
        return self._act(f"iommu_tlb_range_add {_label(iova, size)}", run)

    def sync(self) -> Any:
        """``iommu_iotlb_sync`` (``iommu_tlb_sync`` in 2017): complete the flush."""
        return self._act(self.domain.api.labels["sync"], lambda: self._do(Op("sync")))

    def flush_all(self) -> Any:
        """``iommu_flush_iotlb_all`` (2017 name ``iommu_flush_tlb_all``)."""
        return self._act(self.domain.api.labels["flush_all"], lambda: self._do(Op("flush_all")))

    def dma_read(self, iova: Any) -> Any:
        """The device reads ``iova``: ``"hit"`` | ``"walk"`` | ``"fault"`` | ``"stale"``."""
        return self._dma(iova, False)

    def dma_write(self, iova: Any) -> Any:
        """The device writes ``iova`` (a stale result means DMA into freed memory)."""
        return self._dma(iova, True)

    def _dma(self, iova: Any, write: bool) -> Any:
        def run() -> str:
            return self._do(Op("access", parse_addr(iova, "iova"), write=write))
        return self._act(f"DMA {'write' if write else 'read'} {_label(iova)}", run)

    # ---- actions: the hardware and time --------------------------------------------------------
    def consume(self, n: Any = 1) -> Any:
        """Let the IOMMU execute ``n`` more queued commands; returns how many it did."""
        def run() -> int:
            k = self.count(n)
            if self.queue.paused:
                return sum(q.consume(k) for q in self.domain.hw.queues)
            return self._let_time_pass(k)
        return self._act(f"IOMMU consumes {n}", run)

    def run_until_idle(self) -> Any:
        """Let the IOMMU execute everything published; returns how many commands."""
        def run() -> int:
            if self.queue.paused:
                return sum(q.run_until_idle() for q in self.domain.hw.queues)
            return self._let_time_pass(None)
        return self._act("IOMMU runs until idle", run)

    def _let_time_pass(self, n: int | None) -> int:
        """Running queue: move the clock until ``n`` more commands (or all) have completed."""
        dom, done = self.domain, 0
        for q in dom.hw.queues:
            st = q.state(dom.clock.now)
            target = q.published if n is None else min(st.cons + n, q.published)
            if target > st.cons:
                dom.clock.idle_until(q.completion_time(target - 1))
                done += target - st.cons
        dom.hw.settle()
        return done

    def advance(self, ns: Any) -> Any:
        """Let ``ns`` nanoseconds pass (flush-queue timers fire; the IOMMU keeps working)."""
        return self._act(f"advance {ns} ns",
                         lambda: fq_advance(self.domain, self.count(ns, 10**10)))

    def set_paused(self, paused: bool) -> Any:
        """Pause the IOMMU (stepper mode) or let it run; un-pausing lets it catch up."""
        def run() -> str:
            for q in self.domain.hw.queues:
                was, q.paused = q.paused, bool(paused)
                if was and not paused:
                    q.run_until_idle()
            return "paused" if paused else "running"
        return self._act("IOMMU " + ("paused" if paused else "runs on its own"), run)

    def reset(self, strategy: str | None = None, api: str | None = None,
              type: str | None = None, paused: bool | None = None) -> bool:
        """A fresh domain (optionally another strategy / API / domain type); True if done."""
        strategy = strategy or self.strategy
        api = api or self.api
        dtype = type or self.domain.type
        paused = self.queue.paused if paused is None else paused
        old = (self.session, self.notes)
        try:
            self._alloc(strategy, api, dtype, paused)
        except Exception as exc:  # noqa: BLE001
            self.session, self.notes = old
            self.error = f"reset: {exc}"
            self._note(f"✗ reset — {exc}")
            self._notify()
            return False
        self.error = None
        self.log.clear()
        self._lines = 0
        self.last = "reset"
        self._note(f"reset: {self.describe()}")
        for note in self.notes:
            self._note(f"note: {note}")
        self._notify()
        return True

    def __repr__(self) -> str:
        return f"<StepperModel {self.describe()}; {len(self.log)} log lines>"


def _label(iova: Any, size: Any = False) -> str:
    """``0x0 +64K`` as the user wrote it."""
    i = iova if isinstance(iova, str) else hex(iova) if isinstance(iova, int) else repr(iova)
    return i if size is False else f"{i} +{size}"
