"""``check_strategy``: fuzz a driver strategy for use-after-unmap, under each caller pattern.

The property tests' idea (tests/test_properties.py) as a feature. For each caller pattern
(:data:`PATTERNS`, one row per default caller) hypothesis draws short random sequences of
stepper actions — map, unmap / unmap_fast / the 2017 wrappers, sync, flush-all, device DMA
reads and writes, IOVA reuse, the IOMMU consuming commands, time passing — and runs them
on a fresh domain with the IOMMU *paused*, as the stepper does: the hardware runs only when
the CPU waits for a completion or a ``consume`` step lets it, the slowest hardware there
can be, so only a real wait makes an invalidation complete. Whenever the caller believes
an unmap complete, or maps a queued IOVA again, the device touches the pages it had touched
before (recorded ``dma_read`` steps), so a surviving translation shows at once. A small
reference model (which buffers are mapped, which unmaps the caller has completed) checks
:data:`INVARIANTS`:

- ``strict-unmap``: once an unmap *and what completes it* have returned (``iommu_unmap``,
  ``iommu_unmap_fast`` + ``iommu_iotlb_sync``, the 2017 unmap + ``iommu_flush_tlb_all``,
  ``iommu_dma_unmap`` on a strict domain), no DMA to the range hits: ``"stale"`` is a
  violation, and a re-mapped IOVA translates to its new page;
- ``lazy-reuse``: on a lazy (flush-queue) domain, once a flush that started after the unmap
  has returned, the IOVA translates nothing stale, and when it is reused (``_wait_for_reuse``
  flushes first) it translates to its new page;
- ``mapped-translates``: a mapped buffer translates (hit or walk), never faults;
- ``commands-complete``: whenever an unmap completes (and after the pattern's last
  completion), every command written has been published (doorbell, kick), and at the end
  the IOMMU gets through all of them;
- ``counters-conserve``: commands by name add up to invalidations + completions + requests,
  every DMA is one hit or miss, pages mapped − unmapped is what the model holds mapped,
  API call counts match the steps, the clock never runs backwards;
- ``calls-succeed``: no valid call raises (a strategy that crashes is not safe either).

The result (:class:`CheckResult`) has ``.ok``, the broken invariant and a shrunk
counterexample: a list of :class:`Step` — a :class:`~iommu_lab.analysis.stepping.StepperModel`
method and its arguments — that :class:`Replay` plays on a stepper one click at a time.
Deterministic for a given ``seed`` (an int, or a student-ID string): hypothesis runs
from that seed, without its example database. Passing is evidence, not proof: no
counterexample in ``examples`` sequences per pattern.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, NamedTuple

from ..core.dma_iommu import fq_advance
from ..core.domain import IommuDomain
from ..drivers.registry import get_strategy
from ..errors import IommuError, einval
from ..inputs.ops import Op
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import fmt_size, parse_addr, parse_size
from .callers import get_caller
from .session import Session
from .stepping import StepperModel

PAGE = 0x1000
SLOTS = 4                      # buffers the sequences play with
SLOT_BASE = 0x10_0000          # slot k at SLOT_BASE + k * SLOT_STRIDE (one 2 MiB table)
SLOT_STRIDE = 0x1_0000
BUFFER_PAGES = (1, 2, 1, 3, 4, 1, 8, 2)  # a buffer's pages, small ones most often
MAX_PAGES = max(BUFFER_PAGES)
PADDR_BASE = 0x4000_0000       # each map of a slot gets fresh physical pages, so a reused
GEN_STRIDE = 0x100_0000        # IOVA that still translates the old page is seen as stale
MOVE_BITS = 12                 # kind (4 bits), b (4), a (2), c (2)
ADVANCE_NS = (1_000_000, 11_000_000)  # 1 ms, and past the 10 ms flush-queue timer
RW = int(IOMMU_READ | IOMMU_WRITE)
DEFAULT_EXAMPLES = 100
DEFAULT_STEPS = 12


# ---- invariants and caller patterns (tables) -----------------------------------------------

INVARIANTS: Mapping[str, str] = MappingProxyType({
    "strict-unmap": "after a strict unmap and what completes it return, no DMA to the range "
                    "hits (a stale result is DMA into freed memory)",
    "lazy-reuse": "in lazy mode no IOVA is reused (or still translated) after a covering "
                  "flush-queue flush has returned",
    "mapped-translates": "a mapped buffer translates (hit or walk)",
    "commands-complete": "every command written has been published (so it completes) "
                         "whenever an unmap completes",
    "counters-conserve": "counters conserve (commands, DMA, pages, calls, time)",
    "calls-succeed": "every valid call succeeds",
})


def needs_flush_all(dom: IommuDomain) -> str | None:
    """A flush-all caller needs the op (v5.10 VT-d, v5.15 virtio-iommu... have none)."""
    if dom.ops.flush_iotlb_all is None:
        return ("the domain has no flush_iotlb_all op, so a flush-all caller can never "
                "complete its unmaps (as in the kernel: the call reaches nothing)")
    return None


def needs_flush_queue(dom: IommuDomain) -> str | None:
    """A lazy caller needs a flush queue (DMA_FQ is strict before v4.20 SMMUv3...)."""
    if dom.fq is None:
        return "no lazy flush queue: " + ("; ".join(dom.notes) or "DMA_FQ is strict here")
    return None


def always(dom: IommuDomain) -> str | None:
    """A pattern every domain supports."""
    return None


@dataclass(frozen=True)
class CheckPattern:
    """How one caller pattern is fuzzed.

    ``map`` / ``unmap``: the stepper actions that map and unmap a buffer; ``complete``: the
    action that completes pending unmaps (None: each unmap completes itself, or on a lazy
    domain the flush queue does); ``extra``: other moves drawn (``flush_all``, ``consume``,
    ``advance``); ``params``: domain parameters for the check (a 3-slot flush queue fills
    after two lazy unmaps); ``applies(domain)``: None, or why the pattern cannot apply.
    """

    caller: str
    map: str
    unmap: str
    complete: str | None
    extra: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    applies: Callable[[IommuDomain], str | None] = always


PATTERNS: dict[str, CheckPattern] = {p.caller: p for p in (
    CheckPattern("unmap-each", "map", "unmap", None, ("flush_all", "consume")),
    CheckPattern("unmap-fast-batch", "map", "unmap_fast", "sync", ("flush_all", "consume")),
    CheckPattern("unmap-then-flush-all", "map", "unmap", "flush_all", ("consume",),
                 applies=needs_flush_all),
    CheckPattern("rfc-2017-wrappers", "map_sync", "unmap_sync", None, ("consume",)),
    CheckPattern("dma-strict", "map", "unmap", None, ("flush_all", "consume")),
    CheckPattern("dma-lazy", "map", "unmap", None, ("advance", "flush_all", "consume"),
                 {"fq_size": 3}, needs_flush_queue),
)}


# ---- steps ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One stepper click: a :class:`StepperModel` method, its arguments, and what the
    checker saw it return (a DMA's ``"hit"`` / ``"walk"`` / ``"fault"`` / ``"stale"``)."""

    action: str
    args: tuple[Any, ...] = ()
    saw: str = ""

    @property
    def call(self) -> str:
        """``unmap("0x100000", "8K")`` as one would type it on a stepper."""
        return f"{self.action}({', '.join(repr(a) for a in self.args)})"

    def __str__(self) -> str:
        return self.call + (f" → {self.saw}" if self.saw else "")


