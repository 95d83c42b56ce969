"""Notebook 08, conceptual: reading a shoot-out — what a cost sweep can and cannot change,
what a log-log slope says, what scales with CPUs, and a measurement trap. A seeded
multiple-choice item: the seed picks the question and shuffles its options; the answer is a
letter.

Sources: hardware-invalidation.md §0.2 (which costs are assumptions), §9 (commands per
strategy), §6.2 (per-CPU flush queues); kernel-api-history.md §5.2 (the 10 ms timer).
"""

from __future__ import annotations

from ._base import Choice, check_choice, question_bank, solve_choice

NAME = "shootout_concepts"
NOTEBOOK = "08"
KIND = "conceptual"

QUESTIONS: tuple[tuple[str, tuple[Choice, ...], str], ...] = (
    ("You sweep hw_tlbi_ns (the SMMU's time per TLBI, an assumption) from 10 to 800 ns over a "
     "guest teardown on smmuv3-v4.15 and smmuv3-v5.4. Which result can differ from one grid "
     "point to the next?", (
        Choice("Which driver finishes first (end_ns)", True,
               "Time is computed from the assumed costs; the winner flips near hw_tlbi_ns ≈ "
               "mmio_write_ns."),
        Choice("How many doorbells each driver rings", False,
               "Doorbells are counted from the code path (one per command on v4.15, one per "
               "64 on v5.4): no cost enters."),
        Choice("How many TLBIs and CMD_SYNCs each issues", False,
               "Commands follow the kernel's logic for the workload and caller, not the "
               "costs."),
        Choice("Whether a device can reach freed memory after iommu_unmap returns", False,
               "Safety is a property of the order of operations; both drivers wait for their "
               "CMD_SYNC at every cost."),
    ), "which columns are computed from costs at all?"),
    ("On a log-log plot of commands against the number of pages one iommu_unmap removes, "
     "smmuv3-v5.4's line has slope 1 and amd-range's is flat. What does that tell you?", (
        Choice("v5.4 issues a TLBI per page (doubling the pages doubles the commands); AMD's "
               "S-bit range command covers any size with one command plus its completion", True,
               "hardware-invalidation.md §9: v5.4 N TLBI + 1 SYNC; AMD v5.15 1 INV_IOMMU_PAGES "
               "+ 1 COMPLETION_WAIT."),
        Choice("AMD's line is flat because its commands are cheaper", False,
               "The plot shows counts, not times: a flat line means the count does not grow."),
        Choice("v5.4 will always take longer than AMD, whatever the costs", False,
               "More commands need not mean more time; that depends on costs and on who waits "
               "for what."),
        Choice("The two drivers invalidate different amounts of the IOTLB", False,
               "Both drop at least the unmapped pages; AMD may drop a power-of-two superset, "
               "which the command count does not show."),
    ), "a log-log slope is an exponent"),
    ("With 8 CPUs mapping and unmapping DMA buffers at once, strict smmuv3-v5.4 reaches about "
     "1.5 M unmaps/s while lazy reaches several million and keeps growing with CPUs. Why "
     "does lazy scale?", (
        Choice("A lazy unmap only clears PTEs and appends to its own CPU's flush-queue ring; "
               "the shared command queue is used once per 255 unmaps (or per 10 ms)", True,
               "Per-CPU rings (struct iova_fq per CPU) share nothing on the unmap path; strict "
               "unmaps each wait for a CMD_SYNC the one SMMU executes in order."),
        Choice("Lazy mode uses a faster kind of TLBI", False,
               "Its flush is a whole-domain TLBI + CMD_SYNC; it just happens rarely."),
        Choice("Lazy mode gives each CPU its own SMMU command queue", False,
               "There is one command queue per SMMU; the rings are the DMA layer's, in memory."),
        Choice("Strict mode takes a global lock around every unmap", False,
               "v5.4's command queue is lock-free; strict is limited by the SMMU executing "
               "one CMD_SYNC per unmap."),
    ), "what does a lazy unmap touch that another CPU also touches?"),
    ("compare() reports unmaps_per_s = unmap_calls / end_ns. On a 200-packet NIC run "
     "(smmuv3-v5.4), dma-lazy shows about 20,000 unmaps/s and dma-strict about 410,000. What "
     "is wrong with reading that as 'lazy is 20 times slower'?", (
        Choice("end_ns of a lazy run includes idling until the flush queue's last 10 ms timer "
               "fires; measure until the last call returned (or compare CPU time per unmap)",
               True,
               "The run ends only when the pending IOVAs are flushed, 10 ms after the enqueue "
               "that armed the timer (IOVA_FQ_TIMEOUT): most of end_ns is idle time."),
        Choice("Nothing: lazy mode really is slower because it flushes the whole domain", False,
               "It flushes the whole domain once for 200 unmaps; strict syncs 200 times (and "
               "spends twice lazy's CPU time)."),
        Choice("unmaps_per_s counts only the unmaps that were flushed", False,
               "It counts every unmap call."),
        Choice("The lazy run was downgraded to strict", False,
               "Only on kernels or drivers without a flush queue (the row's notes say so)."),
    ), "what happens between the last unmap and end_ns?"),
)


make_problem, explain = question_bank(NAME, __name__, QUESTIONS)
solve = solve_choice
check = check_choice
