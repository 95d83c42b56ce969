"""Exercises of lessons 05 and 06, beyond the generic contract of tests/test_exercises.py:
hand-built problems with answers derived from the kernel rules (cited), seeds as student IDs,
and every multiple-choice question reachable with exactly one right option.

Sources: include/linux/iommu.h @v5.4.59:525-528 and arm-smmu-v3.c @v5.4.59 (gather and
batches of 64), arm-smmu-v3.c @v5.10.89 (RIL), intel/iommu.c @v5.10.89
(``iommu_flush_iotlb_psi``), amd/iommu.c @v5.15 (``build_inv_address``).
"""

from __future__ import annotations

import pytest

from iommu_lab.exercises import (
    EXERCISES,
    NOT_ANSWERED,
    Problem,
    amd_superset,
    gather_concepts,
    gather_sync,
    hw_concepts,
    psi_mask,
    ril_range,
)

SZ_4K, SZ_2M = 0x1000, 0x20_0000
BASE = 0x80_0000
MINE = (gather_sync, ril_range, gather_concepts, psi_mask, amd_superset, hw_concepts)


def problem(mod, **params):
    return Problem(mod.NAME, 0, "hand-built", params, "a dict")


# ---- registration and the contract ------------------------------------------------------------

def test_registered_with_notebook_and_kind():
    want = {"gather_sync": ("05", "numeric"), "ril_range": ("05", "numeric"),
            "gather_concepts": ("05", "conceptual"), "psi_mask": ("06", "numeric"),
            "amd_superset": ("06", "numeric"), "hw_concepts": ("06", "conceptual")}
    for mod in MINE:
        assert EXERCISES[mod.NAME] is mod
        assert (mod.NOTEBOOK, mod.KIND) == want[mod.NAME]


@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_student_id_seeds(mod):
    a, b = mod.make_problem("s1234567"), mod.make_problem("  S1234567 ")
    assert a.text == b.text and not a.error
    assert mod.check(a, mod.solve(a)).startswith("✓")
    assert mod.check(a, None) == NOT_ANSWERED
    bad = mod.make_problem(1.5)
    assert bad.error and mod.check(bad, mod.solve(a)).startswith("✗")


# ---- gather_sync (v5.4: gather merge rule + batches of 64) ------------------------------------

@pytest.mark.parametrize("events,block,want", [
    # touching runs merge: 4 + 2 pages, one sync of 6 TLBIs
    ([(BASE, 4 * SZ_4K), (BASE + 4 * SZ_4K, 2 * SZ_4K)], False, (6, 1, 1)),
    # a run ending where the gather starts: ->unmap comes page by page, ascending, and its
    # first page does not touch the gather: early sync (2), then 4
    ([(BASE + 4 * SZ_4K, 2 * SZ_4K), (BASE, 4 * SZ_4K)], False, (6, 2, 2)),
    # a single page just below the gather touches it (end == gather->start): merge
    ([(BASE + 4 * SZ_4K, 2 * SZ_4K), (BASE + 3 * SZ_4K, SZ_4K)], False, (3, 1, 1)),
    # a one-page gap: early sync of 4, then 2 at the end
    ([(BASE, 4 * SZ_4K), (BASE + 5 * SZ_4K, 2 * SZ_4K)], False, (6, 2, 2)),
    # another page size (the 2M block right above the window) syncs first, and back again
    ([(BASE + SZ_2M - SZ_4K, SZ_4K), (BASE + SZ_2M, SZ_2M), (BASE, SZ_4K)], True, (3, 3, 3)),
    # 100 pages in one gather: 64 + 36 TLBIs, 2 doorbells, 1 CMD_SYNC
    ([(BASE, 100 * SZ_4K)], False, (100, 1, 2)),
])
def test_gather_sync_hand_built(events, block, want):
    p = problem(gather_sync, base=BASE, events=events, block=block)
    assert gather_sync.solve(p) == dict(zip(gather_sync.FIELDS, want, strict=True))


def test_gather_sync_explanation_walks_every_call():
    p = gather_sync.make_problem("s1234567")
    text = gather_sync.explain(p)
    assert text.count("| unmap_fast ") == len(p.params["events"])
    assert "| iommu_iotlb_sync |" in text


# ---- ril_range (v5.10 RIL) ---------------------------------------------------------------------

