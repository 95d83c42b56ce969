"""Notebook 04: the SMMUv3 command queue's PROD and CONS registers, with the wrap bit.

A queue of ``N = 2**n`` slots keeps PROD and CONS as ``n`` index bits plus one wrap bit
(``Q_IDX``/``Q_WRP``, arm-smmu-v3.c): after W commands written and C consumed,
``PROD = W mod 2N`` and ``CONS = C mod 2N``. Full: same index, different wrap bits; empty:
both equal. So all N slots are usable (hardware-invalidation.md §1.1).
"""

from __future__ import annotations

from typing import Any

from ._base import Problem, dict_of_ints, rng_for, run_check

NAME = "ring_registers"
FIELDS = ("prod", "cons", "free")


def make_problem(seed: int) -> Problem:
    """A small ring, a number of commands written and consumed since reset."""
    rng = rng_for(NAME, seed)
    n = rng.choice([8, 16, 32])
    written = rng.randrange(n + 1, 3 * n)
    consumed = rng.randrange(max(0, written - n), written + 1)
    text = (f"An SMMUv3 command queue has {n} slots (log2size = {n.bit_length() - 1}). Since "
            f"reset the driver has written {written} commands and the SMMU has consumed "
            f"{consumed} of them.\n"
            "What are the CMDQ_PROD and CMDQ_CONS register values (index plus the wrap bit "
            "just above it), and how many slots are free?")
    return Problem(NAME, seed, text, {"entries": n, "written": written, "consumed": consumed},
                   answer_format='a dict, e.g. {"prod": "0x12", "cons": "0x0e", "free": 12} '
                                 "(ints or hex strings)",
                   hint=f"the registers count modulo 2 x {n} = {2 * n}; free = slots - "
                        "(written - consumed).")


def solve(problem: Problem) -> dict[str, int]:
    """The wrap-bit arithmetic (a test checks it against the simulated queue)."""
    p = problem.params
    n, w, c = p["entries"], p["written"], p["consumed"]
    return {"prod": w % (2 * n), "cons": c % (2 * n), "free": n - (w - c)}


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "Full is 'same index, wrap bits differ', so no slot is wasted.")
