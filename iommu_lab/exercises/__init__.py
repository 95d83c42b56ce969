"""Seeded exercises: one module per exercise, each with ``make_problem(seed)``, ``solve``,
``check`` (which returns "not answered yet", "✓ ..." or "✗ ..." and never raises) and
``explain``, plus ``NAME``, ``NOTEBOOK`` ("01".."10") and ``KIND`` ("numeric" |
"conceptual"); the contract is in ``_base``.

- **Seeds**: an int or any string (a student ID such as ``"s1234567"`` or ``"Ana María"``;
  surrounding spaces, case and Unicode form do not matter; ``"42"`` is ``42``). The same seed
  gives the same problem on every run and machine. A bad seed (None, a float, a bool, an empty
  string) gives a problem that prints what is wrong, and ``check``/``explain`` say it too —
  never a traceback in a notebook.
- **Worked explanation on demand** (OSTEP's ``-c``): ``explain(p)`` here, ``p.explain()``, or
  ``<module>.explain(p)`` — markdown computed by running the model (the pieces, the commands
  issued, the ring state or counters), ending with the answer. Never printed by default.
- **Conceptual items** are seeded multiple choice (options shuffled per seed); the answer is
  a letter and ``check`` accepts ``"b"``, ``"B"``, ``"(b)"``, ``" b) "``.
- **Instructor key**: ``answer_key(seeds, notebooks=None)`` (a DataFrame: seed, notebook,
  exercise, answer), or ``python -m iommu_lab key --seeds 0,1,s1234567``.

=================  ========  ==========================================================
module             notebook  question
=================  ========  ==========================================================
pgsize_split       01        how many pages of each size does iommu_map create?
iova_to_phys       01        what does iommu_iova_to_phys return for three IOVAs?
bitmap_split       01        (conceptual) which pgsize_bitmap splits a 2M + 4K map how?
stale_dma          02        hit / walk / fault / stale after an unflushed unmap?
flush_count        02        TLBIs, CMD_SYNCs, doorbells of one v4.14 iommu_unmap
freed_memory       02        (conceptual) which call sequence can reach unmapped memory?
teardown           03        flushes of a guest teardown per (strategy, caller)
rfc2017_calls      03        what range_add+sync / flush_tlb_all / unmap_sync issue
driver_lacks       03        (conceptual) which information does the driver lack?
ring_registers     04        CMDQ_PROD / CMDQ_CONS with the wrap bit; free slots
waste              04        wasted TLBIs and needless syncs (Will's objection)
first_to_finish    04        (conceptual) which SMMUv3 driver finishes first, these costs?
gather_sync        05        TLBIs, CMD_SYNCs, doorbells of one caller's v5.4 gather
ril_range          05        SMMUv3.2 range TLBIs (NUM/SCALE) against v5.4's batches of 64
gather_concepts    05        (conceptual) the gather, its merge rule, RIL, several CPUs
psi_mask           06        a VT-d PSI's address mask, the DSI fall-back, pages it misses
amd_superset       06        AMD's S-bit block and the valid entries it drops
hw_concepts        06        (conceptual) sync on map, ATS, several IOMMUs, virtio
unsafe_sync        10        what a "sync every k-th time" strategy lets the device read
flush_threshold    10        commands of "range below T pages, whole ASID above"
design_concepts    10        (conceptual) the checker's assumptions, a whole-ASID flush
replay_syncs       09        CMD_SYNCs of one unmap trace under three callers
lazy_window        09        which of a trace's IO page faults lazy mode makes stale
trace_caller       09        (conceptual) which caller pattern made this trace?
fq_flushes         07        flush-alls of the DMA flush queue: ring full or 10 ms timer?
stale_window       07        how many of a rogue device's late writes are stale (lazy)?
lazy_concepts      07        (conceptual) what lazy flushing keeps safe, what it gives up
crossover_tlbi     08        from which SMMU TLBI cost does early issue beat the gather?
sweep_verdict      08        a cost sweep: how often does the winner flip; doorbells (hold)
shootout_concepts  08        (conceptual) what a sweep, a log-log slope, CPU scaling show
=================  ========  ==========================================================
"""

from __future__ import annotations

