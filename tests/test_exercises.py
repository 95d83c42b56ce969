"""Every exercise: seeded generator (int or student-ID seeds), solver, a check that never
raises, the worked explanation, conceptual items, the instructor key, and no answer in what
ships."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab import cli
from iommu_lab.exercises import (
    EXERCISES,
    NOT_ANSWERED,
    Problem,
    SeedError,
    answer_key,
    ring_registers,
)
from iommu_lab.exercises._base import (
    LETTERS,
    Choice,
    Markdown,
    answer_text,
    as_int,
    multiple_choice,
    rng_for,
    seed_key,
)

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(12)
MODULES = sorted(EXERCISES)
CONCEPTUAL = sorted(n for n, m in EXERCISES.items() if m.KIND == "conceptual")
RESULT_WORDS = ("hit", "walk", "fault", "stale")
BAD_SEEDS = [None, 3.5, 2.0, True, False, "", "   ", "\t\n", [], {}, b"s1234567", object()]
int_seeds = st.integers(min_value=-(2**70), max_value=2**70)
text_seeds = st.text(min_size=1, max_size=24).filter(lambda s: s.strip())
SLOW = settings(max_examples=8, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def wrong(answer):
    """A plausible but wrong answer of the same shape: one field, item or choice changed."""
    if isinstance(answer, dict):
        out = copy.deepcopy(answer)
        k = next(iter(out))
        out[k] = 2 * out[k] + 1       # far enough for answers checked with a tolerance
        return out
    if isinstance(answer, list):
        out = list(answer)
        if isinstance(out[0], str):
            out[0] = next(w for w in RESULT_WORDS if w != out[0])
        else:
            out[0] = out[0] + 0x1000
        return out
    if isinstance(answer, str) and len(answer) == 1:     # a multiple-choice letter
        return "b" if answer != "b" else "a"
    raise AssertionError(f"unexpected answer shape {answer!r}")


wrong_answer = wrong


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
    elif isinstance(answer, str):
        alt = f" ({answer.upper()}) "
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


def test_a_word_is_a_seed_like_any_other():
    """A student ID string is normal input (it was refused before issue 12)."""
    p = EXERCISES["teardown"].make_problem("zero")
    assert not p.error and p.seed == "zero"
    assert EXERCISES["teardown"].check(p, EXERCISES["teardown"].solve(p)).startswith("✓")


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


# ---- the module contract (issue 12) ---------------------------------------------------------
@pytest.mark.parametrize("name", MODULES)
def test_every_module_has_the_contract(name):
    mod = EXERCISES[name]
    assert mod.NAME == name == mod.__name__.rsplit(".", 1)[1]
    assert re.fullmatch(r"(0\d|10)", mod.NOTEBOOK), mod.NOTEBOOK
    assert mod.KIND in ("numeric", "conceptual")
    for fn in ("make_problem", "solve", "check", "explain"):
        assert callable(getattr(mod, fn)), fn


def test_every_lesson_with_exercises_has_a_conceptual_item_registered():
    """01–04 each have one conceptual item (issue 12 item 2)."""
    for nb in ("01", "02", "03", "04"):
        kinds = {m.KIND for m in EXERCISES.values() if m.NOTEBOOK == nb}
        assert kinds == {"numeric", "conceptual"}, (nb, kinds)


# ---- any seed, right and wrong answers (hypothesis) -------------------------------------------
def assert_right_wrong_unanswered(mod, seed):
    p = mod.make_problem(seed)
    assert not p.error and p.seed == seed and p.exercise == mod.NAME
    answer = mod.solve(p)
    assert mod.check(p, answer).startswith("✓")
    assert mod.check(p, wrong_answer(answer)).startswith("✗")
    assert mod.check(p, None) == NOT_ANSWERED


@pytest.mark.parametrize("name", MODULES)
@SLOW
@given(seed=int_seeds)
def test_any_int_seed_accepts_right_rejects_wrong(name, seed):
    assert_right_wrong_unanswered(EXERCISES[name], seed)


@pytest.mark.parametrize("name", MODULES)
@SLOW
@given(seed=text_seeds)
def test_any_text_seed_accepts_right_rejects_wrong(name, seed):
    assert_right_wrong_unanswered(EXERCISES[name], seed)


@functools.cache
def problem_11(name: str) -> Problem:
    return EXERCISES[name].make_problem(11)


garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)


@pytest.mark.parametrize("name", MODULES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=garbage)
def test_check_never_raises_on_garbage(name, junk):
    mod = EXERCISES[name]
    msg = mod.check(problem_11(name), junk)
    assert isinstance(msg, str)
    assert msg == NOT_ANSWERED or msg[:1] in ("✓", "✗")


# ---- seeds ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODULES)
def test_student_id_spellings_are_one_seed_and_kept_as_typed(name):
    mod = EXERCISES[name]
    base = mod.make_problem("s1234567").text
    for typed in ("  S1234567 ", "s1234567\n", "S1234567"):
        p = mod.make_problem(typed)
        assert p.text == base and p.seed == typed
    assert mod.make_problem("  42 ").text == mod.make_problem(42).text
    nfc, nfd = "Ana María", unicodedata.normalize("NFD", "Ana María")
    assert nfc != nfd and mod.make_problem(nfc).text == mod.make_problem(nfd).text
    assert mod.make_problem("Ana  María").text == mod.make_problem(nfc).text
    assert mod.make_problem("s1234568").text != base


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("bad", BAD_SEEDS, ids=repr)
def test_a_bad_seed_gives_a_message_never_a_traceback(name, bad):
    mod = EXERCISES[name]
    p = mod.make_problem(bad)
    assert p.error and "SEED" in p.error and "student" in p.error and p.seed is bad
    assert str(p).startswith("✗") and p.error in str(p) and p.error in p._repr_markdown_()
    for answer in (None, "b", {"inv_cmds": 1}, ["hit"]):
        assert mod.check(p, answer) == f"✗ {p.error}"
    for shown in (mod.explain(p), il.exercises.explain(p), p.explain()):
        assert shown == f"✗ {p.error}"
    with pytest.raises(SeedError, match="SEED"):
        mod.solve(p)


@pytest.mark.parametrize("bad,why", [(None, "no seed given"), ("", "empty"), (" ", "empty"),
                                     (True, "True/False"), (3.5, "float"), ([], "list")])
def test_seed_errors_name_the_problem(bad, why):
    with pytest.raises(SeedError, match=re.escape(why)):
        seed_key(bad)
    with pytest.raises(SeedError):
        rng_for("x", bad)


def test_numpy_integers_are_int_seeds():
    np = pytest.importorskip("numpy")
    assert seed_key(np.int64(7)) == 7 == seed_key(7)


PROBE = r"""
import json, sys
from iommu_lab.exercises import EXERCISES
print(json.dumps([[m.make_problem(s).text for _, m in sorted(EXERCISES.items())]
                  for s in json.loads(sys.argv[1])]))
