"""What every exercise shares: the Problem record and a ``check`` that never raises.

An exercise module has ``make_problem(seed) -> Problem`` (seeded: each student's seed gives
a different, reproducible problem, as OSTEP's ``-s``), ``solve(problem)`` (the answer, as
OSTEP's ``-c``) and ``check(problem, answer) -> str``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..units import fmt_size, parse_size

NOT_ANSWERED = "not answered yet: set ANSWER to your prediction, then run this cell again"


@dataclass(frozen=True, eq=False)
class Problem:
    """One seeded problem: ``text`` for the student, ``params`` for the solver."""

    exercise: str
    seed: int
    text: str
    params: dict[str, Any] = field(default_factory=dict)
    answer_format: str = ""
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.text}\n\nAnswer format: {self.answer_format}"

    def _repr_markdown_(self) -> str:
        return f"**Exercise `{self.exercise}` (seed {self.seed})**\n\n{self}"


def rng_for(name: str, seed: int) -> random.Random:
    """A generator private to (exercise, seed): reproducible, and different per exercise."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {seed!r}")
    return random.Random(f"{name}:{seed}")


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


def run_check(problem: Problem, answer: Any, normalize: Callable[[Any], Any],
              solve: Callable[[Problem], Any], explain: str = "") -> str:
    """Shared ``check``: "not answered yet" / ✓ / ✗ with per-field feedback. Never raises."""
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
    else:
        msg = f"✗ not yet. Expected {problem.answer_format}"
    return msg + (f" Hint: {problem.hint}" if problem.hint else "")
