"""User-defined driver strategies: write one in a notebook cell, register it under a name.

A strategy is a registry row (:class:`~iommu_lab.drivers.registry.Strategy`) whose driver
class fills the ops table (``IommuDomainOps``, the kernel's ``iommu_domain_ops``) that the
core calls. There are two ways to write one:

1. subclass a shipped driver (:func:`driver_class`) and override the ops you want::

       class RangeOrAll(il.driver_class("smmuv3-v5.4")):
           def iotlb_sync(self, dom, gather):      # above 16 pages: one TLBI_NH_ASID
               big = il.gather_span(dom, gather)[1] > 16 * 4096
               return self.tlb_flush_all() if big else super().iotlb_sync(dom, gather)
       il.register_strategy("range-or-all", RangeOrAll)

2. give plain functions for single ops (the first argument is the driver, as ``self``), on
   a shipped ``base`` or from scratch (``kernel=`` then names the core's era, and ``map`` /
   ``unmap`` / ``iotlb_sync`` are required; :func:`pgtable_map` / :func:`pgtable_unmap` are
   the io-pgtable glue every driver uses)::

       il.register_strategy("no-flush-all", base="smmuv3-v5.4", flush_iotlb_all=None)
       il.register_strategy("mine", kernel="v5.4", map=pgtable_map, unmap=pgtable_unmap,
                            iotlb_sync=my_sync)

:func:`register_strategy` checks the definition — the name, every op's signature, the
kernel era, that ``domain_ops()`` really uses the ops the class defines, and a smoke
``iommu_map`` / ``iommu_unmap`` of one page — and raises ``IommuError(EINVAL)`` naming the
problem, leaving the registry as it was. Afterwards the name works wherever a shipped one
does: ``iommu_domain_alloc``, ``compare()``, ``replay()``, the stepper and the dashboard's
pickers (made after registering), ``strategies()`` (``user_defined`` True) and
``check_strategy()``. Registrations live in this Python process only (a process-pool
executor's workers do not see them).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from dataclasses import replace as replace_row
from itertools import count
from typing import Any

from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import IommuIotlbGather
from ..errors import IommuError, einval
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_4K
from .base import Driver
from .registry import (
    LPAE_4K,
    STRATEGIES,
    Strategy,
    add_strategy,
    get_strategy,
    remove_strategy,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,39}$")
SMOKE_IOVA, SMOKE_PADDR = 0x10_0000, 0x4000_0000


@dataclass(frozen=True)
class OpSpec:
    """One op a strategy may define: the name a user passes, the driver method that
    implements it, its parameters after the driver (``self``), and the ``IommuDomainOps``
    field it fills (None: an io-pgtable flush op or a driver hook)."""

    name: str
    method: str
    params: tuple[str, ...]
    table_field: str | None
    required: bool
    kernel: str


OP_SPECS: dict[str, OpSpec] = {s.name: s for s in (
    OpSpec("map", "map_pages", ("dom", "iova", "paddr", "pgsize", "pgcount", "prot"), "map",
           True, "->map_pages (->map before v5.15): install PTEs, return bytes mapped"),
    OpSpec("unmap", "unmap_pages", ("dom", "iova", "pgsize", "pgcount", "gather"), "unmap",
           True, "->unmap_pages: clear PTEs (gather or invalidate), return bytes unmapped"),
    OpSpec("iotlb_sync", "iotlb_sync", ("dom", "gather"), "iotlb_sync", False,
           "->iotlb_sync: invalidate what the gather holds and wait for completion"),
    OpSpec("flush_iotlb_all", "flush_iotlb_all", ("dom",), "flush_iotlb_all", False,
           "->flush_iotlb_all: drop the whole domain's TLB (the flush queue's callback)"),
    OpSpec("iotlb_sync_map", "iotlb_sync_map", ("dom", "iova", "size"), "iotlb_sync_map",
           False, "->iotlb_sync_map (v5.15+): invalidate after map (caching mode / NpCache)"),
    OpSpec("iotlb_range_add", "iotlb_range_add", ("dom", "iova", "size"), "iotlb_range_add",
           False, "->iotlb_range_add (v4.14-v5.3): note a range to flush at the next sync"),
    OpSpec("tlb_add_page", "tlb_add_page", ("gather", "iova", "granule"), None, False,
           "io-pgtable iommu_flush_ops.tlb_add_page: a leaf was cleared"),
    OpSpec("tlb_flush_walk", "tlb_flush_walk", ("iova", "size", "granule"), None, False,
           "io-pgtable iommu_flush_ops.tlb_flush_walk: a table page is about to be freed"),
    OpSpec("tlb_sync", "tlb_sync", (), None, False,
           "io-pgtable tlb_sync: wait for what was issued (<= v4.14: after every unmap)"),
    OpSpec("tlb_flush_all", "tlb_flush_all", (), None, False,
           "invalidate the whole context and wait (what the 2017 flush-all means)"),
    OpSpec("forces_strict", "forces_strict", (), None, False,
           "why the driver refuses a lazy flush queue (a string), or None"),
)}
METHOD_SPECS = {s.method: s for s in OP_SPECS.values()}
SCRATCH_OPS = ("map", "unmap", "iotlb_sync")  # what a table from scratch must define
_tmp_names = count()


# ---- helpers for writing a strategy in a few lines ----------------------------------------

def driver_class(name: str) -> type[Driver]:
    """The driver class of strategy ``name`` (shipped or user-defined), to subclass."""
    return get_strategy(name).driver


def gather_span(dom: IommuDomain, gather: IommuIotlbGather) -> tuple[int, int]:
    """(start, size in bytes) of what ``gather`` holds, whatever the domain era's ``end``
    convention (exclusive in v5.4, inclusive from v5.10); (0, 0) for an empty gather."""
    return dom.core.gather_rules().span(gather)


def pgtable_map(drv: Driver, dom: IommuDomain, iova: int, paddr: int, pgsize: int,
                pgcount: int, prot: int) -> int:
    """``map`` op from scratch: install leaves in io-pgtable-arm (no TLB maintenance)."""
    return Driver.map_pages(drv, dom, iova, paddr, pgsize, pgcount, prot)


def pgtable_unmap(drv: Driver, dom: IommuDomain, iova: int, pgsize: int, pgcount: int,
                  gather: IommuIotlbGather) -> int:
    """``unmap`` op from scratch: clear leaves; io-pgtable reports each through the
    driver's ``tlb_add_page`` / ``tlb_flush_walk`` (nothing is invalidated by default)."""
    return Driver.unmap_pages(drv, dom, iova, pgsize, pgcount, gather)


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line ("" for None): a row's summary."""
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n")[0].split())