"""


def test_a_seed_gives_the_same_problem_in_every_process():
    """No use of the per-process string ``hash()``: two interpreters with different hash
    seeds produce this process's problems, for a student ID and for an int."""
    seeds = ["s1234567", "Ana María", 12345]
    here = [[m.make_problem(s).text for _, m in sorted(EXERCISES.items())] for s in seeds]
    for hashseed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(seeds)],
                             capture_output=True, text=True, timeout=300, cwd=ROOT,
                             env={**os.environ, "PYTHONHASHSEED": hashseed})
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.splitlines()[-1]) == here


# ---- worked explanations ----------------------------------------------------------------------
def answer_tokens(answer):
    """The numbers and words of an answer, each with the spellings an explanation may use."""
    values = answer.values() if isinstance(answer, dict) else (
        answer if isinstance(answer, list) else [answer])
    out = []
    for v in values:
        if isinstance(v, str):
            out.append({f"({v})"} if len(v) == 1 else {v})
        else:
            out.append({str(v), f"{v:,}", hex(v), f"{v:#04x}"})
    return out


@pytest.mark.parametrize("name", MODULES)
@SLOW
@given(seed=int_seeds | text_seeds)
def test_explain_is_markdown_that_derives_the_answer(name, seed):
    mod = EXERCISES[name]
    p = mod.make_problem(seed)
    text = mod.explain(p)
    assert isinstance(text, Markdown) and text._repr_markdown_() == text
    assert text.startswith(f"#### Worked explanation: `{name}`")
    body, _, tail = text.rpartition("**Answer:**")
    assert body.strip() and f"`{answer_text(mod, p)}`" in tail
    for spellings in answer_tokens(mod.solve(p)):
        assert any(re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", body) for t in spellings), (
            f"{name}: the explanation body never shows {spellings}")
    assert p.explain() == text == il.exercises.explain(p)


