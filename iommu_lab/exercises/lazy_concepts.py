"""Notebook 07, conceptual: what lazy flushing keeps safe and what it gives up. A seeded
multiple-choice item: the seed picks the question and shuffles its options; the answer is a
letter.

Sources: kernel-api-history.md §5.2 (the flush queue: it holds the IOVA and, from v5.15, the
freed page-table pages until a flush that started after the enqueue has finished), §5.3
(strict/lazy defaults, ``iommu.strict``, ``IOMMU_DOMAIN_DMA_FQ``), hardware-invalidation.md
§6.2 (the window: 10 ms or 256 entries per CPU).
"""

from __future__ import annotations

from ._base import Choice, check_choice, question_bank, solve_choice

NAME = "lazy_concepts"
NOTEBOOK = "07"
KIND = "conceptual"

QUESTIONS: tuple[tuple[str, tuple[Choice, ...], str], ...] = (
    ("Under lazy flushing, iommu_dma_unmap returns before any invalidation and the driver "
     "frees the data page at once — yet the flush queue keeps the IOVA until a flush-all has "
     "finished. Why the IOVA?", (
        Choice("If the allocator handed the IOVA to a new buffer first, the stale IOTLB "
               "entry would translate the new buffer's DMA to the old page: a well-behaved "
               "device would corrupt freed memory and lose the new data", True,
               "That is the 02→03 rule applied to the IOVA: nothing unmapped is reused until "
               "a covering flush completes. Lazy mode gives up the rule for the data page "
               "(the stale window), never for the IOVA."),
        Choice("To stop a malicious device from writing into the freed page", False,
               "It does not: until the flush the device can still write there. That is the "
               "risk lazy mode accepts."),
        Choice("Because the page-table entry is only cleared when the flush runs", False,
               "->unmap clears the PTE at once; only the IOTLB invalidation is deferred."),
        Choice("Because the IOVA allocator is faster when it frees IOVAs in batches", False,
               "Freeing in batches is a consequence, not the reason: the counter check "
               "(counter < fq_flush_finish_cnt) is about safety."),
    ), "what would a *legitimate* DMA to the new buffer hit?"),
    ("On one CPU, what bounds how long a lazily unmapped IOVA may still be translated by the "
     "IOTLB (Linux v4.14 and later, the per-CPU queue)?", (
        Choice("The first flush-all: when that CPU's 256-slot ring is found full (255 more "
               "entries) or when the 10 ms timer fires, whichever comes first", True,
               "IOVA_FQ_SIZE 256 (capacity 255) and IOVA_FQ_TIMEOUT 10 ms; the flush is a "
               "flush_iotlb_all of the whole domain (kernel-api-history §5.2)."),
        Choice("Exactly 10 ms, always", False,
               "A busy CPU fills its ring sooner: 255 unmaps 20 µs apart flush after 5.1 ms."),
        Choice("Until the allocator hands the IOVA out again", False,
               "The IOVA is not handed out until after the flush; the flush ends the window."),
        Choice("Nothing: the entry lives until the IOTLB happens to evict it", False,
               "Eviction may end it early, but the flush queue guarantees an upper bound."),
    ), "two triggers call flush_iotlb_all"),
    ("A device writes to a buffer just after the driver unmapped it. Under strict invalidation "
     "the IOMMU reports a fault. What happens under lazy flushing if the device's translation "
     "was still cached?", (
        Choice("The write succeeds silently, into a page the kernel may already have reused: "
               "a stale hit nobody logs", True,
               "The IOTLB still translates the IOVA; no fault, no trace event — which is "
               "why the lab counts stale_hits and max_stale_ns."),
        Choice("The write faults as well, only a little later", False,
               "A cached translation is used without looking at the page table: no fault."),
        Choice("The write waits until the next flush-all, then faults", False,
               "The IOMMU does not hold DMA back for a pending flush."),
        Choice("The IOMMU flushes the entry because the page table changed", False,
               "IOMMUs do not snoop their page tables; only an invalidation command drops "
               "the entry."),
    ), "what does the IOTLB know about the page table?"),
    ("Which kernel change made lazy flushing a type of DMA domain, chosen per domain, with a "
     "build-time default (IOMMU_DEFAULT_DMA_LAZY on x86)?", (
        Choice("v5.15: IOMMU_DOMAIN_DMA_FQ and the Kconfig choice IOMMU_DEFAULT_DMA_STRICT / "
               "_LAZY / PASSTHROUGH", True,
               "kernel-api-history §5.2 item 4 and §5.3 (L5.15 Kconfig)."),
        Choice("v4.14: the generic per-CPU flush queue in drivers/iommu/iova.c", False,
               "v4.14 made the queue generic (Intel and AMD used it); the policy stayed per "
               "driver (intel_iommu=strict, amd_iommu=fullflush)."),
        Choice("v4.20: iommu.strict= on arm64", False,
               "v4.20 brought lazy mode to arm64 behind iommu.strict=0 (strict by default); "
               "no domain type yet."),
        Choice("v6.8: IOMMU_CAP_DEFERRED_FLUSH", False,
               "By v6.8 a driver must also advertise that it can defer; the domain type is "
               "older."),
    ), "look for the domain type's name"),
)


make_problem, explain = question_bank(NAME, __name__, QUESTIONS)
solve = solve_choice
check = check_choice