# ---- registration --------------------------------------------------------------------------

def register_strategy(name: str, driver: type[Driver] | None = None, *,
                      base: str | None = None, kernel: str | None = None,
                      hardware: str | None = None, summary: str | None = None,
                      source: str | None = None, pgsize_bitmap: int | None = None,
                      supports_fq: bool | None = None, sync_on_unmap: bool | None = None,
                      replace: bool = False, **ops: Callable[..., Any] | None) -> Strategy:
    """Register a user-defined strategy under ``name``; returns its registry row.

    ``driver``: a driver class (usually a subclass of :func:`driver_class`); or ``base``: a
    strategy whose driver the ``ops`` functions override; or neither: the ops table from
    scratch on the do-nothing :class:`~iommu_lab.drivers.base.Driver` (``kernel`` needed).
    ``ops`` are keyword functions named as in :data:`OP_SPECS` (``None`` removes an
    optional op, as a driver without ``flush_iotlb_all``). The row's kernel, hardware, page
    sizes and lazy support default to the nearest registered ancestor's.
    ``replace=True`` re-registers a user-defined name (re-running a notebook cell).
    Raises ``IommuError(EINVAL)`` naming the problem; the registry is then unchanged.
    """
    _check_name(name, replace)
    cls = _driver_for(name, driver, base, ops)
    parent = _nearest_row(cls)
    row = _row(name, cls, parent, kernel, hardware, summary, source, pgsize_bitmap,
               supports_fq, sync_on_unmap)
    _check_class(cls)
    old = STRATEGIES.get(name)
    add_strategy(row)
    try:
        _smoke(row)
    except BaseException:
        remove_strategy(name)
        if old is not None:
            add_strategy(old)
        raise
    return row


def unregister_strategy(name: str) -> None:
    """Remove a user-defined strategy (shipped ones stay); EINVAL otherwise."""
    row = get_strategy(name)
    if not row.user_defined:
        raise einval(f"{name!r} is a shipped strategy; only user-defined ones can be removed")
    remove_strategy(name)


def user_strategies() -> list[str]:
    """Names of the user-defined strategies registered in this process."""
    return [s.name for s in STRATEGIES.values() if s.user_defined]


@contextmanager
def scratch_strategy(driver: type[Driver], **row: Any) -> Iterator[str]:
    """Register ``driver`` under a fresh name for the duration of a ``with`` block (exercise
    solvers and tests that must leave the registry as they found it); yields the name."""
    name = f"scratch-{next(_tmp_names)}"
    while name in STRATEGIES:
        name = f"scratch-{next(_tmp_names)}"
    register_strategy(name, driver, **row)
    try:
        yield name
    finally:
        STRATEGIES.pop(name, None)


# ---- checks -------------------------------------------------------------------------------

