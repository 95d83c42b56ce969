"""Notebook 10, conceptual: designing a flush strategy — what the checker's paused IOMMU
assumes, what a passing check shows, which op completes an unmap under each caller, and the
cost a whole-ASID flush hides. A seeded multiple-choice item: the seed picks the question
and shuffles its options; the answer is a letter.

Sources: ``iommu_lab.analysis.check`` (the invariants and caller patterns);
hardware-invalidation.md §1.4 (``arm_smmu_tlb_inv_context``: TLBI_NH_ASID + CMD_SYNC, and
the v6.18 SVA path's ``CMDQ_MAX_TLBI_OPS`` = 512 pages, §1.6), §6.2 (the flush queue calls
``flush_iotlb_all``); kernel-api-history.md §5 (``iommu_iotlb_sync`` after ``unmap_fast``).
"""

from __future__ import annotations

from ._base import Choice, check_choice, question_bank, solve_choice

NAME = "design_concepts"
NOTEBOOK = "10"
KIND = "conceptual"

QUESTIONS: tuple[tuple[str, tuple[Choice, ...], str], ...] = (
    ("check_strategy runs every sequence with the IOMMU paused: it executes commands only "
     "while the CPU waits for a completion (or when a 'consume' step lets it). Why can that "
     "never make a correct strategy fail?", (
        Choice("A correct strategy waits for the completion of its invalidations before the "
               "unmap returns, and a wait lets the IOMMU run until they are done — however "
               "slow it is", True,
               "Only a real wait (CMD_SYNC, wait descriptor, COMPLETION_WAIT) completes an "
               "invalidation in the checker; a strategy that is safe only on fast hardware is "
               "not safe."),
        Choice("A paused IOMMU executes every command the moment it is written", False,
               "The opposite: paused, it executes nothing until the CPU waits or a consume "
               "step lets it."),
        Choice("The checker sends no DMA while the IOMMU is paused", False,
               "The device reads right after each unmap completes; that is how a stale "
               "translation is seen."),
        Choice("A correct strategy issues no commands while the IOMMU is paused", False,
               "Every strict strategy issues TLBIs at each sync; it just waits for them."),
    ), "what makes an invalidation complete when the hardware is as slow as it may be?"),
    ("check_strategy('mine', examples=25).ok is True. What have you learned?", (
        Choice("No counterexample was found in 25 random sequences (of up to 12 steps) per "
               "caller pattern — evidence, not proof; more examples, longer sequences or "
               "another seed may still find one", True,
               "Property-based testing searches; it does not prove. A failing search is "
               "shrunk to a minimal counterexample, a passing one proves nothing."),
        Choice("The strategy is safe for every sequence of calls", False,
               "Only the sequences drawn were run."),
        Choice("The strategy is at least as fast as smmuv3-v5.4", False,
               "The check judges safety only; race() measures time."),
        Choice("The strategy issues the same commands as the kernel's driver", False,
               "A strategy may issue entirely different commands and still be safe."),
    ), "how many sequences were run, out of how many possible?"),
    ("sync-every-k (only every k-th iotlb_sync waits for its CMD_SYNC) fails under unmap-each "
     "and passes under dma-lazy. Why?", (
        Choice("A lazy domain completes unmaps with the flush queue's flush_iotlb_all, which "
               "sync-every-k inherits from v5.4 and which waits; unmap-each relies on each "
               "iommu_unmap's iotlb_sync, which waits only every k-th time", True,
               "On a flush-queue domain the unmap issues no leaf TLBIs and no iotlb_sync; "
               "dma-iommu frees the IOVAs only after flush_iotlb_all (TLBI_NH_ASID + "
               "CMD_SYNC, waited for) returned."),
        Choice("Lazy mode never invalidates the IOTLB, so there is nothing to get wrong", False,
               "It invalidates the whole ASID when the queue is full or its 10 ms timer "
               "fires."),
        Choice("The checker does not run DMA on lazy domains", False,
               "It does: after a covering flush, and when a queued IOVA is reused."),
        Choice("The lazy pattern lets the IOMMU run freely, hiding the bug", False,
               "Every pattern runs with the IOMMU paused."),
    ), "which op does each caller rely on to complete an unmap?"),
    ("range-or-all replaces v5.4's TLBI per page with one CMD_TLBI_NH_ASID + CMD_SYNC when a "
     "sync covers more than T pages (v6.18's SVA path does the same from CMDQ_MAX_TLBI_OPS = "
     "512 pages). On a guest teardown it wins by time and commands. Which cost do end_ns and "
     "commands not show?", (
        Choice("The whole-ASID flush also drops every other cached translation of the domain; "
               "the device's next accesses to buffers still mapped miss and walk the page "
               "table (iotlb_misses)", True,
               "TLBI_NH_ASID invalidates all non-global stage-1 entries of the ASID "
               "(hardware-invalidation.md §1.4); the refill cost lands on later DMA."),
        Choice("The CMD_TLBI_NH_ASID is not waited for, so the strategy is unsafe", False,
               "tlb_flush_all() issues CMD_SYNC and waits; the check passes."),
        Choice("It invalidates the TLB entries of every other domain as well", False,
               "The command is scoped to the domain's ASID (and VMID)."),
        Choice("It leaves the freed page-table pages cached in the walk cache", False,
               "A whole-ASID invalidation drops leaf and non-leaf (walk) entries of the ASID."),
    ), "what was in the IOTLB besides the unmapped range?"),
)


make_problem, explain = question_bank(NAME, __name__, QUESTIONS)
solve = solve_choice
check = check_choice