@pytest.mark.parametrize("name", CONCEPTUAL)
def test_conceptual_explanations_judge_every_option(name):
    mod = EXERCISES[name]
    for seed in (0, 1, "s1234567"):
        p = mod.make_problem(seed)
        text = mod.explain(p)
        letters = LETTERS[:len(p.params["choices"])]
        for x in letters:
            mark = "✓" if x == mod.solve(p) else "✗"
            assert f"**({x})** {mark}" in text


# ---- conceptual items -----------------------------------------------------------------------
@pytest.mark.parametrize("name", CONCEPTUAL)
@SLOW
@given(seed=int_seeds | text_seeds)
def test_conceptual_items_accept_every_letter_spelling(name, seed):
    mod = EXERCISES[name]
    p = mod.make_problem(seed)
    x = mod.solve(p)
    assert x in LETTERS and len(p.params["choices"]) >= 2
    for spelled in (x, x.upper(), f"({x})", f"({x.upper()})", f" {x}) ", f"{x}.", f" ( {x} ) "):
        assert mod.check(p, spelled).startswith("✓"), spelled
    other = next(y for y in LETTERS if y != x)
    assert mod.check(p, f"({other})") == f"✗ not ({other})." + (
        f" Hint: {p.hint}" if p.hint else "")
    for bad in ("z", "ab", "", "(b", "b c", "1", 2, ["b"], "bb)"):
        msg = mod.check(p, bad)
        if bad == "(b":                       # a lone opening bracket is still the letter b
            continue
        assert msg.startswith("✗ could not read your answer"), (bad, msg)


@pytest.mark.parametrize("name", CONCEPTUAL)
def test_conceptual_options_are_shuffled_by_the_seed(name):
    mod = EXERCISES[name]
    answers = [mod.solve(mod.make_problem(s)) for s in range(40)]
    assert len(set(answers)) >= 3, answers
    p = mod.make_problem(5)
    texts = [c.text for c in p.params["choices"]]
    assert len(set(texts)) == len(texts) and sum(c.correct for c in p.params["choices"]) == 1
    for x, c in zip(LETTERS, p.params["choices"], strict=False):
        assert f"({x}) {c.text}" in p.text


def test_multiple_choice_needs_exactly_one_right_option():
    rng = rng_for("t", 0)
    with pytest.raises(ValueError, match="exactly one"):
        multiple_choice("t", 0, rng, "q?", [Choice("a", True, ""), Choice("b", True, "")])
    with pytest.raises(ValueError, match="exactly one"):
        multiple_choice("t", 0, rng, "q?", [Choice("a", False, ""), Choice("b", False, "")])
    p = multiple_choice("t", 0, rng, "q?", [Choice("yes", True, "y"), Choice("no", False, "n")])
    assert p.params["choices"][ord(p.params["answer"]) - ord("a")].text == "yes"


def test_freed_memory_options_are_replayed_not_asserted():
    """Every sequence in the pools does what its pool says (stale vs not), on the model."""
    from iommu_lab.exercises import freed_memory as fm

    iovas = {"A": 0x40_0000, "B": 0x80_0000}
    for steps, _ in fm.UNSAFE:
        assert "stale" in fm.replay(steps, iovas)
    for steps, _ in fm.SAFE:
        assert "stale" not in fm.replay(steps, iovas)