def _check_name(name: Any, replace: bool) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise einval(f"strategy name {name!r} must be 1-40 letters, digits or . _ + - "
                     "(starting with a letter or digit), e.g. 'my-range-or-all'")
    row = STRATEGIES.get(name)
    if row is None:
        return
    if not row.user_defined:
        raise einval(f"strategy name {name!r} clashes with a shipped strategy; choose another")
    if not replace:
        raise einval(f"strategy name {name!r} is already registered (user-defined); pass "
                     "replace=True to redefine it, or unregister_strategy() it first")


def _driver_for(name: str, driver: Any, base: str | None,
                ops: dict[str, Any]) -> type[Driver]:
    """The driver class: ``driver``, or a subclass of it / of ``base`` / of ``Driver``
    whose methods are the ``ops`` functions."""
    if driver is not None and base is not None:
        raise einval("give either a driver class or base=<strategy>, not both")
    if driver is not None and not (isinstance(driver, type) and issubclass(driver, Driver)):
        raise einval(f"driver must be a driver class (e.g. a subclass of "
                     f"il.driver_class('smmuv3-v5.4')), not {driver!r}")
    unknown = sorted(set(ops) - set(OP_SPECS))
    if unknown:
        raise einval(f"unknown op(s) {', '.join(unknown)}; known: {', '.join(OP_SPECS)}")
    parent: type[Driver] = driver or (get_strategy(base).driver if base is not None else Driver)
    if driver is None and base is None:
        missing = [op for op in SCRATCH_OPS if ops.get(op) is None]
        if missing:
            raise einval(f"an ops table from scratch needs {', '.join(missing)} (missing); "
                         "or start from a shipped driver with base='smmuv3-v5.4'")
    if not ops:
        return parent
    for op, fn in ops.items():
        _check_op(OP_SPECS[op], fn, "")
    return _with_ops(name, parent, ops)


