"""Exercises of lessons 07 (strict vs lazy) and 08 (the shoot-out): each module's contract,
right and wrong answers for int and student-ID seeds, the worked explanation, and each
answer checked against an independent reference — a naive flush queue written from the
kernel's algorithm, the closed-form stale window, the VFIO/SMMUv3 doorbell arithmetic.

Kernel sources (kernel-api-history.md §5.2, hardware-invalidation.md §6.2):
``IOVA_FQ_SIZE`` 256 and ``IOVA_FQ_TIMEOUT`` 10 ms (include/linux/iova.h @v5.10:47,50);
``fq_full`` is ``(tail + 1) % IOVA_FQ_SIZE == head`` (drivers/iommu/iova.c @v5.4:465), so a
ring holds 255; ``queue_iova`` flushes a full ring, frees it, then enqueues; the timer is
armed by an enqueue when not running and ``fq_flush_timeout`` frees every ring.
``VFIO_IOMMU_TLB_SYNC_MAX`` 512 (drivers/vfio/vfio_iommu_type1.c @v5.4.59);
``CMDQ_BATCH_ENTRIES`` 64 with the CMD_SYNC in the last batch (arm-smmu-v3.c @v5.4).
"""

from __future__ import annotations

import math
from pathlib import Path

import jupytext
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommu_lab.exercises import (
    EXERCISES,
    NOT_ANSWERED,
    crossover_tlbi,
    fq_flushes,
    lazy_concepts,
    shootout_concepts,
    stale_window,
    sweep_verdict,
)
from iommu_lab.exercises._base import LETTERS, Markdown, answer_text
from iommu_lab.units import parse_size

ROOT = Path(__file__).resolve().parents[1]
MINE = (fq_flushes, stale_window, lazy_concepts, crossover_tlbi, sweep_verdict,
        shootout_concepts)
NUMERIC = [m for m in MINE if m.KIND == "numeric"]
CONCEPTUAL = [m for m in MINE if m.KIND == "conceptual"]
SEEDS = st.integers(min_value=-(2**40), max_value=2**40) | st.text(min_size=1, max_size=12)
FEW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wrong(answer):
    """Same shape, one value changed."""
    if isinstance(answer, dict):
        k = next(iter(answer))
        return {**answer, k: answer[k] + 1}
    if isinstance(answer, int):
        return answer + 10
    return "a" if answer != "a" else "b"


# ---- the contract ------------------------------------------------------------------------------

@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_registered_with_notebook_and_kind(mod):
    assert EXERCISES[mod.NAME] is mod
    assert mod.NOTEBOOK in ("07", "08") and mod.KIND in ("numeric", "conceptual")


def test_each_notebook_has_two_numeric_and_one_conceptual():
    for nb in ("07", "08"):
        kinds = sorted(m.KIND for m in EXERCISES.values() if m.NOTEBOOK == nb)
        assert kinds == ["conceptual", "numeric", "numeric"], (nb, kinds)


@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
@FEW
@given(seed=SEEDS)
def test_right_accepted_wrong_rejected_for_any_seed(mod, seed):
    p = mod.make_problem(seed)
    if not str(seed).strip():
        assert p.error
        return
    a = mod.solve(p)
    assert mod.check(p, a).startswith("✓")
    assert mod.check(p, wrong(a)).startswith("✗")
    assert mod.check(p, None) == NOT_ANSWERED


@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_explanation_ends_with_the_answer(mod):
    for seed in (0, "s1234567"):
        p = mod.make_problem(seed)
        text = mod.explain(p)
        assert isinstance(text, Markdown) and f"`{answer_text(mod, p)}`" in text


@pytest.mark.parametrize("mod", NUMERIC, ids=lambda m: m.NAME)
def test_numeric_answers_vary_with_the_seed(mod):
    answers = {answer_text(mod, mod.make_problem(s)) for s in range(12)}
    assert len(answers) >= 3, answers


@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_a_student_id_is_a_seed_and_bad_seeds_give_a_message(mod):
    assert mod.make_problem(" S1234567 ").text == mod.make_problem("s1234567").text
    p = mod.make_problem(None)
    assert p.error and mod.check(p, "b").startswith("✗")


# ---- fq_flushes against a naive flush queue ----------------------------------------------------

def naive_flushes(gap_us: int, unmaps: int, size: int = 256, timeout_ms: int = 10) -> dict:
    """The kernel's flush queue on one CPU, written from iova.c: enqueue k at k·gap."""
    ring, deadline, full, timer = 0, None, 0, 0
    for k in range(unmaps):
        t = k * gap_us * 1000
        if deadline is not None and deadline <= t:      # fq_flush_timeout, before the op
            timer, ring, deadline = timer + 1, 0, None
        if ring >= size - 1:                            # queue_iova: full -> flush, free
            full, ring = full + 1, 0
        ring += 1
        if deadline is None:                            # armed by this enqueue
            deadline = t + timeout_ms * 1_000_000
    if deadline is not None:                            # the CPU idles: the timer fires
        timer += 1
    return {"ring_full": full, "timer": timer}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6))
def test_fq_flushes_matches_a_naive_flush_queue(seed):
    p = fq_flushes.make_problem(seed)
    assert fq_flushes.solve(p) == naive_flushes(p.params["gap_us"], p.params["unmaps"])


def test_fq_flushes_known_case():
    """20 µs apart, 600 unmaps (12 ms): full at the 256th enqueue (5.1 ms), the timer at
    10 ms, the last 100 wait for the timer re-armed at 10.02 ms."""
    assert naive_flushes(20, 600) == {"ring_full": 1, "timer": 2}
    assert naive_flushes(90, 100) == {"ring_full": 0, "timer": 1}
    assert naive_flushes(7, 1000) == {"ring_full": 3, "timer": 1}