def _map_op(kind: str) -> Callable[..., Any]:
    def run(s: Session, iova: str, size: str, paddr: str) -> Any:
        return s.do(Op(kind, parse_addr(iova), parse_size(size), parse_addr(paddr), RW))
    return run


def _unmap_op(kind: str) -> Callable[..., Any]:
    def run(s: Session, iova: str, size: str) -> Any:
        return s.do(Op(kind, parse_addr(iova), parse_size(size)))
    return run


def _dma_op(write: bool) -> Callable[..., Any]:
    def run(s: Session, iova: str) -> Any:
        return s.do(Op("access", parse_addr(iova), write=write))
    return run


def _consume(s: Session, n: int) -> int:
    return sum(q.consume(n) for q in s.dom.hw.queues)


def _advance(s: Session, ns: int) -> None:
    fq_advance(s.dom, ns)


# What each stepper action does to a session: the same op as the StepperModel method of
# that name builds (the round trip is tested: tests/test_check.py).
STEP_RUNNERS: dict[str, Callable[..., Any]] = {
    "map": _map_op("map"), "map_sync": _map_op("map_sync"),
    "unmap": _unmap_op("unmap"), "unmap_fast": _unmap_op("unmap_fast"),
    "unmap_sync": _unmap_op("unmap_sync"),
    "sync": lambda s: s.do(Op("sync")), "flush_all": lambda s: s.do(Op("flush_all")),
    "dma_read": _dma_op(False), "dma_write": _dma_op(True),
    "consume": _consume, "advance": _advance,
}


