"""Notebook 04: the SMMUv3 command queue's PROD and CONS registers, with the wrap bit.

A queue of ``N = 2**n`` slots keeps PROD and CONS as ``n`` index bits plus one wrap bit
(``Q_IDX``/``Q_WRP``, arm-smmu-v3.c): after W commands written and C consumed,
``PROD = W mod 2N`` and ``CONS = C mod 2N``. Full: same index, different wrap bits; empty:
both equal. So all N slots are usable (hardware-invalidation.md §1.1).
"""

from __future__ import annotations

from typing import Any

from ..core.gather import IommuIotlbGather
from ..core.iommu import iommu_map, iommu_unmap_fast
from ..drivers.registry import iommu_domain_alloc
from ..prot import IOMMU_READ
from ..units import SZ_4K
from ._base import Problem, dict_of_ints, explainer, md_table, rng_for, run_check, seeded

NAME = "ring_registers"
NOTEBOOK = "04"
KIND = "numeric"
HEX_ANSWER = ("prod", "cons")   # answer_key / explain show these in hex
FIELDS = ("prod", "cons", "free")


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
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


def simulate(problem: Problem) -> Any:
    """The queue model after the problem's history: a paused ``smmuv3-v4.15`` ring of that
    size, one TLBI written per ``iommu_unmap_fast`` of a page (early issue), the SMMU told
    to consume one command whenever the ring is full and the rest at the end."""
    p = problem.params
    n, w, c = p["entries"], p["written"], p["consumed"]
    dom = iommu_domain_alloc("smmuv3-v4.15", cmdq_entries=n)
    q = dom.driver.q
    q.paused = True
    iommu_map(dom, 0, 0x4000_0000, w * SZ_4K, IOMMU_READ)
    gather, consumed = IommuIotlbGather(), 0
    for page in range(w):
        if q.prod - consumed == n:
            consumed += q.consume(1)
        iommu_unmap_fast(dom, page * SZ_4K, SZ_4K, gather)
    q.consume(c - consumed)
    return q


@explainer
def explain(problem: Problem) -> str:
    """Each register split into its index and wrap bit, as the queue model shows them."""
    p = problem.params
    n, w, c = p["entries"], p["written"], p["consumed"]
    bits = n.bit_length() - 1
    q = simulate(problem)
    st = q.state()
    regs = st.registers
    rows = [{"register": name, "count since reset": count, f"count mod {2 * n}": regs[key],
             "value": f"{regs[key]:#04x}", "wrap bit": regs[f"{key}_wrp"],
             "slot index": regs[f"{key}_idx"]}
            for name, key, count in (("CMDQ_PROD", "prod", st.prod), ("CMDQ_CONS", "cons",
                                                                     st.cons))]
    waiting = [s.slot for s in q.slots() if s.state in ("pending", "written")]
    free = n - st.pending
    state = ("full (same index, different wrap bits)" if free == 0 else
             "empty (registers equal)" if regs["prod"] == regs["cons"] else
             "neither full nor empty")
    return (f"The queue has {n} = 2^{bits} slots, so each register keeps {bits} index bits and "
            f"one wrap bit above them (`Q_IDX`/`Q_WRP` in arm-smmu-v3.c): it counts modulo "
            f"2 × {n} = {2 * n}, and the wrap bit flips each time the index passes the end of "
            f"the ring. The queue model after {w} commands written and {c} consumed:\n\n"
            + md_table(rows) +
            f"\n\nThe queue holds written − consumed = {st.prod} − {st.cons} = "
            f"{st.pending} command(s), in slots {', '.join(map(str, waiting)) or '(none)'}; "
            f"free = {n} − {st.pending} = {free}. The ring is {state}.")


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "Full is 'same index, wrap bits differ', so no slot is wasted.")