def test_fq_flush_events_say_why():
    p = fq_flushes.make_problem(3)
    rows = fq_flushes.flush_events(p)
    want = fq_flushes.solve(p)
    assert sum(r["why"] == "ring full" for r in rows) == want["ring_full"]
    assert all(r["ring held"] == 255 for r in rows if r["why"] == "ring full")


# ---- stale_window against the closed form ------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
def test_stale_window_matches_the_closed_form(seed):
    """Stale writes are the probes before min(255 × cpus × gap, 10 ms); the generator keeps
    every probe ≥ 10% of a period away from that edge."""
    p = stale_window.make_problem(seed)
    q = p.params
    w = stale_window.window_estimate_ns(q["cpus"], q["gap_us"])
    period = q["probe_ms"] * 1e6
    stale = sum((k + 0.5) * period < w for k in range(q["probes"]))
    assert stale_window.solve(p) == {"stale": stale, "fault": q["probes"] - stale}


def test_stale_window_uses_several_cpus():
    cpus = {stale_window.make_problem(s).params["cpus"] for s in range(30)}
    assert {1, 2, 4} <= cpus


# ---- crossover_tlbi ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, "s1234567"])
def test_crossover_is_the_first_win_and_sits_at_the_doorbell_cost(seed):
    p = crossover_tlbi.make_problem(seed)
    x = crossover_tlbi.solve(p)["hw_tlbi_ns"]
    assert crossover_tlbi.check(p, x).startswith("✓")               # a plain number too
    assert x % crossover_tlbi.STEP == 0
    assert crossover_tlbi.early_wins(p, x) and not crossover_tlbi.early_wins(p, x - 10)
    assert crossover_tlbi.early_wins(p, x + 200)       # and stays won
    assert 0 < x - p.params["doorbell_ns"] <= 30      # the rule the explanation teaches


def test_crossover_counts_do_not_depend_on_the_cost():
    """Early issue: a TLBI per page + one CMD_SYNC whatever hw_tlbi_ns (arm-smmu-v3.c @v4.15)."""
    import iommu_lab as il

    p = crossover_tlbi.make_problem(0)
    df = il.sweep(crossover_tlbi.workload(p), [crossover_tlbi.EARLY, crossover_tlbi.GATHER],
                  ["unmap-each"], {"hw_tlbi_ns": [20, 400]}, progress=False)
    pages = p.params["pages"]
    assert set(df["inv_cmds"]) == {pages} and set(df["sync_cmds"]) == {1}


# ---- sweep_verdict against the doorbell arithmetic ---------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 4, "s1234567"])
def test_sweep_verdict_doorbells_and_wins(seed):
    p = sweep_verdict.make_problem(seed)
    q = p.params
    pages = parse_size(q["guest"]) // 4096
    syncs = math.ceil(pages / 512)                       # VFIO_IOMMU_TLB_SYNC_MAX
    per_sync = [min(512, pages - 512 * k) for k in range(syncs)]
    want = {"early_doorbells": pages + syncs,            # v4.15: one per command
            "gather_doorbells": sum(math.ceil(b / 64) for b in per_sync),   # v5.4: per 64
            "early_wins": sum(t > q["doorbell_ns"] for t in q["grid"])}
    assert sweep_verdict.solve(p) == want


def test_sweep_verdict_grid_avoids_near_ties():
    for s in range(20):
        q = sweep_verdict.make_problem(s).params
        assert all(abs(t - q["doorbell_ns"]) > 40 for t in q["grid"]) and len(q["grid"]) == 5


# ---- conceptual items --------------------------------------------------------------------------

@pytest.mark.parametrize("mod", CONCEPTUAL, ids=lambda m: m.NAME)
def test_every_question_has_one_right_option_and_is_reachable(mod):
    for _, choices, _ in mod.QUESTIONS:
        assert sum(c.correct for c in choices) == 1 and all(c.why for c in choices)
    asked = {mod.make_problem(s).text.split("\n")[0] for s in range(60)}
    assert len(asked) == len(mod.QUESTIONS)


@pytest.mark.parametrize("mod", CONCEPTUAL, ids=lambda m: m.NAME)
def test_letters_in_every_spelling(mod):
    p = mod.make_problem(9)
    x = mod.solve(p)
    for spelled in (x, x.upper(), f"({x})", f" {x}) "):
        assert mod.check(p, spelled).startswith("✓")
    other = next(y for y in LETTERS[:4] if y != x)
    assert mod.check(p, other).startswith("✗")


# ---- the lessons ship no answers ---------------------------------------------------------------

@pytest.mark.parametrize("stem", ["07-Strict-vs-lazy-flush-queues", "08-Strategy-shoot-out"])
def test_lesson_cells_use_their_own_exercises_and_hide_the_answers(stem):
    nb = jupytext.read(ROOT / "notebooks" / f"{stem}.md", fmt="md:myst")
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert sum(src.startswith("SEED = ") for src in code) == 0
    assert sum("\nSEED = 0  # change me" in src for src in code) == 1
    answers = [src for src in code if src.startswith("ANSWER")]
    assert len(answers) == 3 and all(src.startswith("ANSWER = None") for src in answers)
    used = {m.NAME for m in MINE if any(f"{m.NAME}.check(" in src for src in code)}
    assert used == {m.NAME for m in MINE if m.NOTEBOOK == stem[:2]}
    assert not any(".solve(" in src or ".explain(" in src for src in code)
