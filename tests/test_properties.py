"""Property-based tests (DESIGN §8): the core + page table against a simple reference model.

The model is a dict ``page -> (paddr, prot)`` plus, per 2 MiB region, what the level-2
entry of the LPAE table holds (``"block"``, ``"table"`` or nothing). The kernel rules it
follows, written independently of the package:

- core chunking: ``iommu_pgsize`` (L4.13 iommu.c; counted from v5.15, L5.15), one driver
  call per chunk, the unmap loop advancing by what the driver *returned* and stopping at
  the first 0 (§2.1);
- SMMU (io-pgtable-arm, L5.4): a chunk the size of an entry clears a leaf or frees a
  whole table; a smaller one inside a block splits it (≤ v6.12);
- VT-d (L5.10 ``intel_iommu_unmap``): the size is raised to the span of the level
  ``pfn_to_dma_pte`` stops at — a large page, or the empty entry of a hole ("unmap more
  than the size argument") — and that size is returned, never 0;
- AMD (L5.10 ``iommu_unmap_page``, L5.15 ``iommu_v1_unmap_page``): step through the range by
  what ``fetch_pte`` finds (a page, a large page, or a hole's level span), counting every
  step, so the result is never 0; v5.15 AMD has only ``.unmap``: one page per call.

Invariants: leaves and ``iova_to_phys`` match the model; every IOTLB entry agrees with the
model (strict unmap-each usage: "no IOTLB entry translates the unmapped range"), so
``dma_access`` never returns "stale"; failed calls change nothing.
"""

from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import iommu_lab as il
from iommu_lab.core.era import pgsize_counted, pgsize_single
from iommu_lab.errors import EEXIST, EINVAL, IommuError

SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30
WINDOW = 64 << 20                       # IOVA window 0 .. 64 MiB
PAGES = WINDOW // SZ_4K
LPAE = SZ_4K | SZ_2M | SZ_1G
ALL_POW2 = ~0xFFF & ((1 << 64) - 1)     # INTEL_IOMMU_PGSIZES (L4.13 intel-iommu.c)
AMD = ALL_POW2 & ~(2 << 38)             # AMD_IOMMU_PGSIZES: no 512G pages (L4.13)
RW = int(il.IOMMU_READ | il.IOMMU_WRITE)
RO = int(il.IOMMU_READ)
PADDR_BASE = 0x40_0000_0000

# strategy -> (pgsize_bitmap, counted iommu_pgsize?, driver flavour)
STRICT = {
    "smmuv3-v5.4": (LPAE, False, "io-pgtable"),
    "smmuv3-v4.14": (LPAE, False, "io-pgtable"),
    "vtd-psi": (ALL_POW2, False, "vtd"),
    "amd-range": (AMD, True, "amd"),
}
ONE_PAGE_PER_CALL = {"vtd-psi", "amd-range"}    # only .map/.unmap (L5.10, L5.15)
SPAN_512G = 1 << 39                             # an empty top-level entry (ias 40)

