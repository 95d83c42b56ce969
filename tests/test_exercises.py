"""Every exercise: seeded generator, solver, and a check that never raises."""

from __future__ import annotations

import copy

import pytest

import iommu_lab as il
from iommu_lab.exercises import EXERCISES, NOT_ANSWERED, Problem, ring_registers
from iommu_lab.exercises._base import as_int

SEEDS = range(12)
MODULES = sorted(EXERCISES)


def wrong(answer):
    """A plausible but wrong answer of the same shape."""
    if isinstance(answer, dict):
        out = copy.deepcopy(answer)
        k = next(iter(out))
        out[k] = out[k] + 1
        return out
    if isinstance(answer, list):
        out = list(answer)
        if isinstance(out[0], str):
            out[0] = "hit" if out[0] != "hit" else "stale"
        else:
            out[0] = out[0] + 0x1000
        return out
    raise AssertionError(f"unexpected answer shape {answer!r}")


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("seed", SEEDS)
def test_solution_passes_wrong_fails_none_not_answered(name, seed):
    mod = EXERCISES[name]
    p = mod.make_problem(seed)
    assert isinstance(p, Problem) and p.exercise == name and p.seed == seed
    assert p.text and p.answer_format and str(p).startswith(p.text)
    answer = mod.solve(p)
    assert mod.check(p, answer).startswith("✓")
    assert mod.check(p, wrong(answer)).startswith("✗")
    assert mod.check(p, None) == NOT_ANSWERED
    assert mod.check(p, ...) == NOT_ANSWERED


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("junk", ["abc", 42, 3.5, [], {}, {"x": "y"}, [object()], object(),
                                  True, {"inv_cmds": None}, ["hit", 1, None]])
def test_check_never_raises_on_junk(name, junk):
    mod = EXERCISES[name]
    msg = mod.check(mod.make_problem(3), junk)
    assert isinstance(msg, str) and msg.startswith("✗")


@pytest.mark.parametrize("name", MODULES)
def test_problems_are_seeded_and_vary(name):
    mod = EXERCISES[name]
    assert mod.make_problem(7).text == mod.make_problem(7).text
    texts = {mod.make_problem(s).text for s in range(20)}
    assert len(texts) >= 15, f"{name}: only {len(texts)} distinct problems in 20 seeds"


@pytest.mark.parametrize("name", MODULES)
def test_answers_in_other_spellings(name):
    """Hex strings, size strings and reordered keys are accepted."""
    mod = EXERCISES[name]
    p = mod.make_problem(5)
    answer = mod.solve(p)
    if isinstance(answer, dict):
        if name == "pgsize_split":
            alt = {as_int(k): v for k, v in reversed(list(answer.items()))}
        else:
            alt = {k: hex(v) for k, v in reversed(list(answer.items()))}
    elif isinstance(answer[0], str):
        alt = tuple(a.upper() for a in answer)
    else:
        alt = [hex(a) for a in answer]
    assert mod.check(p, alt).startswith("✓")


def test_field_feedback_names_the_wrong_field():
    p = EXERCISES["flush_count"].make_problem(1)
    ans = EXERCISES["flush_count"].solve(p)
    msg = EXERCISES["flush_count"].check(p, {**ans, "doorbells": ans["doorbells"] + 1})
    assert "right: inv_cmds, sync_cmds" in msg and "not right: doorbells" in msg
    assert "Hint:" in msg
    msg = EXERCISES["flush_count"].check(p, {**ans, "extra": 1})
    assert "unexpected: extra" in msg


def test_markdown_repr():
    p = EXERCISES["waste"].make_problem(0)
    assert "**Exercise `waste` (seed 0)**" in p._repr_markdown_()


def test_bad_seed_is_refused_by_make_problem():
    with pytest.raises(TypeError):
        EXERCISES["teardown"].make_problem("zero")


@pytest.mark.parametrize("entries", [8, 16, 32])
def test_ring_register_arithmetic_matches_the_simulated_queue(entries):
    """The solver's wrap-bit formula against the CommandQueue model."""
    dom = il.iommu_domain_alloc("smmuv3-v4.15", cmdq_entries=entries)
    q = dom.driver.q
    q.paused = True
    il.iommu_map(dom, 0, 0x4000_0000, 0x1000 * 3 * entries, il.IOMMU_READ)
    g = il.IommuIotlbGather()
    for page in range(2 * entries + 3):             # wraps: the producer stalls and the
        il.iommu_unmap_fast(dom, page * 0x1000, 0x1000, g)  # hardware is forced to consume
        q.consume(page % 2)
        cons = q.consumed_at(dom.clock.now)
        p = Problem("ring_registers", 0, "", {"entries": entries, "written": q.prod,
                                              "consumed": cons})
        want = ring_registers.solve(p)
        regs = q.register_values(dom.clock.now)
        assert (regs["prod"], regs["cons"]) == (want["prod"], want["cons"])
        assert want["free"] == entries - (q.prod - cons) >= 0