# ---- the reference model ---------------------------------------------------------------------

class Life(Enum):
    """A buffer slot's state in the reference model."""

    FREE = "free"          # never mapped, or unmapped and the invalidation completed
    MAPPED = "mapped"
    PENDING = "pending"    # unmapped; the caller has not completed the invalidation yet
    QUEUED = "queued"      # unmapped on a lazy domain: waiting in the flush queue


@dataclass
class Slot:
    """One buffer: where it is, its size, its state, which of its pages the device has
    touched (they may be cached), and how its last unmap completed."""

    index: int
    pages: int = 0
    life: Life = Life.FREE
    warm: set[int] = field(default_factory=set)
    freed_by: str = ""         # the invariant a stale hit after the last unmap breaks
    queued_mark: int = 0       # fq_flushes when it was queued (lazy)
    unmapped_at: int = 0       # step number of the last unmap
    used: int = 0              # step number of the last map or unmap (recency)

    @property
    def iova(self) -> int:
        return SLOT_BASE + self.index * SLOT_STRIDE


class Move(NamedTuple):
    """One drawn move: which kind (an index into the pattern's moves) and three numbers:
    ``a`` the slot (0: the most recently used), ``b`` the buffer size or the page (even:
    from the first page on, odd: from the last page back), ``c`` write / count / time.
    All shrink toward 0, the simplest."""

    kind: int
    a: int
    b: int
    c: int

    @classmethod
    def decode(cls, bits: int) -> Move:
        """A move from one 12-bit number, the kind in the high bits (shrinks first)."""
        return cls(bits >> 8, bits >> 2 & 3, bits >> 4 & 15, bits & 3)


class Violation(Exception):
    """An invariant broke (raised inside a trial, caught by :meth:`Trial.play`)."""

    def __init__(self, invariant: str, message: str) -> None:
        super().__init__(message)
        self.invariant, self.message = invariant, message


@dataclass(frozen=True)
class Failure:
    """What a failing trial found: the steps it ran and the invariant they broke."""

    steps: tuple[Step, ...]
    invariant: str
    message: str


