"""Exercises of lesson 10 (design your own flush strategy): each module's contract, right and
wrong answers for int and student-ID seeds, the worked explanation, and each numeric answer
checked against an independent reference written from the rules it teaches.

Rules (hardware-invalidation.md §1.4, §1.5): SMMUv3 v5.4 ``arm_smmu_tlb_inv_range`` sends one
``CMD_TLBI_NH_VA`` per 4K granule in batches of ``CMDQ_BATCH_ENTRIES`` (64), the CMD_SYNC in
the last batch; ``arm_smmu_tlb_inv_context`` sends ``CMD_TLBI_NH_ASID`` + CMD_SYNC
(drivers/iommu/arm-smmu-v3.c @v5.4.59). The SMMU consumes its queue in order, and a
CMD_SYNC completes only after every earlier command (Arm IHI 0070, CMD_SYNC): a waited-for
sync covers every TLBI published before it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommu_lab.drivers.registry import STRATEGIES
from iommu_lab.exercises import (
    EXERCISES,
    NOT_ANSWERED,
    design_concepts,
    flush_threshold,
    unsafe_sync,
)
from iommu_lab.exercises._base import LETTERS, Markdown, answer_text

ROOT = Path(__file__).resolve().parents[1]
MINE = (unsafe_sync, flush_threshold, design_concepts)
NUMERIC = [m for m in MINE if m.KIND == "numeric"]
SEEDS = st.integers(min_value=-(2**40), max_value=2**40) | st.text(min_size=1, max_size=12)
FEW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wrong(answer):
    """Same shape, one value changed."""
    if isinstance(answer, dict):
        k = next(iter(answer))
        return {**answer, k: answer[k] + 1}
    if isinstance(answer, list):
        return [("fault" if answer[0] != "fault" else "stale"), *answer[1:]]
    return "a" if answer != "a" else "b"


# ---- the contract ------------------------------------------------------------------------------

@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_registered_with_notebook_and_kind(mod):
    assert EXERCISES[mod.NAME] is mod and mod.NOTEBOOK == "10"


def test_the_notebook_has_two_numeric_and_one_conceptual():
    kinds = sorted(m.KIND for m in EXERCISES.values() if m.NOTEBOOK == "10")
    assert kinds == ["conceptual", "numeric", "numeric"]


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


@pytest.mark.parametrize("mod", NUMERIC, ids=lambda m: m.NAME)
def test_solving_leaves_the_registry_as_it_was(mod):
    """The solvers register the example strategy only while they run."""
    before = dict(STRATEGIES)
    mod.solve(mod.make_problem(3))
    mod.explain(mod.make_problem(3))
    assert STRATEGIES == before


# ---- unsafe_sync against the in-order queue rule ----------------------------------------------

def naive_reads(k: int, events: list[tuple[str, str]]) -> list[str]:
    """Every buffer mapped and cached. Sync n waits iff n % k == 0, and then covers every
    TLBI published before it; a mapped buffer hits, a covered one faults, others are
    stale (their TLBI is queued, the paused SMMU has not executed it)."""
    syncs, uncovered, unmapped, out = 0, set(), set(), []
    for what, buf in events:
        if what == "unmap":
            syncs += 1
            unmapped.add(buf)
            uncovered.add(buf)
            if syncs % k == 0:
                uncovered.clear()
        else:
            out.append("hit" if buf not in unmapped else
                       "stale" if buf in uncovered else "fault")
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6) | st.text(min_size=1, max_size=8))
def test_unsafe_sync_matches_the_in_order_rule(seed):
    p = unsafe_sync.make_problem(seed)
    if p.error:
        return
    assert unsafe_sync.solve(p) == naive_reads(p.params["k"], p.params["events"])


def test_unsafe_sync_known_case_and_variety():
    """k = 2: unmap B (sync 1, no wait) → B stale; unmap D (sync 2 waits: covers B, D);
    A still mapped → hit; unmap E (sync 3, no wait) → E stale."""
    events = [("unmap", "B"), ("read", "B"), ("unmap", "D"), ("read", "A"),
              ("unmap", "E"), ("read", "E")]
    assert naive_reads(2, events) == ["stale", "hit", "stale"]
    assert naive_reads(2, [*events[:3], ("read", "B")]) == ["stale", "fault"]
    seen = {r for s in range(40) for r in unsafe_sync.solve(unsafe_sync.make_problem(s))}
    assert {"hit", "fault", "stale"} <= seen


# ---- flush_threshold against the per-buffer rule ----------------------------------------------

def naive_commands(t: int, sizes: list[int]) -> dict[str, int]:
    """One iotlb_sync per iommu_dma_unmap: above T pages NH_ASID + CMD_SYNC, else one NH_VA
    per page (at most 40 pages: one batch of <= 64) + CMD_SYNC; mapping sends nothing."""
    big = [n for n in sizes if n > t]
    return {"inv_cmds": len(big) + sum(n for n in sizes if n <= t),
            "inv_all_cmds": len(big), "sync_cmds": len(sizes)}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6) | st.text(min_size=1, max_size=8))
def test_flush_threshold_matches_the_rule(seed):
    p = flush_threshold.make_problem(seed)
    if p.error:
        return
    q = p.params
    assert max(q["sizes"]) <= 64
    assert flush_threshold.solve(p) == naive_commands(q["t"], q["sizes"])


def test_flush_threshold_puts_a_buffer_at_the_edge():
    """Every problem has a buffer of exactly T or T + 1 pages (the off-by-one to predict)."""
    for s in range(20):
        q = flush_threshold.make_problem(s).params
        assert {q["t"], q["t"] + 1} & set(q["sizes"])
    assert naive_commands(4, [7, 4, 8]) == {"inv_cmds": 6, "inv_all_cmds": 2, "sync_cmds": 3}


# ---- design_concepts ---------------------------------------------------------------------------

def test_every_question_is_reachable_and_has_one_right_option():
    asked = {design_concepts.make_problem(s).text.splitlines()[0] for s in range(60)}
    assert len(asked) == len(design_concepts.QUESTIONS)
    for _, choices, hint in design_concepts.QUESTIONS:
        assert sum(c.correct for c in choices) == 1 and hint and all(c.why for c in choices)


@pytest.mark.parametrize("seed", [0, 1, "s1234567"])
def test_a_letter_in_any_spelling(seed):
    p = design_concepts.make_problem(seed)
    x = design_concepts.solve(p)
    assert x in LETTERS
    for spelling in (x, x.upper(), f"({x})", f" {x}) "):
        assert design_concepts.check(p, spelling).startswith("✓")
    other = next(c for c in LETTERS[:4] if c != x)
    assert design_concepts.check(p, other).startswith("✗")
    assert design_concepts.check(p, "z").startswith("✗ could not read")


# ---- the lesson uses them ----------------------------------------------------------------------

def test_the_lesson_checks_each_exercise_and_offers_its_explanation():
    text = (ROOT / "notebooks" / "10-Design-your-own-flush-strategy.md").read_text("utf-8")
    assert text.count("SEED = 0  # change me: your student number or ID") == 1
    for mod, var in zip(MINE, ("p1", "p2", "p3"), strict=True):
        assert f"print({mod.NAME}.check({var}, ANSWER))" in text
        assert f"{mod.NAME}.explain({var})" in text
    assert ".solve(" not in text
