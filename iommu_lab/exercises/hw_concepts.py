"""Notebook 06, conceptual: what each kind of IOMMU needs — a flush on map, a second
cache to invalidate, one queue per unit, a round trip through the host. A seeded
multiple-choice item: the seed picks the question and shuffles its options.

Sources: hardware-invalidation.md §2–§5, kernel-api-history.md §5.1 (``iotlb_sync_map``),
the seed mail (Will Deacon, 17 Aug 2017).
"""

from __future__ import annotations

from ._base import Choice, check_choice, question_bank, solve_choice

NAME = "hw_concepts"
NOTEBOOK = "06"
KIND = "conceptual"

QUESTIONS: tuple[tuple[str, tuple[Choice, ...], str], ...] = (
    ("Will Deacon, 2017: \"Many IOMMUs don't need these callbacks on ->map operations\". "
     "Which of these does need an invalidation after iommu_map?", (
        Choice("A VT-d IOMMU with caching mode set (typically a virtual IOMMU): it may cache "
               "not-present entries, so a page going from not-present to present must be "
               "flushed", True,
               "\"In caching mode, changes of pages from non-present to present require "
               "flush\" (intel-iommu, kernel-api-history §5.1); AMD's NpCache is the same "
               "idea."),
        Choice("A bare-metal SMMUv3", False,
               "Its TLB holds only valid translations: a device that faulted before the map "
               "simply walks the table next time."),
        Choice("A bare-metal AMD-Vi without NpCache", False,
               "amd_iommu_iotlb_sync_map flushes only when amd_iommu_np_cache is set."),
        Choice("An SMMUv2", False,
               "Like SMMUv3 it caches only valid translations; nothing to drop on map."),
    ), "what would a device that faulted just before the map have cached?"),
    ("On Linux v5.10, a strict VT-d unmap of an 8K range at IOVA 0x3000 leaves the device "
     "able to read page 0x4000 through a stale IOTLB entry. Why?", (
        Choice("The PSI has AM = 1 at address 0x3000; the hardware ignores the low AM bits "
               "and invalidates 0x2000–0x3fff, so 0x4000 stays cached", True,
               "v5.10 computes the mask from the page count but does not align the address; "
               "59bf3557cf2f (v5.18) widens the mask for non-aligned ranges "
               "(hardware-invalidation.md §3.4)."),
        Choice("VT-d never invalidates on unmap: it waits for the flush queue", False,
               "Not in a strict domain: iommu_flush_iotlb_psi runs in the unmap path."),
        Choice("The invalidation-wait descriptor was left out, so the PSI never completed",
               False, "qi_submit_sync always appends a wait descriptor and polls it."),
        Choice("cap_max_amask_val is too small, so the driver sent nothing", False,
               "Above cap_max_amask_val the driver sends a domain-selective flush, which "
               "drops everything."),
    ), "which addresses does a PSI with AM = 1 cover?"),
    ("Why does one virtio-iommu UNMAP cost far more than one SMMUv3 CMD_TLBI_NH_VA?", (
        Choice("It is a request to the host: a VM exit, the VMM, a VFIO unmap and the "
               "physical IOMMU's own invalidation, and the guest waits for all of it", True,
               "viommu_sync_req kicks the virtqueue and spins until the host has completed "
               "every queued request (hardware-invalidation.md §5)."),
        Choice("virtio-iommu sends one request per 4K page", False,
               "One UNMAP covers a whole ->unmap call's range."),
        Choice("virtio-iommu cannot batch: every UNMAP is kicked at once", False,
               "UNMAPs are queued by ->unmap and kicked together at iotlb_sync."),
        Choice("The guest must poll a TLBSTATUS register for each request", False,
               "That is SMMUv2's register interface; virtio uses a virtqueue."),
    ), "who does the work when a guest unmaps on virtio-iommu?"),
    ("A device with ATS has its own translation cache (the ATC). After the IOMMU's IOTLB "
     "has been invalidated and synced, can the device still reach a freed page?", (
        Choice("Yes, from its ATC, until the driver also invalidates the ATC (CMD_ATC_INV, "
               "a device-IOTLB descriptor, INVALIDATE_IOTLB_PAGES) and waits for the "
               "device's completion", True,
               "The ATC sits in the endpoint; only an ATS invalidation reaches it, and it "
               "completes when the endpoint answers (ats_inv_ns in the model, an "
               "assumption)."),
        Choice("No: invalidating the IOTLB also empties every device TLB", False,
               "The IOMMU's TLB invalidations do not travel to the endpoint."),
        Choice("No: a device with ATS always walks the page table itself", False,
               "ATS lets it ask the IOMMU for translations and cache the answers."),
        Choice("Only if the IOMMU has several units", False,
               "One IOMMU and one ATS endpoint are enough."),
    ), "where does a translation the device got through ATS live?"),
    ("A VT-d domain spans two IOMMUs (the domain's devices sit behind two DMAR units). What "
     "does one strict PSI flush cost?", (
        Choice("A PSI descriptor and a wait descriptor on each unit's own queue — two "
               "doorbells, two waits", True,
               "iommu_flush_iotlb_psi runs for_each_domain_iommu: each unit has its own "
               "queue and IOTLB (dom.per_iommu() shows it)."),
        Choice("One PSI on a queue the two units share", False,
               "Each DMAR unit has its own invalidation queue."),
        Choice("Nothing extra: the second unit snoops the first one's queue", False,
               "IOMMUs do not snoop each other's invalidations."),
        Choice("A DSI, because a PSI cannot name two units", False,
               "The PSI names the domain-id and address; it is sent to each unit."),
    ), "how many IOTLBs hold the domain's translations?"),
)


make_problem, explain = question_bank(NAME, __name__, QUESTIONS)
solve = solve_choice
check = check_choice