from typing import Any

from . import (
    amd_superset,
    bitmap_split,
    crossover_tlbi,
    design_concepts,
    driver_lacks,
    first_to_finish,
    flush_count,
    flush_threshold,
    fq_flushes,
    freed_memory,
    gather_concepts,
    gather_sync,
    hw_concepts,
    iova_to_phys,
    lazy_concepts,
    lazy_window,
    pgsize_split,
    psi_mask,
    replay_syncs,
    rfc2017_calls,
    ril_range,
    ring_registers,
    shootout_concepts,
    stale_dma,
    stale_window,
    sweep_verdict,
    teardown,
    trace_caller,
    unsafe_sync,
    waste,
)
from ._base import NOT_ANSWERED, Markdown, Problem, SeedError, answer_text, seed_key

EXERCISES = {m.NAME: m for m in (pgsize_split, iova_to_phys, stale_dma, flush_count, teardown,
                                 rfc2017_calls, ring_registers, waste, unsafe_sync,
                                 flush_threshold, design_concepts, replay_syncs, lazy_window,
                                 trace_caller,
                                 bitmap_split, freed_memory, driver_lacks, first_to_finish,
                                 fq_flushes, stale_window, lazy_concepts, crossover_tlbi,
                                 sweep_verdict, shootout_concepts,
                                 gather_sync, ril_range, gather_concepts, psi_mask,
                                 amd_superset, hw_concepts)}

__all__ = ["EXERCISES", "NOT_ANSWERED", "Problem", "SeedError", "answer_key", "explain",
           "bitmap_split", "freed_memory", "driver_lacks", "first_to_finish", "flush_count", "flush_threshold",
           "iova_to_phys", "pgsize_split", "rfc2017_calls", "ring_registers", "stale_dma",
           "teardown", "unsafe_sync", "design_concepts", "waste", "replay_syncs", "lazy_window",
           "trace_caller",
           "fq_flushes", "stale_window", "lazy_concepts", "crossover_tlbi", "sweep_verdict",
           "shootout_concepts",
           "gather_sync", "ril_range", "gather_concepts", "psi_mask", "amd_superset",
           "hw_concepts"]


def explain(problem: Problem) -> Markdown:
    """The worked explanation of ``problem`` (its module's ``explain``); a message, never an
    exception, for a problem from a bad seed or of no known exercise."""
    if problem.error:
        return Markdown(f"✗ {problem.error}")
    module = EXERCISES.get(problem.exercise)
    if module is None:
        return Markdown(f"✗ no exercise named {problem.exercise!r}")
    return module.explain(problem)


def notebook_key(notebook: Any) -> str:
    """``"02"`` from ``"02"``, ``"2"`` or ``2``; ValueError naming the notebooks that have
    exercises otherwise."""
    have = sorted({m.NOTEBOOK for m in EXERCISES.values()})
    text = str(notebook).strip()
    key = text.zfill(2) if text.isdigit() else text
    if key not in have:
        raise ValueError(f"notebook {notebook!r} has no exercises; notebooks with exercises: "
                         f"{', '.join(have)}")
    return key


def answer_key(seeds: Any, notebooks: Any = None) -> Any:
    """Every exercise's answer for each seed: a DataFrame with columns seed, notebook,
    exercise, answer (as a student would type it), in notebook order. A bad seed or an
    unknown notebook raises ValueError (SeedError for seeds) naming it, before any work."""
    import pandas as pd

    seeds = [seeds] if isinstance(seeds, int | str) else list(seeds)
    if not seeds:
        raise SeedError("no seeds given")
    for seed in seeds:
        seed_key(seed)
    wanted = None if notebooks is None else {notebook_key(n) for n in notebooks}
    modules = sorted((m for m in EXERCISES.values() if wanted is None or m.NOTEBOOK in wanted),
                     key=lambda m: m.NOTEBOOK)   # stable: registration order inside one
    rows = [{"seed": seed, "notebook": m.NOTEBOOK, "exercise": m.NAME,
             "answer": answer_text(m, m.make_problem(seed))}
            for seed in seeds for m in modules]
    return pd.DataFrame(rows, columns=["seed", "notebook", "exercise", "answer"])