PROFILE = os.environ.get("IOMMU_LAB_HYPOTHESIS", "ci")
settings.register_profile("ci", max_examples=150, stateful_step_count=30, deadline=None,
                          derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=2000, stateful_step_count=50,
                          deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
SETTINGS = settings.get_profile(PROFILE)


# ---- the kernel rules, independently -----------------------------------------------------

@functools.cache
def sizes_of(bitmap: int) -> tuple[int, ...]:
    return tuple(1 << j for j in range(64) if bitmap >> j & 1)


def ref_pgsize(bitmap: int, iova: int, paddr: int, size: int, counted: bool) -> tuple[int, int]:
    """L4.13 rule (count 1), or L5.15's count bounded by the next size's boundary."""
    addr = iova | paddr
    pg = max(p for p in sizes_of(bitmap) if p <= size and (addr == 0 or addr % p == 0))
    if not counted:
        return pg, 1
    larger = [p for p in sizes_of(bitmap) if p > pg]
    if larger and not (iova ^ paddr) % larger[0]:
        nxt = larger[0]
        offset = nxt - addr % nxt
        if offset + nxt <= size:
            return pg, offset // pg
    return pg, size // pg


def lpae_leaves(iova: int, paddr: int, size: int) -> list[tuple[int, int, int]]:
    """How an LPAE table stores a chunk: 2M blocks where both addresses allow, else 4K."""
    out = []
    while size:
        pg = SZ_2M if (iova | paddr) % SZ_2M == 0 and size >= SZ_2M else SZ_4K
        out.append((iova, paddr, pg))
        iova, paddr, size = iova + pg, paddr + pg, size - pg
    return out


class Model:
    """Reference model of one domain's mappings."""

    def __init__(self, strategy: str) -> None:
        self.bitmap, self.counted, self.flavour = STRICT[strategy]
        self.one_page = strategy in ONE_PAGE_PER_CALL
        self.pages: dict[int, tuple[int, int]] = {}   # page index -> (paddr, prot)
        self.region: dict[int, str] = {}              # 2M index -> "block" | "table"
        self.ever_mapped = False                      # upper-level tables exist

    # ---- map -------------------------------------------------------------------------
    def chunks(self, iova: int, paddr: int, size: int) -> list[tuple[int, int, int]]:
        """One entry per driver call."""
        out = []
        while size:
            pg, n = ref_pgsize(self.bitmap, iova, paddr, size, self.counted)
            if self.one_page:
                n = 1
            out.append((iova, paddr, pg * n))
            iova, paddr, size = iova + pg * n, paddr + pg * n, size - pg * n
        return out

    def overlaps(self, iova: int, size: int) -> bool:
        return any(p in self.pages for p in range(iova // SZ_4K, (iova + size) // SZ_4K))

    def install(self, iova: int, paddr: int, size: int, prot: int) -> None:
        for c_iova, c_paddr, c_size in self.chunks(iova, paddr, size):
            self.install_chunk(c_iova, c_paddr, c_size, prot)

    def install_chunk(self, iova: int, paddr: int, size: int, prot: int) -> None:
        self.ever_mapped = True
        for l_iova, l_paddr, pg in lpae_leaves(iova, paddr, size):
            self.region[l_iova // SZ_2M] = "block" if pg == SZ_2M else "table"
            for k in range(pg // SZ_4K):
                self.pages[l_iova // SZ_4K + k] = (l_paddr + k * SZ_4K, prot)

    # ---- unmap -------------------------------------------------------------------------
    def unmap(self, iova: int, size: int) -> int:
        """``iommu_unmap``: the core loop over the driver's ``unmap``."""
        unmapped = 0
        while unmapped < size:
            pg, n = ref_pgsize(self.bitmap, iova, iova, size - unmapped, self.counted)
            got = self._driver_unmap(iova, pg, 1 if self.one_page else n)
            if not got:
                break
            iova += got
            unmapped += got
        return unmapped

    def _driver_unmap(self, iova: int, pg: int, n: int) -> int:
        if self.flavour == "io-pgtable":
            done = 0
            for k in range(n):
                if self._pt_unmap(iova + k * pg, pg) != pg:
                    break
                done += pg
            return done
        if self.flavour == "amd":
            return self._amd_unmap(iova, pg * n)
        size = max(pg * n, self._span(iova))  # VT-d: "unmap more than the size argument"
        iova &= ~(size - 1)
        for l_iova, _, l_pg in lpae_leaves(iova, iova, size):
            self._pt_unmap(l_iova, l_pg)
        return size

    def _span(self, iova: int) -> int:
        """What a walk finds at ``iova``: the leaf's size, or the span of the empty entry."""
        state = self.region.get(iova // SZ_2M)
        if state == "block":
            return SZ_2M
        if state == "table":
            return SZ_4K
        return SZ_2M if self.ever_mapped else SPAN_512G

    def _amd_unmap(self, iova: int, size: int) -> int:
        unmapped = 0
        while unmapped < size:
            step = self._span(iova)
            if step == SZ_2M and self.region.get(iova // SZ_2M) == "block":
                self._pt_unmap(iova & ~(SZ_2M - 1), SZ_2M)
            elif step == SZ_4K:
                self.pages.pop(iova // SZ_4K, None)
            iova = (iova & ~(step - 1)) + step
            unmapped += step
        return unmapped

    def _pt_unmap(self, iova: int, pg: int) -> int:
        """io-pgtable-arm ``__arm_lpae_unmap`` for one entry of ``pg`` bytes."""
        r = iova // SZ_2M
        state = self.region.get(r)
        if state is None:
            return 0
        if pg == SZ_2M:  # leaf → cleared; table → freed with everything in it
            for k in range(512):
                self.pages.pop(r * 512 + k, None)
            del self.region[r]
            return pg
        if state == "block":  # arm_lpae_split_blk_unmap
            self.region[r] = "table"
            del self.pages[iova // SZ_4K]
            return pg
        if self.pages.pop(iova // SZ_4K, None) is None:
            return 0
        return pg

    # ---- views ---------------------------------------------------------------------------
    def leaves(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """Expected ``(iova, size, paddr)`` leaves in [lo, hi), lo/hi 2M-aligned."""
        out = []
        for r in range(lo // SZ_2M, hi // SZ_2M):
            if self.region.get(r) == "block":
                out.append((r * SZ_2M, SZ_2M, self.pages[r * 512][0]))
                continue
            for p in range(r * 512, r * 512 + 512):
                if p in self.pages:
                    out.append((p * SZ_4K, SZ_4K, self.pages[p][0]))
        return out


def rounded(lo: int, hi: int) -> tuple[int, int]:
    return lo & ~(SZ_2M - 1), min(WINDOW, (hi + SZ_2M - 1) & ~(SZ_2M - 1))


class DomainMachine(RuleBasedStateMachine):
    """map / unmap / iova_to_phys / dma_access on a strict domain vs. the model."""

    strategy = "smmuv3-v5.4"

    def __init__(self) -> None:
        super().__init__()
        self.dom = il.iommu_domain_alloc(self.strategy, ias=40)
        self.model = Model(self.strategy)
        self.maps: list[tuple[int, int]] = []      # (iova, size) of successful maps
        self.last: tuple[int, int] = (0, 0)        # range the last step touched

    @initialize()
    def empty(self) -> None:
        assert list(self.dom.pgtable.leaves()) == []

    # ---- rules ---------------------------------------------------------------------------
    @rule(page=st.integers(0, PAGES - 1),
          npages=st.one_of(st.integers(1, 24), st.sampled_from([512, 513, 1024]),
                           st.integers(25, 600)),
          align2m=st.booleans(),
          pshift=st.sampled_from([0, 0, 0, 1, 3]),
          prot=st.sampled_from([RW, RW, RO]),
          fail=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 3)))
    def map(self, page: int, npages: int, align2m: bool, pshift: int, prot: int,
            fail: int | None) -> None:
        if align2m:
            page &= ~511
        npages = min(npages, PAGES - page)
        iova, size = page * SZ_4K, npages * SZ_4K
        paddr = PADDR_BASE + iova + pshift * SZ_4K  # shifted: never a 2M block
        self.last = (iova, iova + size)
        before = self._state(iova, size)
        chunks = self.model.chunks(iova, paddr, size)
        self.dom.fail_map_after = fail
        try:
            if self.model.overlaps(iova, size):
                event("map: EEXIST")
                with pytest.raises(IommuError) as exc:
                    il.iommu_map(self.dom, iova, paddr, size, prot)
                assert exc.value.errno == EEXIST
                assert self._state(iova, size) == before
                return
            if fail is not None and fail < len(chunks):
                event(f"map: driver fails at call {fail}")
                with pytest.raises(IommuError) as exc:
                    il.iommu_map(self.dom, iova, paddr, size, prot)
                assert exc.value.errno != EEXIST
                # the callbacks before the failure mapped their chunks; the core's unwind
                # is an ordinary iommu_unmap of exactly those bytes
                done = sum(c for _, _, c in chunks[:fail])
                for c_iova, c_paddr, c_size in chunks[:fail]:
                    self.model.install_chunk(c_iova, c_paddr, c_size, prot)
                if done:
                    assert self.model.unmap(iova, done) == done
                assert not self.model.overlaps(iova, size)
                return
            assert il.iommu_map(self.dom, iova, paddr, size, prot) == 0
        finally:
            self.dom.fail_map_after = None
        self.model.install(iova, paddr, size, prot)
        self.maps.append((iova, size))
        if any(pg == SZ_2M for _, _, c in chunks for _, _, pg in lpae_leaves(iova, paddr, c)):
            event("map: with a 2M block")

    @rule(region=st.integers(0, WINDOW // SZ_2M - 1), nblocks=st.integers(1, 3),
          prot=st.sampled_from([RW, RO]))
    def map_blocks(self, region: int, nblocks: int, prot: int) -> None:
        """2M-aligned iova and paddr: 2M block leaves (or EEXIST)."""
        self.map(region * 512, nblocks * 512, True, 0, prot, None)

    @rule(page=st.integers(0, PAGES - 1),
          npages=st.one_of(st.integers(1, 16), st.sampled_from([512, 1024]),
                           st.integers(17, 1100)),
          align2m=st.booleans(), fast=st.booleans())
    def unmap(self, page: int, npages: int, align2m: bool, fast: bool) -> None:
        if align2m:
            page &= ~511
        npages = min(npages, PAGES - page)
        self._unmap(page * SZ_4K, npages * SZ_4K, fast)

    @precondition(lambda self: self.maps)
    @rule(pick=st.integers(0, 1 << 16), fast=st.booleans())
    def unmap_a_mapping(self, pick: int, fast: bool) -> None:
        """Unmap exactly what one earlier iommu_map mapped (the L6.18 kernel-doc contract)."""
        iova, size = self.maps.pop(pick % len(self.maps))
        self._unmap(iova, size, fast)

    @precondition(lambda self: self.maps)
    @rule(pick=st.integers(0, 1 << 16), offset=st.integers(0, 1 << 16),
          npages=st.one_of(st.integers(1, 8), st.integers(9, 1024)), fast=st.booleans())
    def unmap_inside_a_mapping(self, pick: int, offset: int, npages: int, fast: bool) -> None:
        """Unmap part of (or past the end of) a mapping: block splits, larger-page unmaps,
        holes after the end."""
        iova, size = self.maps[pick % len(self.maps)]
        start = iova + (offset * SZ_4K) % size
        self._unmap(start, min(npages * SZ_4K, WINDOW - start), fast)

    @precondition(lambda self: self.maps)
    @rule(pick=st.integers(0, 1 << 16), write=st.booleans())
    def touch_a_mapping(self, pick: int, write: bool) -> None:
        """The device touches a mapping's first, middle and last pages twice (IOTLB fills,
        then hits), so that later unmaps have translations to invalidate."""
        iova, size = self.maps[pick % len(self.maps)]
        pages = {iova, iova + (size // 2 & ~0xFFF), iova + size - SZ_4K}
        for _ in range(2):
            for a in sorted(pages):
                self._dma(a // SZ_4K, a & 0xFF8, write)

    def _unmap(self, iova: int, size: int, fast: bool) -> None:
        self.last = (iova, iova + size)
        splits = sum(1 for v in self.model.region.values() if v == "table")
        blocks = sum(1 for v in self.model.region.values() if v == "block")
        want = self.model.unmap(iova, size)
        event("unmap: " + ("hole" if want == 0 else "more than asked" if want > size
                           else "stopped early" if want < size else "all"))
        if sum(1 for v in self.model.region.values() if v == "block") < blocks and (
                sum(1 for v in self.model.region.values() if v == "table") > splits):
            event("unmap: split a block")
        if fast:  # iommu_unmap_fast + iommu_iotlb_sync: still strict
            g = il.IommuIotlbGather()
            got = il.iommu_unmap_fast(self.dom, iova, size, g)
            il.iommu_iotlb_sync(self.dom, g)
        else:
            got = il.iommu_unmap(self.dom, iova, size)
        assert got == want, f"unmap({iova:#x}, {size:#x}) returned {got:#x}, model {want:#x}"
        if want > size:  # only VT-d/AMD (large pages, holes) unmap more than asked
            assert self.model.flavour in ("vtd", "amd")

    @rule(page=st.integers(0, PAGES - 1), pick=st.integers(0, 1 << 16),
          near_map=st.booleans(), write=st.booleans())
    def dma(self, page: int, pick: int, near_map: bool, write: bool) -> None:
        if near_map and self.maps:
            iova, size = self.maps[pick % len(self.maps)]
            page = (iova + (pick * SZ_4K) % size) // SZ_4K
        self._dma(page, pick & 0xFF8, write)

    def _dma(self, page: int, offset: int, write: bool) -> None:
        iova = page * SZ_4K + offset
        want = self.model.pages.get(page)
        assert il.iommu_iova_to_phys(self.dom, iova) == (
            0 if want is None else want[0] + (iova & 0xFFF))
        res = il.dma_access(self.dom, iova, write=write)
        event(f"dma: {res}")
        if want is None or (write and not want[1] & il.IOMMU_WRITE):
            assert res == "fault"
        else:
            assert res in ("hit", "walk")

    @rule(page=st.integers(0, PAGES - 1),
          bad=st.sampled_from(["iova", "size", "zero", "paddr"]), unmap=st.booleans())
    def bad_input(self, page: int, bad: str, unmap: bool) -> None:
        iova, size, paddr = page * SZ_4K, SZ_4K, PADDR_BASE
        if bad == "iova":
            iova += 0x800
        elif bad == "size":
            size = 0x1800
        elif bad == "zero":
            size = 0
        else:
            paddr += 0x10
        before = self._state(page * SZ_4K, SZ_4K)
        with pytest.raises(IommuError) as exc:
            if unmap:
                il.iommu_unmap(self.dom, iova, size if bad != "paddr" else 0)
            else:
                il.iommu_map(self.dom, iova, paddr, size, RW)
        assert exc.value.errno == EINVAL
        assert self._state(page * SZ_4K, SZ_4K) == before

    # ---- invariants ---------------------------------------------------------------------
    @invariant()
    def page_table_matches_model(self) -> None:
        lo, hi = rounded(*self.last)
        got = [(i, s, p) for i, s, p, _ in self.dom.pgtable.leaves(lo, hi)]
        assert got == self.model.leaves(lo, hi)
        for iova in {self.last[0], max(self.last[0], self.last[1] - SZ_4K)}:
            want = self.model.pages.get(iova // SZ_4K)
            assert il.iommu_iova_to_phys(self.dom, iova + 8) == (
                0 if want is None else want[0] + 8)

    @invariant()
    def iotlb_agrees_with_model(self) -> None:
        """Strict usage: every cached translation is still backed by the same page."""
        for e in self.dom.hw.iotlb.snapshot():
            if e.negative:
                continue
            for off in (0, e.pgsize - SZ_4K):
                want = self.model.pages.get((e.iova + off) // SZ_4K)
                assert want is not None and want[0] == e.paddr + off, (
                    f"IOTLB entry {e.iova:#x}+{e.pgsize:#x} -> {e.paddr:#x} is stale")
        assert self.dom.stats()["stale_hits"] == 0

    def _state(self, iova: int, size: int) -> tuple:
        lo, hi = rounded(iova, iova + size)
        return (list(self.dom.pgtable.leaves(lo, hi)), self.dom.stats(), self.dom.clock.now,
                len(self.dom.trace))


def _machine(strategy: str) -> type[DomainMachine]:
    return type(f"DomainMachine_{strategy}", (DomainMachine,), {"strategy": strategy})


@pytest.mark.parametrize("strategy", list(STRICT))
def test_domain_against_model(strategy: str) -> None:
    """150 examples × 30 steps per strategy (600 stateful examples in ``make test``)."""
    machine = _machine(strategy)
    machine.TestCase.settings = SETTINGS
    machine.TestCase().runTest()


# ---- iommu_pgsize ----------------------------------------------------------------------

BITMAPS = st.sampled_from([LPAE, ALL_POW2, AMD, 1 << 16 | 1 << 29, 1 << 14 | 1 << 25,
                           SZ_4K | 1 << 16 | SZ_2M])


# (delta, npages): small misaligned requests, or big ones whose iova ^ paddr is aligned
# to 2^18 granules (1G for 4K) so that big pages are usable and chunks stay few
REQUESTS = st.one_of(
    st.tuples(st.integers(-4096, 4096), st.integers(1, 1100)),
    st.tuples(st.integers(-3, 3).map(lambda k: k << 18),
              st.builds(lambda a, b: (a << 18) + b, st.integers(1, 3), st.integers(0, 1100))),
)


@SETTINGS
@given(bitmap=BITMAPS, iova_pages=st.integers(0, 1 << 30), request=REQUESTS)
def test_iommu_pgsize_properties(bitmap: int, iova_pages: int,
                                 request: tuple[int, int]) -> None:
    """Each chunk is a size in the bitmap, aligned in iova and paddr, ≤ what is left; the
    chunks tile the request exactly. The counted rule (L5.15) picks the same size as the
    single one (L4.13) and ends a run at the first boundary where a bigger page fits."""
    delta, npages = request
    g = bitmap & -bitmap
    iova = iova_pages * g
    paddr_pages = iova_pages + delta
    if paddr_pages < 0:
        paddr_pages += 1 << 20  # keeps iova ^ paddr's alignment
    paddr = paddr_pages * g
    size = npages * g
    calls = {}
    for counted in (False, True):
        i, p, left, n_calls = iova, paddr, size, 0
        while left:
            n_calls += 1
            if counted:
                pg, n = pgsize_counted(bitmap, i, p, left)
                assert pg == pgsize_single(bitmap, i | p, left)
            else:
                pg, n = pgsize_single(bitmap, i | p, left), 1
                if n_calls <= 64:  # §2.1's Python equivalent (checked on the first chunks)
                    assert pg == max(s for s in sizes_of(bitmap)
                                     if s <= left and ((i | p) == 0 or (i | p) % s == 0))
            assert pg & bitmap and pg & (pg - 1) == 0
            assert i % pg == 0 and p % pg == 0
            assert n >= 1 and pg * n <= left
            bigger = bitmap & ~(2 * pg - 1)
            b = bigger & -bigger  # the next bigger supported size, 0 if none
            if counted and b and (i ^ p) % b == 0:
                boundary = i + (b - i % b)
                if boundary < i + pg * n:  # the run went past a bigger-page boundary…
                    assert left - (boundary - i) < b  # …only because no bigger page fits
            i, p, left = i + pg * n, p + pg * n, left - pg * n
        assert (i, p) == (iova + size, paddr + size)  # tiles the request exactly
        calls[counted] = n_calls
    assert calls[True] <= calls[False]
