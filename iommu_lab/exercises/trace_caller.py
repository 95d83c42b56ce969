"""Notebook 09 (conceptual): which caller pattern made this trace?

Tracepoints record no syncs, so the caller must be inferred from how IOVAs are chosen and
reused (analysis/infer.py). Each seed simulates a small workload under a known caller with
the model, prints the measurable features of the trace the kernel would have written
(:func:`~iommu_lab.analysis.kernel_trace.kernel_trace_lines`), and asks which caller it was.
The options are the four merged callers and the 2017 RFC's flush-all teardown.
"""

from __future__ import annotations

from ..analysis.callers import CALLERS
from ..analysis.infer import SIGNATURES, TraceFeatures, infer_callers, trace_features
from ..analysis.kernel_trace import kernel_trace_lines
from ..inputs.trace import read_trace
from ..inputs.workloads import kvm_teardown, nic_streaming
from ._base import (
    Choice,
    Problem,
    check_choice,
    choices_explained,
    explainer,
    multiple_choice,
    rng_for,
    seeded,
    solve_choice,
)

NAME = "trace_caller"
NOTEBOOK = "09"
KIND = "conceptual"
STRATEGY = "smmuv3-v5.4"
OPTIONS = ("unmap-each", "unmap-fast-batch", "dma-strict", "dma-lazy", "unmap-then-flush-all")
SCENARIOS = (  # (caller, trace format, task)
    ("unmap-each", "v3.16", "qemu-kvm"),
    ("unmap-fast-batch", "v5.17", "qemu-system-x86"),
    ("dma-strict", "v4.0", "irq/42-eth0"),
    ("dma-strict", "v5.17", "irq/57-mlx5_comp"),
    ("dma-lazy", "v4.0", "irq/42-eth0"),
    ("dma-lazy", "v5.17", "irq/57-mlx5_comp"),
)


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """Simulate one scenario, describe its trace, shuffle the options."""
    rng = rng_for(NAME, seed)
    caller, gen, task = rng.choice(SCENARIOS)
    if SIGNATURES[caller].owner == "user":
        work = kvm_teardown(rng.choice(["2M", "4M", "6M"]), "4K",
                            rng.choice([0.3, 0.5, 0.7, 0.9]), seed=rng.randrange(1000))
    else:
        work = nic_streaming(ring_size=rng.choice([16, 32, 64]), packets=rng.randrange(120, 240),
                             seed=rng.randrange(1000))
    lines = kernel_trace_lines(work, STRATEGY, caller, generation=gen, task=task,
                               cpu=rng.randrange(8))
    f = trace_features(read_trace(lines, strict=False))
    context = {"caller": caller, "generation": gen, "task": task, "lines": lines}
    question = (f"A trace in the {gen} format (task {task}) has these features:\n"
                + _describe(f) + "\nThe first events:\n"
                + "".join("    " + ln.strip()[:150] + "\n" for ln in lines[1:3])
                + "Which caller pattern made it?")
    choices = [Choice(name, name == caller, _why(name, caller, gen, f)) for name in OPTIONS]
    return multiple_choice(NAME, seed, rng, question, choices,
                           hint="who chose the IOVAs (an allocator or a VMM)? does a freed "
                                "IOVA come straight back? which kernel printed this format?",
                           context=context)


def _describe(f: TraceFeatures) -> str:
    rows = f.table()
    return "".join(f"  - {r.feature}: {r.value}\n" for r in rows.itertuples()
                   if r.feature not in ("format generation(s)", "timestamps"))


def _why(name: str, caller: str, gen: str, f: TraceFeatures) -> str:
    """Why option ``name`` fits or not, for a trace made by ``caller``."""
    sig, truth = SIGNATURES[name], SIGNATURES[caller]
    if name == caller:
        return {"user": "a VMM's guest-physical IOVAs (from 0, rising, a qemu task), and the "
                        + ("v3.16 format predates iommu_unmap_fast (v4.14): VFIO unmapped "
                           "with iommu_unmap per chunk" if gen == "v3.16" else
                           "a v5.17+ kernel's VFIO batches unmaps with iommu_unmap_fast "
                           "(unmap_unpin_fast, by v4.20)"),
                "allocator": "allocator-chosen IOVAs (power-of-two aligned, top-down below "
                             "4 GiB) and " + (f"{f.reuse} freed IOVAs handed straight back: "
                                              "freed at unmap, strict"
                                              if truth.reuse == "immediate" else
                                              f"{f.reuse} freed IOVAs came back within "
                                              "1 ms: held in the flush queue, lazy")}[sig.owner]
    if not CALLERS[name].merged:
        return "Joerg Roedel's 2017 RFC was never merged: no kernel can have printed this"
    if sig.owner != truth.owner:
        return ("the IOVAs were chosen by the DMA allocator, not by a VMM"
                if truth.owner == "allocator" else
                "these are guest-physical IOVAs from a VMM (start at 0, rise), not the "
                "DMA allocator's")
    if sig.owner == "user":
        return ("iommu_unmap_fast did not exist before v4.14; this is the v3.16 format"
                if gen == "v3.16" else
                "by v4.20 VFIO batched its unmaps (unmap_unpin_fast); this format is v5.17+")
    return (f"{f.reuse} freed IOVAs came back at once; under lazy flushing they wait in the "
            "flush queue until a flush, so almost none would" if sig.reuse == "after flush" else
            f"{f.reuse} freed IOVAs came back within 1 ms, but strict frees them at unmap "
            "and the per-CPU cache hands them straight back")


solve = solve_choice


@explainer
def explain(problem: Problem) -> str:
    """Every option, right or wrong and why; then infer_callers' evidence on the trace."""
    ranked = infer_callers(read_trace(problem.params["lines"], strict=False))
    top = ranked.iloc[0]
    return (choices_explained(problem) + "\n\n`infer_callers()` on the same trace ranks "
            f"`{top['caller']}` first ({top['verdict']}, score {top['score']}): "
            f"{top['evidence']}.")


check = check_choice