def test_ril_range_problems_stay_below_one_page_table_page():
    """512 aligned 4K pages would be one 2M chunk for the core (iommu_pgsize looks at the IOVA
    only on unmap): io-pgtable frees the table with a synchronous walk invalidation."""
    assert max(ril_range.make_problem(s).params["pages"] for s in range(300)) < 512

@pytest.mark.parametrize("pages,want", [
    (35, (2, 2, 0, 0, 5, 1)),        # §1.6 worked example; v5.4: 35 TLBIs, one batch
    (511, (2, 30, 0, 14, 5, 8)),     # 0b111111111: 31 × 2^0, then 15 × 2^5; 8 batches
    (320, (1, 4, 6, 4, 6, 5)),       # 0b101000000: 5 × 2^6; v5.4: ceil(320/64) = 5
    (1, (1, 0, 0, 0, 0, 1)),
])
def test_ril_range_hand_built(pages, want):
    p = problem(ril_range, pages=pages, iova=0x4000_0000)
    assert ril_range.solve(p) == dict(zip(ril_range.FIELDS, want, strict=True))


# ---- psi_mask (v5.10 iommu_flush_iotlb_psi) ----------------------------------------------------

@pytest.mark.parametrize("iova,pages,cap,want", [
    (0x3000, 2, 9, (1, 0, 1)),               # §3.4: pages 3..4, AM 1 covers 2..3, misses 4
    (0x10_0000, 35, 9, (6, 0, 0)),           # aligned: 64-page block holds the buffer
    (0x10_0000, 35, 4, (6, 1, 0)),           # 6 > cap_max_amask_val: DSI
    (0x1000, 3, 9, (2, 0, 0)),               # pages 1..3 inside the block 0..3
    (0x2000, 3, 9, (2, 0, 1)),               # pages 2..4: block 0..3 misses page 4
    (0x10_7000, 20, 5, (5, 0, 0)),           # AM 5 = cap: PSI; block 0x100..0x11f holds
])                                           # pages 0x107..0x11a
def test_psi_mask_hand_built(iova, pages, cap, want):
    p = problem(psi_mask, iova=iova, pages=pages, cap=cap)
    assert psi_mask.solve(p) == dict(zip(psi_mask.FIELDS, want, strict=True))


def test_psi_mask_tail_beyond_the_block():
    """20 pages from page 0x11c (offset 28 in a 32-page block): AM 5 covers pages 0x100..0x11f,
    the buffer runs to 0x12f: 16 pages stay cached."""
    p = problem(psi_mask, iova=0x11_C000, pages=20, cap=9)
    assert psi_mask.solve(p) == {"am": 5, "dsi": 0, "stale": 16}


# ---- amd_superset (v5.15 build_inv_address) ----------------------------------------------------

@pytest.mark.parametrize("first,pages,want", [
    (3, 2, (0x0, 8, 6)),        # §4.2: pages 3..4 → the 32 KiB block 0x0-0x7fff
    (0, 35, (0x0, 64, 29)),     # 35 pages from the block's start → 64 pages
    (8, 8, (0x8000, 8, 0)),     # an aligned power of two: exact
    (31, 2, (0x0, 64, 62)),     # pages 31..32 straddle the middle: the whole window
])
def test_amd_superset_hand_built(first, pages, want):
    base = 0x40_0000
    p = problem(amd_superset, base=base, iova=base + first * SZ_4K, pages=pages)
    start, block, over = want
    assert amd_superset.solve(p) == {"block_start": base + start, "block_pages": block,
                                     "over_invalidated": over}


# ---- multiple choice -----------------------------------------------------------------------------

@pytest.mark.parametrize("mod", [gather_concepts, hw_concepts], ids=lambda m: m.NAME)
def test_every_question_is_reachable_and_has_one_right_option(mod):
    seen = set()
    for seed in range(300):
        p = mod.make_problem(seed)
        seen.add(p.text.splitlines()[0])
        right = mod.solve(p)
        assert mod.check(p, f"({right.upper()})").startswith("✓")
        for other in "abcd":
            if other != right:
                assert mod.check(p, other).startswith("✗")
        assert sum(c.correct for c in p.params["choices"]) == 1
        if len(seen) == len(mod.QUESTIONS):
            break
    assert len(seen) == len(mod.QUESTIONS)


@pytest.mark.parametrize("mod", [gather_concepts, hw_concepts], ids=lambda m: m.NAME)
def test_mc_explanation_judges_every_option(mod):
    p = mod.make_problem(7)
    text = mod.explain(p)
    assert text.count("✓") == 1 and text.count("✗") == len(p.params["choices"]) - 1
