"""What every exercise shares: seeds, the Problem record, a ``check`` that never raises, the
worked explanation (OSTEP's ``-c``) and seeded multiple choice.

An exercise module has ``NAME``, ``NOTEBOOK`` ("01".."10"), ``KIND`` ("numeric" |
"conceptual"), ``make_problem(seed) -> Problem`` decorated with :func:`seeded` (each
student's seed gives a different, reproducible problem, as OSTEP's ``-s``; an int or any
string such as a student ID), ``solve(problem)`` (the answer), ``check(problem, answer) ->
str`` (through :func:`run_check`) and ``explain(problem)`` decorated with :func:`explainer`
(markdown computed by running the model, ending with the answer).
"""

from __future__ import annotations

import functools
import numbers
import random
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import import_module
from typing import Any

from ..units import fmt_size, parse_size

NOT_ANSWERED = "not answered yet: set ANSWER to your prediction, then run this cell again"
SEED_HELP = ('set SEED to your student number (an int, e.g. SEED = 1234567) or your student '
             'ID as a string (e.g. SEED = "s1234567")')
LETTERS = "abcdefgh"


class SeedError(ValueError):
    """A seed that is neither an int nor a non-empty string (the message says which)."""


class Markdown(str):
    """A string Jupyter renders as Markdown (``_repr_markdown_``); ``print`` shows the source.
    Keeps the exercises free of IPython (tests/test_layering.py)."""

    def _repr_markdown_(self) -> str:
        return str(self)