def test_first_to_finish_winner_is_the_fastest_replay():
    from iommu_lab.exercises import first_to_finish as ff

    for seed in range(6):
        p = ff.make_problem(seed)
        results = ff.race(p.params["pages"], p.params["costs"])
        best = min(results, key=lambda s: results[s]["done_ns"])
        chosen = p.params["choices"][LETTERS.index(ff.solve(p))]
        assert chosen.text.startswith(best + " ")
        times = sorted(r["done_ns"] for r in results.values())
        assert times[1] >= ff.MARGIN * times[0]


def test_bitmap_split_true_statement_matches_the_core():
    from iommu_lab.exercises import bitmap_split as bs

    for seed in range(10):
        p = bs.make_problem(seed)
        q = p.params
        for c in p.params["choices"]:
            desc = c.text.removeprefix("with ").rsplit(": ", 1)[0]
            bm = dict(bs.BITMAPS)[desc]
            real = bs.split_text(bs.split(bm, q["iova"], q["paddr"], q["size"]))
            assert c.text.endswith(real) == c.correct, c.text


# ---- instructor key -------------------------------------------------------------------------
def test_answer_key_lists_every_answer_per_seed():
    seeds = [0, "s1234567"]
    df = answer_key(seeds)
    assert list(df.columns) == ["seed", "notebook", "exercise", "answer"]
    assert len(df) == len(seeds) * len(EXERCISES)
    for row in df.itertuples():
        mod = EXERCISES[row.exercise]
        assert row.notebook == mod.NOTEBOOK
        assert row.answer == answer_text(mod, mod.make_problem(row.seed))
    for seed in seeds:
        nbs = list(df[df["seed"] == seed]["notebook"])
        assert nbs == sorted(nbs)


def test_answer_key_filters_notebooks_and_refuses_bad_input():
    df = answer_key(["7"], notebooks=["2", "03"])
    assert set(df["notebook"]) == {"02", "03"}
    assert len(df) == sum(m.NOTEBOOK in ("02", "03") for m in EXERCISES.values())
    assert answer_key(7)["answer"].tolist() == answer_key(["7"])["answer"].tolist()
    with pytest.raises(SeedError, match="empty"):
        answer_key([0, ""])
    with pytest.raises(SeedError, match="no seeds"):
        answer_key([])
    with pytest.raises(ValueError, match="notebook '99' has no exercises"):
        answer_key([0], notebooks=["99"])


