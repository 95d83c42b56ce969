"""Notebook 05, conceptual: the gather, its merge rule, range TLBIs, and what bounds a
teardown on several CPUs. A seeded multiple-choice item: the seed picks the question and
shuffles its options; the answer is a letter.

Sources: kernel-api-history.md §3.3, §4.1–4.2 (the gather, why ``iotlb_range_add`` went:
[M3]), hardware-invalidation.md §1.5–§1.6 (lock-free queue, RIL).
"""

from __future__ import annotations

from ._base import Choice, check_choice, question_bank, solve_choice

NAME = "gather_concepts"
NOTEBOOK = "05"
KIND = "conceptual"

QUESTIONS: tuple[tuple[str, tuple[Choice, ...], str], ...] = (
    ("In 2017 Will Deacon asked for \"the information about the invalidation as part of "
     "the unmap call\". What does v5.4's struct iommu_iotlb_gather carry from ->unmap to "
     "->iotlb_sync that the v4.14 ->iotlb_range_add(domain, iova, size) callback could "
     "not?", (
        Choice("The page size each range was mapped with, in a per-caller structure on the "
               "caller's stack, so the driver chooses its commands when it syncs", True,
               "Will's 2019 series removed iotlb_range_add because the page size was not "
               "known to it and its only state was the shared iommu_domain (kernel-api-"
               "history §3.3, [M3])."),
        Choice("A guarantee that the invalidation has completed when iommu_unmap_fast "
               "returns", False,
               "On v5.4 ->unmap only records the range; nothing is even issued until "
               "iotlb_sync, and only the CMD_SYNC proves completion."),
        Choice("Permission to skip invalidating pages the device never touched", False,
               "Every gathered page is invalidated at the sync: the driver cannot know what "
               "the device cached."),
        Choice("A lock that serialises every CPU's unmaps of the domain", False,
               "The opposite: the gather is private to its caller, so no shared per-domain "
               "state needs a lock."),
    ), "think about what iotlb_range_add's arguments could not tell the driver"),
    ("A v5.4 caller has gathered the 4K pages 0x0–0x1fff and now unmaps the 2M block at "
     "0x200000 with the same gather. What does iommu_iotlb_gather_add_page do?", (
        Choice("Syncs first (the page size differs), then restarts the gather with the 2M "
               "block", True,
               "v5.4: if pgsize differs or the page is disjoint, iommu_tlb_sync() before "
               "the gather is rewritten (include/linux/iommu.h @v5.4)."),
        Choice("Widens the range to 0x0–0x3fffff so one sync covers both", False,
               "That is AMD's own v5.15 choice (iommu_iotlb_gather_add_range only), not the "
               "core's add_page."),
        Choice("Keeps only the 2M block: its invalidation covers the 4K pages too", False,
               "0x0–0x1fff is outside the block at 0x200000."),
        Choice("Nothing special: ranges are only compared at iommu_iotlb_sync", False,
               "The comparison happens on every add_page; the early sync is issued "
               "there, inside unmap_fast."),
    ), "a gather has one pgsize"),
    ("With SMMUv3.2 range invalidation, unmapping 512 contiguous 4K pages takes one "
     "CMD_TLBI_NH_VA but 35 pages take two. Why?", (
        Choice("A range command covers (NUM+1) × 2^SCALE pages with a 5-bit NUM: 512 = 1 × "
               "2^9 is one command; 35 = 0b100011 needs 3 × 2^0, then 1 × 2^5", True,
               "arm_smmu_tlb_inv_range: scale = __ffs(num_pages), num = (num_pages >> scale)"
               " & 31, repeat with what is left (hardware-invalidation.md §1.6)."),
        Choice("Range commands cover naturally aligned power-of-two blocks, so 35 pages "
               "become two halves of a 64-page block", False,
               "RIL invalidates exactly the range; the power-of-two superset is VT-d's PSI "
               "and AMD's S bit (notebook 06)."),
        Choice("One command may cover at most 32 pages", False,
               "512 pages in one command contradicts it: SCALE multiplies the count."),
        Choice("The second command is the CMD_SYNC", False,
               "The CMD_SYNC comes on top: 35 pages are two TLBIs plus the CMD_SYNC."),
    ), "write the page count in binary"),
    ("With the model's default costs (the SMMU takes 0.05 µs per TLBI and 0.5 µs per "
     "CMD_SYNC), 8 CPUs tearing down a 4 MiB guest (1,024 pages, unmap-each) finish at "
     "almost the same time on smmuv3-v4.15 (a spinlock) and smmuv3-v5.4 (lock-free). "
     "Why?", (
        Choice("Every unmap waits for its own CMD_SYNC and the one SMMU executes commands "
               "one after another: the consumer, not the lock, limits throughput", True,
               "1,024 unmaps × (0.05 + 0.5) µs ≈ 563 µs of SMMU work, which is what both "
               "take on 2 or more CPUs; make the SMMU faster and the lock shows."),
        Choice("The lock-free queue only helps with 64 CPUs or more", False,
               "Nothing in the protocol depends on 64 CPUs; with a faster SMMU it wins at 8."),
        Choice("v5.4 issues more commands than v4.15", False,
               "Both issue one TLBI and one CMD_SYNC per unmap; v5.4 rings fewer doorbells."),
        Choice("The gather merges all the CPUs' unmaps into one flush", False,
               "Each iommu_unmap syncs its own gather; gathers are per caller."),
    ), "where does each unmap spend its time, and who else is waiting for the same thing?"),
)


make_problem, explain = question_bank(NAME, __name__, QUESTIONS)
solve = solve_choice
check = check_choice