class RefusedParams(dict):
    """``params`` of a problem made from a bad seed: any lookup raises the seed's message, so
    ``solve`` on it fails with that message rather than a bare KeyError."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def __missing__(self, key: str) -> Any:
        raise SeedError(self.message)


@dataclass(frozen=True, eq=False)
class Problem:
    """One seeded problem: ``text`` for the student, ``params`` for the solver.

    ``seed`` is what the student gave (``"  S1234567 "`` stays as typed). A problem made from a
    bad seed has ``error`` set: it prints the error, ``check`` returns it, ``explain`` shows it.
    """

    exercise: str
    seed: Any
    text: str
    params: dict[str, Any] = field(default_factory=dict)
    answer_format: str = ""
    hint: str = ""
    error: str = ""

    def __str__(self) -> str:
        if self.error:
            return f"✗ {self.error}"
        return f"{self.text}\n\nAnswer format: {self.answer_format}"

    def _repr_markdown_(self) -> str:
        if self.error:
            return f"**Exercise `{self.exercise}`: ✗ {self.error}**"
        return f"**Exercise `{self.exercise}` (seed {self.seed!r})**\n\n```text\n{self}\n```"

    def explain(self) -> Markdown:
        """The worked explanation (same as ``iommu_lab.exercises.explain(problem)``)."""
        return import_module(__package__).explain(self)


# ---- seeds -------------------------------------------------------------------------------
def seed_key(seed: Any) -> int | str:
    """The canonical form of a seed, or :class:`SeedError` naming what is wrong.

    An int stays itself. A string loses surrounding whitespace, runs of inner whitespace become
    one space, case is folded and Unicode is put in NFC form, so ``" S1234567"``,
    ``"s1234567"`` and a "María" typed with a combining accent are each one seed; a string of
    digits gives the same problem as that int (``"42"`` and ``42``).
    """
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(seed)
    if isinstance(seed, str):
        key = unicodedata.normalize("NFC", " ".join(seed.split())).casefold()
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            key, why = "", "it is not printable text"
        else:
            why = "it is empty"
        if key:
            return key
    elif seed is None:
        why = "no seed given"
    elif isinstance(seed, bool):
        why = "True/False is not a student number"
    elif isinstance(seed, float):
        why = "a float: write a whole number without a decimal point"
    else:
        why = f"a {type(seed).__name__}"
    raise SeedError(f"SEED = {seed!r} is not usable ({why}): {SEED_HELP}")


def rng_for(name: str, seed: Any) -> random.Random:
    """A generator private to (exercise, seed): reproducible, and different per exercise.

    ``random.Random`` seeds a string through SHA-512 (its "version 2" seeding), not the
    per-process ``hash()``, so a seed gives the same problem on every run and machine.
    """
    return random.Random(f"{name}:{seed_key(seed)}")


def refused_problem(name: str, seed: Any, message: str) -> Problem:
    """The problem a bad seed gets: it carries the message instead of raising in a notebook."""
    return Problem(name, seed, message, RefusedParams(message), error=message)


def seeded(name: str) -> Callable[[Callable[[Any], Problem]], Callable[[Any], Problem]]:
    """Decorate ``make_problem``: the body gets the canonical seed (:func:`seed_key`); a bad
    seed gives a :func:`refused_problem` (never a traceback); the problem keeps the seed as
    the student gave it."""
    def wrap(make: Callable[[Any], Problem]) -> Callable[[Any], Problem]:
        @functools.wraps(make)
        def make_problem(seed: Any) -> Problem:
            try:
                key = seed_key(seed)
            except SeedError as exc:
                return refused_problem(name, seed, str(exc))
            return replace(make(key), seed=seed)
        return make_problem
    return wrap


# ---- answers -----------------------------------------------------------------------------
def as_int(value: Any, what: str = "value") -> int:
    """An int from an int, ``"0x1000"``, ``"4096"`` or ``"4K"`` (bools refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a number, not {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return parse_size(value, what)


def size_key(value: Any) -> str:
    """``"4K"`` for 4096, ``"4k"``, ``"4KiB"`` or ``"0x1000"``."""
    return fmt_size(as_int(value, "page size"))


def compare_fields(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """The field names whose values differ (missing fields count as wrong)."""
    return [k for k in expected if k not in got or got[k] != expected[k]]


def dict_of_ints(fields: Sequence[str]) -> Callable[[Any], dict[str, int]]:
    """A normaliser for answers that are a dict of whole numbers keyed by ``fields``."""
    def normalize(answer: Any) -> dict[str, int]:
        if not isinstance(answer, dict):
            raise ValueError(f"expected a dict with keys {', '.join(fields)}")
        return {str(k): as_int(v, str(k)) for k, v in answer.items()}
    return normalize


def list_of_words(allowed: Sequence[str]) -> Callable[[Any], list[str]]:
    """A normaliser for answers that are a list of words from ``allowed`` (``"Stale"`` is
    ``"stale"``), e.g. what each DMA read returned."""
    def normalize(answer: Any) -> list[str]:
        if not isinstance(answer, list | tuple):
            raise ValueError(f"expected a list, got {type(answer).__name__}")
        out = []
        for v in answer:
            word = str(v).strip().lower()
            if word not in allowed:
                raise ValueError(f"{v!r} is not one of {', '.join(allowed)}")
            out.append(word)
        return out
    return normalize


def format_answer(answer: Any, hex_ints: bool | Collection[str] = False) -> str:
    """An answer as a student would type it: ``{"inv_cmds": 5}``, ``["hit", "stale"]``,
    ``[0x40001000, 0]`` or ``b``. ``hex_ints``: True (every int in hex) or the dict keys
    whose values are shown in hex."""
    def one(v: Any, key: Any = None) -> str:
        if isinstance(v, bool) or not isinstance(v, int):
            return f'"{v}"' if isinstance(v, str) else repr(v)
        use_hex = hex_ints is True or (not isinstance(hex_ints, bool) and key in hex_ints)
        return f"{v:#x}" if use_hex and v else str(v)
    if isinstance(answer, dict):
        return "{" + ", ".join(f'"{k}": {one(v, k)}' for k, v in answer.items()) + "}"
    if isinstance(answer, list | tuple):
        return "[" + ", ".join(one(v) for v in answer) + "]"
    return answer if isinstance(answer, str) else one(answer)


def answer_text(module: Any, problem: Problem) -> str:
    """The module's answer to ``problem`` as text (hex where the module's ``HEX_ANSWER`` says:
    True, or the names of the fields to show in hex)."""
    return format_answer(module.solve(problem), getattr(module, "HEX_ANSWER", False))


def run_check(problem: Problem, answer: Any, normalize: Callable[[Any], Any],
              solve: Callable[[Problem], Any], explain: str = "") -> str:
    """Shared ``check``: "not answered yet" / ✓ / ✗ with per-field feedback. Never raises."""
    if problem.error:
        return f"✗ {problem.error}"
    if answer is None or answer is Ellipsis:
        return NOT_ANSWERED
    try:
        got = normalize(answer)
    except Exception as exc:  # noqa: BLE001 - a self-check must never crash the notebook
        return (f"✗ could not read your answer ({exc}). Expected {problem.answer_format}")
    try:
        want = normalize(solve(problem))
    except Exception as exc:  # noqa: BLE001
        return f"✗ internal error while solving this problem: {exc!r} (please report it)"
    if got == want:
        return "✓ correct!" + (f" {explain}" if explain else "")
    if isinstance(want, dict) and isinstance(got, dict):
        wrong = compare_fields(want, got)
        extra = sorted(set(got) - set(want))
        parts = []
        right = [k for k in want if k not in wrong]
        if right:
            parts.append("right: " + ", ".join(right))
        if wrong:
            parts.append("not right: " + ", ".join(wrong))
        if extra:
            parts.append("unexpected: " + ", ".join(map(str, extra)))
        msg = "✗ not yet — " + "; ".join(parts) + "."
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        wrong_i = [i + 1 for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b]
        msg = f"✗ not yet — item(s) {', '.join(map(str, wrong_i))} are not right."
    elif isinstance(want, str) and isinstance(got, str):
        msg = f"✗ not ({got})."
    else:
        msg = f"✗ not yet. Expected {problem.answer_format}"
    return msg + (f" Hint: {problem.hint}" if problem.hint else "")


# ---- worked explanations (OSTEP's -c) ---------------------------------------------------
def explainer(body: Callable[[Problem], str]) -> Callable[[Problem], Markdown]:
    """Decorate a module's ``explain``: a title, the body (markdown computed by running the
    model) and the answer line; a problem from a bad seed shows its message instead."""
    @functools.wraps(body)
    def explain(problem: Problem) -> Markdown:
        if problem.error:
            return Markdown(f"✗ {problem.error}")
        module = import_module(body.__module__)
        return Markdown(f"#### Worked explanation: `{problem.exercise}` (seed {problem.seed!r})"
                        f"\n\n{body(problem).strip()}\n\n**Answer:** "
                        f"`{answer_text(module, problem)}`\n")
    return explain


def md_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of ``rows`` (the keys of the first row are the columns)."""
    if not rows:
        return "(none)"
    cols = list(rows[0])
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def commands_text(slots: Sequence[Any]) -> str:
    """Commands of queue slots (``CommandQueue.slots()``) in order, runs of one opcode
    grouped: ``CMD_TLBI_NH_VA ×16 (0x1000 … 0x10000), CMD_SYNC``; "nothing" if empty."""
    runs: list[list[Any]] = []
    for s in slots:
        if runs and runs[-1][0].cmd.name == s.cmd.name:
            runs[-1].append(s)
        else:
            runs.append([s])
    parts = []
    for run in runs:
        cmd = run[0].cmd
        text = f"`{cmd.name}`" + (f" ×{len(run)}" if len(run) > 1 else "")
        if cmd.size:
            last = run[-1].cmd
            text += (f" ({cmd.iova:#x} … {last.iova:#x})" if len(run) > 1
                     else f" ({cmd.iova:#x}, {fmt_size(cmd.size)})")
        parts.append(text)
    return ", ".join(parts) if parts else "nothing"


def new_slots(queue: Any, since: int) -> list[Any]:
    """The queue's commands written at positions ``since`` and later (a snapshot)."""
    return [s for s in queue.slots() if s.pos >= since]


def counters(stats: Mapping[str, int], names: Sequence[str]) -> str:
    """``inv_cmds = 5, sync_cmds = 5``: the named counters of a ``stats()`` snapshot."""
    return ", ".join(f"`{n}` = {stats[n]:,}" for n in names)


# ---- conceptual items: seeded multiple choice ---------------------------------------------
@dataclass(frozen=True)
class Choice:
    """One option of a multiple-choice item and why it is right, or why it is wrong."""

    text: str
    correct: bool
    why: str


def multiple_choice(name: str, seed: Any, rng: random.Random, question: str,
                    choices: Sequence[Choice], hint: str = "",
                    context: Mapping[str, Any] | None = None) -> Problem:
    """A problem whose options are shuffled by ``rng``; the answer is the right one's letter.
    Exactly one choice must be correct (a programming error otherwise)."""
    order = list(choices)
    if sum(c.correct for c in order) != 1 or not 2 <= len(order) <= len(LETTERS):
        raise ValueError(f"{name}: a multiple-choice item needs 2..{len(LETTERS)} choices, "
                         "exactly one of them correct")
    rng.shuffle(order)
    letters = LETTERS[:len(order)]
    answer = letters[next(i for i, c in enumerate(order) if c.correct)]
    text = question.rstrip() + "\n" + "\n".join(f"  ({x}) {c.text}"
                                               for x, c in zip(letters, order, strict=True))
    return Problem(name, seed, text, {**(context or {}), "choices": order, "answer": answer},
                   answer_format=f'one letter, {", ".join(letters)} (e.g. "{letters[1]}")',
                   hint=hint)


LETTER_RE = re.compile(r"\(?\s*([a-z])\s*[).:]?", re.IGNORECASE)


def read_letter(problem: Problem, answer: Any) -> str:
    """``"b"`` from ``"b"``, ``"B"``, ``"(b)"``, ``" b) "``, ``"b."``; ValueError otherwise."""
    letters = LETTERS[:len(problem.params["choices"])]
    if not isinstance(answer, str):
        raise ValueError(f"expected a letter as a string such as \"b\", not {answer!r}")
    m = LETTER_RE.fullmatch(answer.strip())
    if m is None or m.group(1).lower() not in letters:
        raise ValueError(f"{answer!r} is not one of the choices {', '.join(letters)}")
    return m.group(1).lower()


def solve_choice(problem: Problem) -> str:
    """The letter of the right choice."""
    return problem.params["answer"]


def check_choice(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet" for a multiple-choice item; never raises."""
    return run_check(problem, answer, lambda a: read_letter(problem, a), solve_choice)


def question_bank(name: str, module: str, questions: Sequence[tuple[str, Sequence[Choice], str]]
                  ) -> tuple[Callable[[Any], Problem], Callable[[Problem], Markdown]]:
    """``make_problem`` and ``explain`` of a conceptual item that asks one of ``questions``
    (question, choices, hint), picked and shuffled by the seed; its ``solve`` / ``check``
    are :func:`solve_choice` / :func:`check_choice`. ``module`` is the exercise module's
    ``__name__`` (its explanation's answer line is that module's answer)."""
    def make(seed: int | str) -> Problem:
        rng = rng_for(name, seed)
        question, choices, hint = questions[rng.randrange(len(questions))]
        return multiple_choice(name, seed, rng, question, choices, hint)

    def every_option(problem: Problem) -> str:
        return choices_explained(problem)

    make.__doc__ = "One of the questions, its options shuffled by the seed."
    every_option.__doc__ = "Every option, right or wrong, and why."
    make.__module__ = every_option.__module__ = module
    make.__name__, every_option.__name__ = "make_problem", "explain"
    return seeded(name)(make), explainer(every_option)


def choices_explained(problem: Problem) -> str:
    """Every option with ✓ or ✗ and why: the core of a conceptual item's explanation."""
    return "\n".join(f"- **({x})** {'✓' if c.correct else '✗'} {c.text} — {c.why}"
                     for x, c in zip(LETTERS, problem.params["choices"], strict=False))