def test_key_cli(capsys, tmp_path):
    out_csv = tmp_path / "key.csv"
    assert cli.main(["key", "--seeds", "0,s1234567", "--notebooks", "02",
                     "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "freed_memory" in out and "s1234567" in out and "teardown" not in out
    df = pd.read_csv(out_csv, dtype=str)
    assert list(df.columns) == ["seed", "notebook", "exercise", "answer"]
    want = answer_key(["0", "s1234567"], ["02"])
    assert df["answer"].tolist() == want["answer"].tolist()


@pytest.mark.parametrize("argv,needle", [
    (["key", "--seeds", "0,,1"], "seed 2 of 3 is empty"),
    (["key", "--seeds", " "], "empty"),
    (["key", "--seeds", "0", "--notebooks", "99"], "has no exercises"),
    (["key", "--seeds", "0", "--notebooks", "00"], "notebook '00' has no exercises"),  # index
    (["key", "--seeds", "0", "--csv", "/nonexistent-dir/k.csv"], "cannot write"),
    (["key"], "--seeds"),
])
def test_key_cli_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    try:
        code = cli.main(argv)
    except SystemExit as exc:    # argparse: a missing required option
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert err.startswith("iommu_lab: error:")


# ---- the build mocks answers for a SEED given as a string ------------------------------------
def load_chrome():
    spec = importlib.util.spec_from_file_location("notebook_chrome",
                                                  ROOT / "tools" / "notebook_chrome.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def exercise_notebook(seed_line: str) -> nbformat.NotebookNode:
    cells = ["from iommu_lab.exercises import stale_dma, freed_memory\n" + seed_line,
             "p1 = stale_dma.make_problem(SEED)", "ANSWER = None  # e.g. [\"hit\"]",
             "print(stale_dma.check(p1, ANSWER))", "p2 = freed_memory.make_problem(SEED)",
             'ANSWER = None  # a letter, e.g. "b"', "print(freed_memory.check(p2, ANSWER))"]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


@pytest.mark.parametrize("line,seed", [('SEED = "s1234567"  # change me', "s1234567"),
                                       ("SEED = 'Ana María'", "Ana María"),
                                       ("SEED = 42  # change me", 42)])
def test_build_mocks_the_answers_of_a_string_seed(line, seed):
    chrome = load_chrome()
    nb = exercise_notebook(line)
    assert chrome.mock_answers(nb, "t.md") == 2
    from iommu_lab.exercises import freed_memory, stale_dma

    mocks = [c.metadata["nbmake"]["mock"]["ANSWER"] for c in nb.cells if "nbmake" in c.metadata
             and "mock" in c.metadata["nbmake"]]
    assert mocks == [stale_dma.solve(stale_dma.make_problem(seed)),
                     freed_memory.solve(freed_memory.make_problem(seed))]


@pytest.mark.parametrize("line,match", [('SEED = ""', "empty"), ("SEED = None", "found 0"),
                                        ("SEED = 3.5", "found 0")])
def test_build_refuses_a_bad_seed_with_a_message(line, match):
    chrome = load_chrome()
    with pytest.raises(chrome.ChromeError, match=match):
        chrome.mock_answers(exercise_notebook(line), "t.md")


# ---- no answer visible in what ships ----------------------------------------------------------
SHIPPED = sorted((ROOT / "notebooks").glob("*.md")) + sorted(
    (ROOT / "notebooks").glob("app-*.ipynb"))


def shipped(path: Path) -> nbformat.NotebookNode:
    if path.suffix == ".md":
        return jupytext.read(path, fmt="md:myst")
    return nbformat.read(path, as_version=4)


def leaks(nb: nbformat.NotebookNode) -> list[str]:
    """Code cells that show a solution or explanation by default, or carry outputs."""
    return [c.source for c in nb.cells if c.cell_type == "code" and (
        "solve(" in c.source or "explain(" in c.source or c.get("outputs"))]


def unchecked_answers(nb: nbformat.NotebookNode) -> list[str]:
    """``ANSWER`` cells that are not ``ANSWER = None`` or not followed by a check cell."""
    check = load_chrome().CHECK_CELL
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    return [src for i, src in enumerate(code) if src.startswith("ANSWER") and (
        not src.startswith("ANSWER = None") or i + 1 == len(code)
        or not check.fullmatch(code[i + 1].strip()))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_no_cell_shows_a_solution_or_explanation_by_default(path):
    """A student's notebook runs no ``solve(`` or ``explain(`` and carries no outputs; the
    text may tell them how to call either on demand."""
    assert leaks(shipped(path)) == [], f"{path.name} shows an answer"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_answer_cell_is_followed_by_its_check(path):
    assert unchecked_answers(shipped(path)) == [], path.name


def test_the_scan_sees_a_leaked_answer():
    """The two tests above fail on a notebook that prints an answer or skips a check."""
    nb = exercise_notebook("SEED = 0")
    assert leaks(nb) == [] and unchecked_answers(nb) == []
    nb.cells.insert(3, nbformat.v4.new_code_cell("stale_dma.explain(p1)"))
    assert leaks(nb) == ["stale_dma.explain(p1)"]
    assert unchecked_answers(nb) == ['ANSWER = None  # e.g. ["hit"]']
    nb.cells[3] = nbformat.v4.new_code_cell("print(stale_dma.check(p1, ANSWER))")
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="4K")]
    assert len(leaks(nb)) == 1 and unchecked_answers(nb) == []
    nb.cells[2].source = 'ANSWER = ["stale"]'
    assert unchecked_answers(nb) == ['ANSWER = ["stale"]']