class Trial:
    """One random sequence on a fresh domain, checked step by step.

    Whenever unmaps complete (a slot becomes free) or a queued IOVA is mapped again, the
    device touches again the pages it had touched (``dma_read`` steps, recorded like any
    other): a stale translation is seen right where the caller believes it is gone.
    """

    def __init__(self, strategy: str, pattern: CheckPattern,
                 params: Mapping[str, Any] | None = None) -> None:
        caller = get_caller(pattern.caller)
        self.pattern = pattern
        self.params = {**(params or {}), **pattern.params}
        self.session = Session(strategy, "api-calls", dict(self.params),
                               type=caller.domain_type, api=caller.api)
        for q in self.dom.hw.queues:
            q.paused = True                      # as the stepper: the IOMMU waits to be told
        self.lazy = self.dom.fq is not None
        self.slots = [Slot(k) for k in range(SLOTS)]
        self.steps: list[Step] = []
        self.maps = self.unmaps = self.dmas = self.stale = 0
        self.last_now = 0
        self.probes: list[Slot] = []     # slots just freed: the device touches them again
        self.handlers: dict[str, Callable[[Move], None]] = {
            "map": self._map, "dma": self._dma, "unmap": self._unmap,
            "complete": self._complete, "flush_all": self._flush_all,
            "consume": self._consume, "advance": self._advance}

    @property
    def dom(self) -> IommuDomain:
        return self.session.dom

    # ---- one sequence ------------------------------------------------------------------
    def play(self, program: Sequence[Move]) -> Failure | None:
        """Run each move, then the pattern's last completion; the failure, or None if
        every invariant held."""
        try:
            for move in program:
                self.do(move)
            self.finish()
        except Violation as v:
            return Failure(tuple(self.steps), v.invariant, v.message)
        return None

    def kinds(self) -> tuple[str, ...]:
        """The moves of this pattern (hypothesis shrinks toward the first): the device's DMA
        first and twice, as it observes stale translations."""
        p = self.pattern
        return (("dma", "map", "unmap") + (("complete",) if p.complete else ()) + ("dma",)
                + p.extra)

    def do(self, move: Move) -> None:
        """One move: ``move.kind`` indexes :meth:`kinds`; a move not possible now (a DMA
        with nothing mapped yet, an unmap with nothing mapped) gives way to a map, or else
        to the first possible one."""
        kinds = self.kinds()
        for k in (move.kind % len(kinds), *range(len(kinds))):
            if self.possible(kinds[k]):
                self.handlers[kinds[k]](move)
                return

    def possible(self, kind: str) -> bool:
        """Can move ``kind`` run in the model's state?"""
        if kind == "dma":
            return any(s.pages for s in self.slots)
        need = {"map": self._mappable(), "unmap": (Life.MAPPED,),
                "complete": (Life.PENDING,)}.get(kind)
        return need is None or bool(self._slots(need))

    def _mappable(self) -> tuple[Life, ...]:
        # a lazy domain may reuse a queued IOVA (dma-iommu flushes it first); elsewhere the
        # caller must complete an unmap before it maps the IOVA again
        return (Life.FREE, Life.QUEUED) if self.lazy else (Life.FREE,)

    def _slots(self, lives: tuple[Life, ...]) -> list[Slot]:
        return [s for s in self.slots if s.life in lives]

    def _pick(self, eligible: list[Slot], a: int) -> Slot:
        """Eligible slot number ``a`` (wrapping), the most recently used first."""
        return sorted(eligible, key=lambda s: -s.used)[a % len(eligible)]

    # ---- moves -----------------------------------------------------------------------------
    def _map(self, move: Move) -> None:
        slot = self._pick(self._slots(self._mappable()), move.a)
        pages = BUFFER_PAGES[move.b % len(BUFFER_PAGES)]
        paddr = PADDR_BASE + self.maps * GEN_STRIDE + slot.index * SLOT_STRIDE
        self.run(Step(self.pattern.map, (hex(slot.iova), fmt_size(pages * PAGE), hex(paddr))))
        self.maps += 1
        reused = slot.life is Life.QUEUED  # dma-iommu flushed it before this map
        if reused:
            slot.freed_by = "lazy-reuse"
        slot.pages, slot.life, slot.used = pages, Life.MAPPED, len(self.steps)
        old, slot.warm = slot.warm, set()
        self.settle()
        if reused:  # the device touches what it had cached from the IOVA's last life
            for page in sorted(p for p in old if p < pages):
                self._touch(slot, page, False)

    def _unmap(self, move: Move) -> None:
        slot = self._pick(self._slots((Life.MAPPED,)), move.a)
        self.run(Step(self.pattern.unmap, (hex(slot.iova), fmt_size(slot.pages * PAGE))))
        self.unmaps += 1
        slot.unmapped_at = slot.used = len(self.steps)
        if self.lazy:
            slot.life, slot.queued_mark = Life.QUEUED, self.dom.stats["fq_flushes"]
        elif self.pattern.complete is not None:
            slot.life = Life.PENDING
        else:
            self._free(slot, "strict-unmap")
        self.settle()

    def _complete(self, move: Move | None = None) -> None:
        self.run(Step(self.pattern.complete or ""))
        for slot in self._slots((Life.PENDING,)):
            self._free(slot, "strict-unmap")
        self.settle()

    def _flush_all(self, move: Move) -> None:
        self.run(Step("flush_all"))
        self.settle()

    def _consume(self, move: Move) -> None:
        self.run(Step("consume", (1 + move.c % 4,)))
        self.settle()

    def _advance(self, move: Move) -> None:
        self.run(Step("advance", (ADVANCE_NS[move.c % len(ADVANCE_NS)],)))
        self.settle()

    def _dma(self, move: Move) -> None:
        slot = self._pick([s for s in self.slots if s.pages], move.a)
        page = (move.b // 2) % slot.pages
        self._touch(slot, slot.pages - 1 - page if move.b & 1 else page, bool(move.c & 1))

    def _touch(self, slot: Slot, page: int, write: bool) -> None:
        """The device reads or writes one page of ``slot``; judge what it got."""
        iova = slot.iova + page * PAGE
        got = self.run(Step("dma_write" if write else "dma_read", (hex(iova),)))
        self.dmas += 1
        self.stale += got == "stale"
        if slot.life is Life.MAPPED:
            slot.warm.add(page)
        self.settle()  # a flush-queue timer may have fired before the access
        self._judge(slot, iova, got)

    # ---- running and checking ----------------------------------------------------------------
    def run(self, step: Step) -> Any:
        """Run one step on the session, record it with what it returned."""
        try:
            got = STEP_RUNNERS[step.action](self.session, *step.args)
        except IommuError as exc:
            self.steps.append(step)
            raise Violation("calls-succeed", f"{step.call} failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a strategy's own code may raise anything
            self.steps.append(step)
            raise Violation("calls-succeed", f"{step.call} raised {type(exc).__name__}: "
                                             f"{exc}") from None
        self.steps.append(Step(step.action, step.args, got if isinstance(got, str) else ""))
        return got

    def _free(self, slot: Slot, how: str) -> None:
        """The caller now believes ``slot``'s pages are gone: free it, and let the device
        touch again what it had touched (at :meth:`settle`)."""
        slot.life, slot.freed_by = Life.FREE, how
        self.probes.append(slot)

    def settle(self) -> None:
        """After a step: lazy slots whose covering flush has returned are free; counters
        must conserve; a completion must leave nothing unpublished; freed slots are
        touched again by the device."""
        flushes = self.dom.stats["fq_flushes"]
        for slot in self._slots((Life.QUEUED,)):
            if flushes > slot.queued_mark:
                self._free(slot, "lazy-reuse")
        self._conserve()
        if self.probes:
            self._published()
        while self.probes:
            slot = self.probes.pop(0)
            warm, slot.warm = sorted(slot.warm), set()
            for page in warm:
                if slot.life is Life.FREE:
                    self._touch(slot, page, False)

    def _judge(self, slot: Slot, iova: int, got: str) -> None:
        n = len(self.steps)
        if slot.life is Life.MAPPED:
            if got == "stale":
                raise Violation(slot.freed_by or "strict-unmap",
                                f"step {n}: DMA to {iova:#x} used the translation of the page "
                                f"unmapped at step {slot.unmapped_at}: the IOVA was mapped "
                                "again but the IOTLB still held the old page (use after unmap)")
            if got == "fault":
                raise Violation("mapped-translates",
                                f"step {n}: DMA to the mapped {iova:#x} faulted")
        elif slot.life is Life.FREE and got != "fault":
            done = ("and a covering flush-queue flush had" if slot.freed_by == "lazy-reuse"
                    else f"and {self.pattern.complete}() had" if self.pattern.complete
                    else "had")
            raise Violation(slot.freed_by,
                            f"step {n}: DMA to {iova:#x} returned {got!r} although the "
                            f"{self.pattern.unmap} at step {slot.unmapped_at} {done} returned: "
                            "the device reached memory the OS believes is free (use after "
                            "unmap)")

    def _published(self) -> None:
        """At a completion, every command written has been published (doorbell / kick)."""
        for q in self.dom.hw.queues:
            unpublished = q.state().unpublished
            if unpublished:
                raise Violation(
                    "commands-complete",
                    f"after step {len(self.steps)}, which completed an unmap, {unpublished} "
                    "command(s) were written to the queue but never published (no doorbell "
                    "or kick): the IOMMU will never execute them")

    def _conserve(self) -> None:
        st, dom = self.dom.stats, self.dom
        problems = []
        by_name = sum(v for k, v in st.items() if k.startswith("cmd:"))
        if by_name != st["inv_cmds"] + st["sync_cmds"] + st["requests"]:
            problems.append(f"commands by name {by_name} != inv_cmds + sync_cmds + requests "
                            f"{st['inv_cmds'] + st['sync_cmds'] + st['requests']}")
        if st["dma_accesses"] != self.dmas or st["stale_hits"] != self.stale:
            problems.append(f"dma_accesses/stale_hits {st['dma_accesses']}/{st['stale_hits']}"
                            f" != {self.dmas}/{self.stale} DMA steps/stale results")
        if st["iotlb_hits"] + st["iotlb_misses"] != st["dma_accesses"]:
            problems.append("iotlb_hits + iotlb_misses != dma_accesses")
        mapped = sum(s.pages for s in self._slots((Life.MAPPED,)))
        if st["pages_mapped"] - st["pages_unmapped"] != mapped:
            problems.append(f"pages_mapped - pages_unmapped = "
                            f"{st['pages_mapped'] - st['pages_unmapped']}, model {mapped}")
        if (st["map_calls"], st["unmap_calls"]) != (self.maps, self.unmaps):
            problems.append(f"map_calls/unmap_calls {st['map_calls']}/{st['unmap_calls']} != "
                            f"{self.maps}/{self.unmaps} steps")
        if dom.clock.now < self.last_now:
            problems.append(f"the clock ran backwards ({self.last_now} -> {dom.clock.now} ns)")
        self.last_now = dom.clock.now
        if problems:
            raise Violation("counters-conserve",
                            f"after step {len(self.steps)}: " + "; ".join(problems))

    def finish(self) -> None:
        """The caller's last completion (a sync, a flush-all, the flush-queue timer), then
        every command written must have been published, and the IOMMU must get through
        them all."""
        if self._slots((Life.PENDING,)):
            self._complete()
        if self._slots((Life.QUEUED,)):
            self.run(Step("advance", (ADVANCE_NS[-1],)))
            self.settle()
        self._published()
        for q in self.dom.hw.queues:
            q.run_until_idle()
            if q.state().pending:
                raise Violation("commands-complete",
                                f"after step {len(self.steps)}, {q.state().pending} "
                                "published command(s) never completed")


# ---- the search --------------------------------------------------------------------------------

class _Found(Exception):
    """Stops hypothesis at a failing sequence (it then shrinks it)."""


def seed_value(seed: Any, *salt: str) -> int:
    """A 64-bit hypothesis seed from an int or a string (a student ID), stable across
    processes (``hash()`` of a string is not); ``salt`` varies it per caller pattern."""
    if isinstance(seed, bool) or not isinstance(seed, int | str):
        raise einval(f"seed must be an int or a string (e.g. a student ID), not {seed!r}")
    digest = hashlib.sha256(repr((seed, *salt)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def search(strategy: str, pattern: CheckPattern, examples: int, seed: Any,
           steps: int, params: Mapping[str, Any] | None = None) -> Failure | None:
    """Run hypothesis on one pattern; the shrunk failure, or None if none was found."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hyp_seed
    from hypothesis import strategies as st

    found: list[Failure] = []

    move = st.integers(0, (1 << MOVE_BITS) - 1).map(Move.decode)  # one draw per move

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
              verbosity=Verbosity.quiet, report_multiple_bugs=False, print_blob=False)
    @given(st.lists(move, min_size=min(3, steps), max_size=steps))
    def trial(program: list[Move]) -> None:
        failure = Trial(strategy, pattern, params).play(program)
        if failure is not None:
            found[:] = [failure]
            raise _Found

    try:
        hyp_seed(seed_value(seed, pattern.caller))(trial)()
    except _Found:
        return found[0]
    return None


# ---- results -----------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class Counterexample:
    """A shrunk failing sequence, replayable on a stepper made with :meth:`stepper_args`."""

    strategy: str
    caller: str
    api: str
    type: str
    params: Mapping[str, Any]
    steps: tuple[Step, ...]
    invariant: str
    message: str

    def stepper_args(self) -> dict[str, Any]:
        """Keyword arguments for ``StepperModel(**...)`` / ``ui.Stepper(**...)``: the same
        strategy, API, domain type and parameters, IOMMU paused."""
        return {"strategy": self.strategy, "api": self.api, "type": self.type,
                "paused": True, **self.params}

    def model(self) -> StepperModel:
        """A fresh stepper model to replay the steps on."""
        return StepperModel(**self.stepper_args())

    def replay(self, target: Any = None) -> Replay:
        """A :class:`Replay` of the steps on ``target`` (a fresh StepperModel or ui.Stepper;
        default: a new model)."""
        return Replay(self, target)

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        lines = [f"counterexample ({self.caller}: {self.type} domain, {self.api} API, "
                 f"{len(self.steps)} steps) — {self.invariant}:"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        lines.append(f"  {self.message}")
        return "\n".join(lines)


@dataclass(frozen=True)
class PatternResult:
    """The check of one caller pattern: passed (``ok``), failed, or not applicable."""

    caller: str
    ok: bool | None
    examples: int
    counterexample: Counterexample | None = None
    skipped: str = ""

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return "n/a"
        return "ok" if self.ok else "UNSAFE"


@dataclass(frozen=True, repr=False)
class CheckResult:
    """``check_strategy``'s answer: per caller pattern, and the shortest counterexample."""

    strategy: str
    examples: int
    seed: Any
    steps: int
    patterns: tuple[PatternResult, ...]

    @property
    def ok(self) -> bool:
        """No pattern found a counterexample."""
        return all(p.ok is not False for p in self.patterns)

    @property
    def counterexample(self) -> Counterexample | None:
        """The shortest counterexample over the failing patterns (None when ok)."""
        found = [p.counterexample for p in self.patterns if p.counterexample is not None]
        return min(found, key=lambda c: len(c.steps)) if found else None

    @property
    def invariant(self) -> str | None:
        """The invariant the shortest counterexample breaks (None when ok)."""
        cx = self.counterexample
        return cx.invariant if cx is not None else None

    @property
    def unsafe_callers(self) -> list[str]:
        """The caller patterns with a counterexample."""
        return [p.caller for p in self.patterns if p.ok is False]

    def for_caller(self, caller: str) -> PatternResult | None:
        """The result of one caller pattern (None if it was not checked)."""
        return next((p for p in self.patterns if p.caller == caller), None)

    def replay(self, target: Any = None) -> Replay:
        """Replay the shortest counterexample on a stepper (EINVAL when there is none)."""
        cx = self.counterexample
        if cx is None:
            raise einval(f"{self.strategy}: no counterexample to replay (the check passed)")
        return cx.replay(target)

    def table(self) -> Any:
        """One row per caller pattern: verdict, invariant, steps, note."""
        import pandas as pd

        return pd.DataFrame([{
            "caller": p.caller, "result": p.verdict, "examples": p.examples,
            "invariant": p.counterexample.invariant if p.counterexample else "",
            "steps": len(p.counterexample.steps) if p.counterexample else 0,
            "note": p.skipped} for p in self.patterns])

    def __repr__(self) -> str:
        verdict = "no counterexample found" if self.ok else "UNSAFE"
        lines = [f"check_strategy({self.strategy!r}): {verdict} — {self.examples} sequences "
                 f"of up to {self.steps} steps per caller pattern, seed {self.seed!r}"]
        for p in self.patterns:
            what = (p.skipped if p.ok is None else "" if p.ok else
                    f"{p.counterexample.invariant} in {len(p.counterexample.steps)} steps")
            lines.append(f"  {p.caller:<22} {p.verdict:<7} {what}".rstrip())
        if self.counterexample is not None:
            lines.append(str(self.counterexample))
        return "\n".join(lines)


def check_strategy(name: str, examples: int = DEFAULT_EXAMPLES, seed: Any = 0,
                   callers: Sequence[str] | None = None, steps: int = DEFAULT_STEPS,
                   params: Mapping[str, Any] | None = None) -> CheckResult:
    """Fuzz strategy ``name`` under each caller pattern (default: all of :data:`PATTERNS`).

    ``examples``: random sequences per pattern; ``seed``: an int or a string (a student ID);
    ``steps``: the most moves per sequence; ``params``: domain parameters, as for
    ``iommu_domain_alloc`` (e.g. ``{"sync_every": 2}``). Unknown names, parameters or bad
    numbers raise EINVAL.
    """
    strategy = get_strategy(name).name
    examples = _count(examples, "examples", 100_000)
    steps = _count(steps, "steps", 100)
    seed_value(seed)
    chosen = list(PATTERNS) if callers is None else list(callers)
    for c in chosen:
        get_caller(c)
        if c not in PATTERNS:
            raise einval(f"caller {c!r} has no check pattern; checked: {', '.join(PATTERNS)}")
    return CheckResult(strategy, examples, seed, steps,
                       tuple(_check_pattern(strategy, PATTERNS[c], examples, seed, steps,
                                            params) for c in chosen))


def _check_pattern(strategy: str, pattern: CheckPattern, examples: int, seed: Any,
                   steps: int, params: Mapping[str, Any] | None) -> PatternResult:
    probe = Trial(strategy, pattern, params)
    why = pattern.applies(probe.dom)
    if why is not None:
        return PatternResult(pattern.caller, None, 0, skipped=why)
    failure = search(strategy, pattern, examples, seed, steps, params)
    if failure is None:
        return PatternResult(pattern.caller, True, examples)
    cx = Counterexample(strategy, pattern.caller, probe.dom.api.name, probe.dom.type,
                        MappingProxyType(dict(probe.params)), failure.steps,
                        failure.invariant, failure.message)
    return PatternResult(pattern.caller, False, examples, cx)


def _count(value: Any, what: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise einval(f"{what} must be a whole number in 1 .. {most:,}, not {value!r}")
    return value


# ---- replay on a stepper -----------------------------------------------------------------------

class Replay:
    """Plays a counterexample on a stepper one click at a time: ``step()`` per click."""

    def __init__(self, cx: Counterexample, target: Any = None) -> None:
        self.cx = cx
        self.model = cx.model() if target is None else _model_of(target)
        if (self.model.strategy, self.model.api, self.model.domain.type) != (
                cx.strategy, cx.api, cx.type):
            raise einval(f"this counterexample needs a stepper on {cx.strategy} "
                         f"(api={cx.api}, type={cx.type}); make one with "
                         "Stepper(**counterexample.stepper_args())")
        self.position = 0

    @property
    def done(self) -> bool:
        """Every step has been played."""
        return self.position >= len(self.cx.steps)

    def step(self) -> str:
        """Play the next step on the stepper; returns a line saying what it did."""
        n = len(self.cx.steps)
        if self.done:
            return f"done: all {n} steps played. {self.cx.message}"
        s = self.cx.steps[self.position]
        got = getattr(self.model, s.action)(*s.args)
        self.position += 1
        line = f"{self.position}/{n} {s.call}"
        if s.saw:
            line += f" → {got}" + ("" if got == s.saw else f" (the checker saw {s.saw})")
        if self.model.error:
            line += f" ✗ {self.model.error}"
        if self.done:
            line += f"\n✗ {self.cx.invariant}: {self.cx.message}"
        return line

    def run(self) -> list[str]:
        """Play every remaining step; one line each."""
        out = []
        while not self.done:
            out.append(self.step())
        return out

    def __repr__(self) -> str:
        return f"<Replay {self.position}/{len(self.cx.steps)} steps of {self.cx.strategy}>"


def _model_of(target: Any) -> StepperModel:
    """A StepperModel, or the model a ui.Stepper wraps (``.model``)."""
    model = target if isinstance(target, StepperModel) else getattr(target, "model", None)
    if not isinstance(model, StepperModel):
        raise einval(f"replay needs a StepperModel or a ui.Stepper, not {target!r}")
    return model


__all__ = ["INVARIANTS", "PATTERNS", "CheckPattern", "CheckResult", "Counterexample",
           "PatternResult", "Replay", "Step", "check_strategy"]