def _check_op(spec: OpSpec, fn: Any, where: str) -> None:
    """``fn`` must be callable with (driver, *spec.params); None only for optional ops."""
    want = f"{spec.name}(drv, {', '.join(spec.params)})".replace(", )", ")")
    if fn is None:
        if spec.required:
            raise einval(f"{where}{spec.name} is required: every driver maps and unmaps")
        return
    if not callable(fn):
        raise einval(f"{where}{spec.name} must be a function {want}, not {fn!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to inspect
    try:
        sig.bind(*(("drv",) + spec.params))
    except TypeError:
        raise einval(f"{where}{spec.name} has the wrong signature {_name(fn)}{sig}: "
                     f"expected {want} ({spec.kernel})") from None


def _name(fn: Any) -> str:
    """A function's name for a message (a partial or a callable object has none)."""
    return getattr(fn, "__name__", type(fn).__name__)


def _with_ops(name: str, parent: type[Driver], ops: dict[str, Any]) -> type[Driver]:
    """A subclass of ``parent`` whose methods are the ``ops`` functions, and whose ops table
    is the parent's with those fields replaced (or removed, for None)."""
    ns: dict[str, Any] = {"name": name, "__module__": __name__,
                          "__doc__": f"user-defined {name}: {parent.__name__} with "
                                     f"{', '.join(ops)} replaced"}
    table: dict[str, str | None] = {}
    for op, fn in ops.items():
        spec = OP_SPECS[op]
        ns[spec.method] = fn
        if spec.table_field is not None:
            table[spec.table_field] = None if fn is None else spec.method

    def domain_ops(self: Driver) -> IommuDomainOps:
        ops_table = parent.domain_ops(self)
        return replace_row(ops_table, **{f: None if m is None else getattr(self, m)
                                         for f, m in table.items()})

    ns["domain_ops"] = domain_ops
    safe = re.sub(r"\W", "_", name)
    return type(f"User_{safe}", (parent,), ns)


def _nearest_row(cls: type[Driver]) -> Strategy | None:
    """The registered strategy whose driver is ``cls``'s nearest ancestor (or itself)."""
    for klass in cls.__mro__:
        for row in STRATEGIES.values():
            if row.driver is klass:
                return row
    return None


def _row(name: str, cls: type[Driver], parent: Strategy | None, kernel: str | None,
         hardware: str | None, summary: str | None, source: str | None,
         pgsize_bitmap: int | None, supports_fq: bool | None,
         sync_on_unmap: bool | None) -> Strategy:
    """The registry row, defaults from ``parent``; EINVAL for a bad kernel or bitmap."""
    if kernel is None and parent is None:
        raise einval("kernel= is required for an ops table from scratch (the core's rules "
                     "for iommu_pgsize and the gather come from it), e.g. kernel='v5.4'")
    bitmap = pgsize_bitmap if pgsize_bitmap is not None else (
        parent.pgsize_bitmap if parent is not None else LPAE_4K)  # io-pgtable-arm, 4K granule
    if isinstance(bitmap, bool) or not isinstance(bitmap, int) or not bitmap & SZ_4K:
        raise einval(f"pgsize_bitmap {bitmap!r} must be an int including 4K (0x1000)")
    doc = first_paragraph(vars(cls).get("__doc__"))
    based = f" on {parent.name}" if parent is not None else " (ops table from scratch)"
    try:
        return Strategy(
            name=name, hardware=hardware or (parent.hardware if parent else "user-defined"),
            kernel=kernel or parent.kernel,  # type: ignore[union-attr]
            summary=summary or doc or f"user-defined{based}",
            source=source or f"user-defined{based}", driver=cls, pgsize_bitmap=bitmap,
            supports_fq=bool(parent.supports_fq if supports_fq is None and parent
                             else supports_fq),
            sync_on_unmap=bool(parent.sync_on_unmap if sync_on_unmap is None and parent
                               else sync_on_unmap),
            user_defined=True)
    except IommuError as exc:
        raise einval(f"strategy {name!r}: {exc.strerror}") from None


def _user_parts(cls: type[Driver]) -> list[type]:
    """The classes of ``cls``'s MRO that no shipped strategy uses (the user's code)."""
    shipped = {row.driver for row in STRATEGIES.values() if not row.user_defined}
    out = []
    for klass in cls.__mro__:
        if klass in shipped or klass is Driver or klass is object:
            break
        out.append(klass)
    return out


def _check_class(cls: type[Driver]) -> None:
    """Every op the user's classes define has the right shape (EINVAL naming it)."""
    for klass in _user_parts(cls):
        for attr, value in vars(klass).items():
            spec = METHOD_SPECS.get(attr)
            if spec is not None:
                fn = value.__func__ if isinstance(value, staticmethod | classmethod) else value
                _check_op(spec, fn, f"{klass.__name__}.")
    params = inspect.getattr_static(cls, "params")
    if not isinstance(params, dict):
        raise einval(f"{cls.__name__}.params must be a dict of domain parameters and "
                     f"defaults, not {params!r}")


def _check_table(row: Strategy, dom: IommuDomain) -> None:
    """An op the user's classes define must be the one ``domain_ops()`` hands the core."""
    table = {f.name: getattr(dom.ops, f.name) for f in fields(dom.ops)}
    defined = {attr for klass in _user_parts(row.driver) for attr in vars(klass)}
    for attr in sorted(defined):
        spec = METHOD_SPECS.get(attr)
        if spec is None or spec.table_field is None:
            continue
        want = inspect.getattr_static(row.driver, attr)
        got = table[spec.table_field]
        if getattr(got, "__func__", got) is not want:
            raise einval(
                f"{row.driver.__name__} defines {attr}, but its domain_ops() does not put it "
                f"in the ops table, so the core would never call it: return "
                f"dataclasses.replace(super().domain_ops(), {spec.table_field}=self.{attr})")


def _smoke(row: Strategy) -> None:
    """Build a domain (UNMANAGED, and DMA_FQ when lazy) and map/unmap one page: anything
    that fails becomes EINVAL now rather than a traceback later."""
    from ..core.iommu import iommu_map, iommu_unmap
    from .registry import iommu_domain_alloc

    what = "building a domain"
    try:
        dom = iommu_domain_alloc(row.name)
        if not isinstance(dom.ops, IommuDomainOps) or not callable(dom.ops.map) \
                or not callable(dom.ops.unmap):
            raise einval("domain_ops() must return an IommuDomainOps with map and unmap")
        _check_table(row, dom)
        what = "a smoke test (iommu_map then iommu_unmap of 4K)"
        iommu_map(dom, SMOKE_IOVA, SMOKE_PADDR, SZ_4K, IOMMU_READ | IOMMU_WRITE)
        got = iommu_unmap(dom, SMOKE_IOVA, SZ_4K)
        if got != SZ_4K:
            raise einval(f"iommu_unmap of a mapped 4K page returned {got!r}, not 4096: the "
                         "unmap op must return the bytes it unmapped")
        if row.supports_fq:
            what = "building a DMA_FQ (lazy) domain"
            iommu_domain_alloc(row.name, type="DMA_FQ")
    except IommuError as exc:
        raise einval(f"strategy {row.name!r}: {what} failed: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - user code: any failure is a bad definition
        raise einval(f"strategy {row.name!r}: {what} raised {type(exc).__name__}: {exc}") \
            from exc


__all__ = ["OP_SPECS", "driver_class", "gather_span", "pgtable_map", "pgtable_unmap",
           "register_strategy", "scratch_strategy", "unregister_strategy", "user_strategies"]
