"""Generate notebooks/*.ipynb from the Python source below, so the curriculum is reviewable
as plain text and the committed notebooks are always stripped (no outputs, no execution
counts, cell ids 0, 1, 2... as nbstripout writes them).

    python tools/make_notebooks.py           # (re)write every notebook
    python tools/make_notebooks.py --check   # exit 1 if a committed notebook differs

Conventions every notebook follows (tests/test_notebooks.py checks them): one H1 title;
navigation; Learning objectives; Prerequisites and time; Vocabulary; the FIRST code cell
prints the versions; predict-then-run questions; at least two seeded exercises with
self-checks (``ANSWER = None`` prints "not answered yet") and hidden solutions; a Kernel
cross-reference table; Instructor notes; code cells of at most 4 lines; the LAST code cell
prints ``notebook complete: <name>`` (the browser tests wait for it).

In CI (nbmake) each ``ANSWER`` cell is mocked with the seed-0 solution and the check cell
asserts it prints ✓, so the exercise wiring is tested end to end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))

PLAN = [  # (number, file stem, short title, status)
    ("00", "00-Index", "Index: how to use this suite", "ready"),
    ("01", "01-IO-page-tables-and-iommu_map", "IO page tables and iommu_map", "ready"),
    ("02", "02-The-IOTLB-and-why-unmap-must-flush", "The IOTLB and why unmap must flush",
     "ready"),
    ("03", "03-A-flush-interface-range_add-sync-flush_all",
     "A flush interface: range_add, sync, flush_all (Joerg Roedel, 2017)", "ready"),
    ("04", "04-SMMUv3-command-queue", "The SMMUv3 command queue (Will Deacon's reply, stepped)",
     "ready"),
    ("05", "05-Gather-and-range-invalidation", "Gather and range invalidation (v5.4, RIL)",
     "coming"),
    ("06", "06-Other-hardware-VT-d-AMD-Vi-SMMUv2-virtio",
     "Other hardware: VT-d, AMD-Vi, SMMUv2, virtio-iommu", "coming"),
    ("07", "07-Strict-vs-lazy-flush-queues", "Strict vs lazy: flush queues and the stale window",
     "coming"),
    ("08", "08-Strategy-shoot-out", "Strategy shoot-out: workloads × strategies, scaling",
     "coming"),
    ("09", "09-Replay-your-own-trace", "Replay your own ftrace log", "coming"),
]
STEMS = {num: stem for num, stem, _, _ in PLAN}
TITLES = {num: title for num, _, title, _ in PLAN}

SEED_MAIL = ('Will Deacon, "Re: [PATCH 02/13] iommu: Introduce Interface for IOMMU TLB '
             'Flushing", LKML, 17 Aug 2017 (quoting Joerg Roedel\'s patch)')

VERSIONS_CELL = "from iommu_lab.versions import print_versions\nprint_versions()"


# ---- cell helpers -----------------------------------------------------------------------
def md(text: str) -> dict[str, Any]:
    return {"kind": "markdown", "source": text.strip("\n")}


def code(text: str, **meta: Any) -> dict[str, Any]:
    return {"kind": "code", "source": text.strip("\n"), "metadata": meta}


def nav(num: str) -> str:
    """``← 01 · … | Index | 03 · … →`` for notebook ``num``."""
    nums = [n for n, _, _, status in PLAN if status == "ready"]
    i = nums.index(num)
    parts = []
    if i > 0:
        p = nums[i - 1]
        parts.append(f"[← {p} · {TITLES[p]}]({STEMS[p]}.ipynb)")
    if num != "00":
        parts.append("[Index](00-Index.ipynb)")
    if i + 1 < len(nums):
        n = nums[i + 1]
        parts.append(f"[{n} · {TITLES[n]} →]({STEMS[n]}.ipynb)")
    else:
        nxt = next(x for x in PLAN if x[0] == f"{int(num) + 1:02d}")
        parts.append(f"next: {nxt[0]} · {nxt[2]} (coming)")
    return " | ".join(parts)


def exercise_cells(n: int, module: str, var: str, title: str, intro: str, example: str,
                   solution: str) -> list[dict[str, Any]]:
    """Problem cell, ANSWER placeholder (mocked in CI), self-check, hidden solution."""
    from importlib import import_module

    mod = import_module(f"iommu_lab.exercises.{module}")
    answer = mod.solve(mod.make_problem(0))
    check = f"{module}.check({var}, ANSWER)"
    return [
        md(f"### Exercise {n}: {title}\n\n{intro}"),
        code(f"{var} = {module}.make_problem(SEED)\nprint({var})"),
        code(f"ANSWER = None  # your prediction, e.g. {example}",
             nbmake={"mock": {"ANSWER": answer}}),
        code(f"print({check})",
             nbmake={"post_cell_execute": [f'assert {check}.startswith("✓"), {check}']}),
        md("<details><summary><b>Solution</b> (try first!)</summary>\n\n" + solution.strip()
           + f"\n\nTo see the answer for your seed, run `{module}.solve({var})`.\n\n"
           "</details>"),
    ]


def finish(stem: str) -> dict[str, Any]:
    return code(f'print("notebook complete: {stem}")')


# ---- 00 Index -----------------------------------------------------------------------------
def nb00() -> list[dict[str, Any]]:
    rows = []
    for num, stem, title, status in PLAN[1:]:
        link = f"[{title}]({stem}.ipynb)" if status == "ready" else f"{title}"
        rows.append(f"| {num} | {link} | {'ready' if status == 'ready' else 'coming'} |")
    return [
        md(f"""
# iommu-lab: how Linux invalidates IOMMU TLBs

*From the Aug-2017 LKML debate to today's kernel, measured on a simulator you can step.*

{nav("00")}

In August 2017 Joerg Roedel proposed taking the IOTLB flush out of `iommu_map()` /
`iommu_unmap()`, because tearing down a KVM guest with an assigned device caused, in his
words, "thousands of unnecessary TLB flushes". Will Deacon replied that ARM's SMMUv3 wants
its invalidation commands queued *early*, inside `->unmap`, so the hardware works while
the CPU keeps unmapping — and that a later flush-all would waste them. This suite lets you
**measure every step of that argument**, then follow the kernel's answer over the next years.
"""),
        md("""
## How to start

1. In a terminal at the top of the repository run **`make lab`**. It creates `.venv` if
   needed, installs everything, and opens JupyterLab (on 127.0.0.1, with token
   authentication) at this notebook.
2. Run each notebook top to bottom (*Run → Run All Cells*), then go back and play: every
   code cell is 1–4 lines that call the `iommu_lab` package.
3. `make app` serves the stepper alone as a Voilà app; `make test` checks everything.

Nothing needs the network after the install. If widgets do not render, compare the
version line printed by the first cell with the README's troubleshooting section.
"""),
        md("""
## Learning objectives

After this suite you can:

- explain how an IOMMU translates device addresses (IOVAs) and why it caches them (IOTLB);
- show, with a stale IOTLB hit, why an unmap must be followed by an invalidation;
- count the invalidation commands, completions and doorbells of each kernel strategy;
- argue both sides of the 2017 debate with numbers: flush batching versus early issue;
- read the kernel's IOMMU flush API of any version from v4.14 to v6.x.

## Prerequisites and time

Python basics and virtual memory (page tables, a TLB). No kernel hacking needed.
About 30–45 minutes per notebook; 01–04 make a 3-hour lab.
"""),
        md("""
## Vocabulary

| term | meaning |
|---|---|
| IOMMU | the MMU for devices: translates the addresses a device uses for DMA |
| IOVA | I/O virtual address: what the device puts on the bus |
| domain | one IO address space (`struct iommu_domain`), with its own page table |
| IOTLB | the IOMMU's cache of translations; must be invalidated after an unmap |
| invalidation / TLBI | a command telling the IOMMU to drop cached translations |
| CMD_SYNC | SMMUv3 completion command: done means everything before it is done |
| doorbell | the MMIO write that tells the IOMMU new commands are in its queue |
| stale hit | a device access served by a cached translation the OS already removed |
"""),
        md("""
## The curriculum

| # | notebook | status |
|---|---|---|
""" + "\n".join(rows) + """

Apps (no narrative, for live demos): [the stepper](app-stepper.ipynb) ·
[the comparison dashboard](app-compare.ipynb).

Every notebook has learning objectives, vocabulary, **predict-then-run** questions,
seeded exercises (set `SEED` to your student number; `ANSWER = None` until you have a
prediction; the check cell says ✓ or ✗ and never crashes), hidden solutions, a kernel
cross-reference and instructor notes.
"""),
        md("The first code cell of every notebook prints the versions that matter "
           "(paste it into any bug report):"),
        code(VERSIONS_CELL),
        md("""
## A first look (predict, then run)

**Predict:** a 256 MiB guest backed by 4K pages is torn down. Which driver strategy issues
the fewest completion commands (`sync_cmds`): `smmuv3-v4.14` (2017's kernel) or
`smmuv3-v5.4` (2019)? By how much? Write your guess down, then run the cell.
"""),
        code("""
from iommu_lab.analysis.compare import compare
from iommu_lab.inputs.workloads import kvm_teardown
from iommu_lab import views
df = compare(kvm_teardown("256M", "4K"), ["smmuv3-v4.14", "smmuv3-v5.4"], ["unmap-each", "unmap-fast-batch"])
"""),
        code('views.compare_figure(df, "sync_cmds", log=True)'),
        md("""
Same teardown, same hardware: 65,536 `CMD_SYNC`s against 128. Notebooks 01–04 open the box
and show where each of those commands comes from.

## Kernel cross-reference

| Python (iommu_lab) | kernel symbol | file | version |
|---|---|---|---|
| `iommu_domain_alloc(strategy, ...)` | `iommu_domain_alloc()` | drivers/iommu/iommu.c | all |
| `iommu_map` / `iommu_unmap` | `iommu_map()` / `iommu_unmap()` | drivers/iommu/iommu.c | all |
| `iommu_unmap_fast`, `IommuIotlbGather` | `iommu_unmap_fast()`, `struct iommu_iotlb_gather` | iommu.c, include/linux/iommu.h | v4.14, gather v5.4 |
| `iommu_tlb_range_add` / `iommu_tlb_sync` / `iommu_flush_tlb_all` | same names | include/linux/iommu.h | v4.14 (renamed v5.10) |
| strategy `smmuv3-v4.15` | `arm_smmu_iotlb_sync()` | drivers/iommu/arm-smmu-v3.c | v4.15 |

## Instructor notes

- Open with the bar chart above (win day one), then ask the room why a completion command is
  expensive. Notebooks 01–02 answer it bottom-up.
- Time plan for a 3-hour lab: 01 (40 min), 02 (40), 03 (40), 04 (50), wrap-up 10.
- Students pick `SEED` = their student number: every exercise differs per student, and the
  solution is one `solve(...)` call away for marking.
"""),
        finish("00-Index"),
    ]


# ---- 01 IO page tables ---------------------------------------------------------------------
def nb01() -> list[dict[str, Any]]:
    return [
        md(f"""
# 01 · IO page tables and `iommu_map`

{nav("01")}

> A device doing DMA uses **IO virtual addresses**; the IOMMU translates them through a page
> table the kernel fills with `iommu_map()`. The simulator models ARM's LPAE format
> (io-pgtable-arm) exactly; it abstracts away everything electrical (timing is a cost model).
"""),
        md("""
## Learning objectives

After this notebook you can:

1. allocate a domain and map a range with `iommu_map(dom, iova, paddr, size, prot)`;
2. predict how `iommu_pgsize()` splits a range into 4K pages and 2M/1G blocks;
3. follow a table walk level by level and use `iommu_iova_to_phys()`;
4. explain the error rules: misaligned → `EINVAL`, overlap → `EEXIST`, past the IAS →
   `ERANGE`, and a failed map leaves nothing half-mapped.

## Prerequisites and time

[00 · Index](00-Index.ipynb); page tables from an OS course. About 35 minutes.

## Vocabulary

| term | meaning |
|---|---|
| domain | an IO address space (`struct iommu_domain`) shared by the devices attached to it |
| IOVA / paddr | the device-side address / the physical memory address it maps to |
| granule | the smallest page (4K here); the table has 4 levels of 512 entries |
| block | a leaf above the last level: 2M (level 2) or 1G (level 1) in one entry |
| `pgsize_bitmap` | the page sizes a domain supports, one bit each (`0x40201000` = 4K, 2M, 1G) |
| `iommu_pgsize()` | picks the largest supported size that fits the rest of the range and the alignment |
| IAS | input address size: 48 bits here, so IOVAs below 256 TiB |
"""),
        code(VERSIONS_CELL),
        code("import iommu_lab as il\nfrom iommu_lab import views"),
        md("""
## 1. A domain

A *strategy* names a driver at one kernel version; `smmuv3-v5.4` is ARM SMMUv3 as of Linux
v5.4. Everything in this notebook happens in the page table, so any strategy would do.
"""),
        code('dom = il.iommu_domain_alloc("smmuv3-v5.4")\ndom, hex(dom.pgsize_bitmap), dom.pgtable.levels'),
        md("""
## 2. Mapping 64K

**Predict:** `iommu_map(dom, 0x0, 0x40000000, 0x10000, READ|WRITE)` maps 64 KiB. The domain
supports 4K, 2M and 1G pages. How many page-table entries (leaves) does it write?
"""),
        code("il.iommu_map(dom, 0x0, 0x4000_0000, 0x10000, il.IOMMU_READ | il.IOMMU_WRITE)\nviews.pgtable_table(dom)"),
        md("""
Sixteen 4K leaves at level 3: there is no 64K page size, and 2M does not fit in 64K.
The `pte` column is the real 8-byte descriptor (output address | attribute bits).

## 3. How `iommu_pgsize()` splits a range

The core walks the range and, at each step, takes **the largest supported size that fits in
what is left and to which both `iova` and `paddr` are aligned** (drivers/iommu/iommu.c). So
a range starting 16K before a 2M boundary begins with 4K pages, continues with 2M blocks and
ends with 4K pages — *if* `paddr` is aligned the same way.

**Predict:** `iova=0x1fc000, paddr=0x801fc000, size=0x408000` (4M + 32K). How many pages of
each size? And if `paddr` were `0x801fd000` instead?
"""),
        code("views.split_table(dom, 0x1fc000, 0x801fc000, 0x408000)"),
        code("views.split_summary(dom, 0x1fc000, 0x801fd000, 0x408000)"),
        md("""
With `paddr` off by 4K relative to `iova`, no 2M block can ever be aligned on both sides:
1,032 pages of 4K instead of 10 leaves. Physical contiguity *and* alignment decide how big the
mappings — and later the invalidations — are. The core function itself returns one chunk:
"""),
        code("il.iommu_pgsize(dom, 0x1fc000, 0x801fc000, 0x408000)  # (pgsize, count) of the first chunk"),
        md("Now map it for real and look at the address space and the table pages:"),
        code("il.iommu_map(dom, 0x1fc000, 0x801fc000, 0x408000, il.IOMMU_READ)\nviews.address_space_figure(dom)"),
        code("views.pgtable_tree(dom)"),
        md("""
One table per level on the path; the 2M blocks live directly in the level-2 table, the 4K
pages in two level-3 tables (the first one shared with the 64K mapping of section 2).

## 4. The walk and `iommu_iova_to_phys()`

**Predict:** IOVA `0x301234` lies inside the first 2M block (`0x200000` → `0x80200000`).
Which physical address does it translate to, and how many levels does the walk read?
"""),
        code("views.walk_table(dom, 0x301234)"),
        code("hex(il.iommu_iova_to_phys(dom, 0x301234)), il.iommu_iova_to_phys(dom, 0x900000)"),
        md("""
Three levels: the walk stops at the level-2 block, and the low 21 bits of the IOVA pass
through unchanged. An IOVA with no mapping translates to **0**.

## 5. Refusals leave nothing behind

Bad calls fail with the kernel's errno *before* anything changes. `views.attempt(...)` shows
the refusal as text instead of raising (so "Run All" continues).

**Predict:** which errno for (a) a misaligned IOVA, (b) mapping over the 2M block, (c) an
IOVA past the 48-bit IAS?
"""),
        code("""
print(views.attempt(il.iommu_map, dom, 0x1001, 0x1000, 0x1000, il.IOMMU_READ))
print(views.attempt(il.iommu_map, dom, 0x300000, 0x1000, 0x1000, il.IOMMU_READ))
print(views.attempt(il.iommu_map, dom, 1 << 48, 0x1000, 0x1000, il.IOMMU_READ))
"""),
        md("""
A map that fails *half-way* is unwound ("unroll mapping in case something went wrong" in
`iommu_map()`). The simulator can inject the kernel's `-ENOMEM` on the third driver call:
"""),
        code("""
dom.fail_map_after = 2  # the 3rd driver ->map call fails
print(views.attempt(il.iommu_map, dom, 0x4000_0000, 0x1_0000_0000, 0x10000, il.IOMMU_READ))
dom.fail_map_after = None
len(views.pgtable_table(dom)), dom.stats()["map_calls"]
"""),
        md("""
Still 26 leaves (16 from the 64K map, 10 from the second), and only the two successful maps
are counted: the two pages mapped before the failure were unmapped again.

## Exercises

Set `SEED` to your student number (any integer): each seed gives a different problem.
Write your prediction in `ANSWER` and run the check cell; it says ✓ or ✗ (or "not answered
yet") and never crashes.
"""),
        code("from iommu_lab.exercises import pgsize_split, iova_to_phys\nSEED = 0  # change me"),
        *exercise_cells(1, "pgsize_split", "p1", "page sizes of one `iommu_map`",
                        "Split the range by hand with the rule of section 3.",
                        '{"4K": 3, "2M": 1}', """
Work left to right. While the current `iova` and `paddr` are not both 2M-aligned, or less
than 2M remains, the chunk is 4K. Once both are aligned and at least 2M remains, take 2M
blocks. If `paddr - iova` is not a multiple of 2M, the two can never be aligned together:
everything is 4K. `views.split_summary(dom, iova, paddr, size)` does the same walk."""),
        *exercise_cells(2, "iova_to_phys", "p2", "translate three IOVAs",
                        "Use the two mappings in the problem; no domain needed.",
                        '[0x40001234, 0, 0x80000010]', """
For an IOVA inside a mapping, `paddr = mapping paddr + (iova - mapping iova)`; in the 2M
block the offset may be anything below 2M; in the run of 4K pages the run is physically
contiguous, so the same formula holds. An IOVA outside both translates to 0."""),
        md("""
## Kernel cross-reference

| Python (iommu_lab) | kernel symbol | file | version |
|---|---|---|---|
| `il.iommu_domain_alloc("smmuv3-v5.4")` | `iommu_domain_alloc()` → `arm_smmu_domain_alloc()` | drivers/iommu/iommu.c, arm-smmu-v3.c | v5.4 |
| `il.iommu_map` | `iommu_map()` (unwinds with `iommu_unmap()`) | drivers/iommu/iommu.c | v4.13+ |
| `il.iommu_pgsize` | `iommu_pgsize()` (v5.15: returns a count too) | drivers/iommu/iommu.c | v4.13 / v5.15 |
| `dom.pgtable` (`IoPgtableArm`) | `arm_lpae_map()`, `ARM_LPAE_BLOCK_SIZE` | drivers/iommu/io-pgtable-arm.c | v4.13+ |
| `il.iommu_iova_to_phys`, `views.walk_table` | `iommu_iova_to_phys()` → `arm_lpae_iova_to_phys()` | iommu.c, io-pgtable-arm.c | all |
| `dom.pgsize_bitmap` | `domain->pgsize_bitmap` | include/linux/iommu.h | v4.13+ |
| `il.IommuError(errno)` | `-EINVAL`, `-EEXIST`, `-ERANGE`, `-ENOMEM` | include/uapi/asm-generic/errno-base.h | all |

## Instructor notes

- 35 minutes. Project section 3 and have the room call out the split before running it;
  the `paddr` off-by-4K variant is the surprise worth the pause.
- Point at the address-space strip: colour = page size; hover shows IOVA → paddr.
- Discussion: why must *both* addresses be aligned for a block? (One PTE carries one output
  address; the low bits pass through.) Why does a bigger page help later? (Fewer leaves, so
  fewer invalidations: notebook 02.)
- Common confusion: `size` is in bytes; `0x10000` is 64K, not 64K pages.

{nav}
""".replace("{nav}", nav("01"))),
        finish("01-IO-page-tables-and-iommu_map"),
    ]


# ---- 02 IOTLB ---------------------------------------------------------------------------
def nb02() -> list[dict[str, Any]]:
    return [
        md(f"""
# 02 · The IOTLB and why unmap must flush

{nav("02")}

> The IOMMU caches translations in its IOTLB. Removing a mapping from the page table does not
> remove it from that cache: until an invalidation completes, the device can still reach the
> old physical page — memory the kernel may already have handed to someone else.
"""),
        md("""
## Learning objectives

After this notebook you can:

1. say what the IOTLB caches and when a DMA access is a hit, a walk or a fault;
2. produce and explain a **stale hit**: DMA into freed memory after an unmap without flush;
3. describe what Linux v4.14 did about it (invalidate and wait inside every unmap) and count
   the commands: one TLBI + one `CMD_SYNC` per page-size piece, a doorbell each;
4. measure the cost for a KVM guest teardown — Joerg Roedel's "thousands of unnecessary TLB
   flushes".

## Prerequisites and time

[01 · IO page tables and iommu_map](01-IO-page-tables-and-iommu_map.ipynb). About 40 minutes.

## Vocabulary

| term | meaning |
|---|---|
| IOTLB | the IOMMU's translation cache (tagged by ASID; 64 entries in this model) |
| hit / walk / fault | served from the IOTLB / read from the page table (and cached) / no mapping |
| **stale** | an IOTLB hit whose page table entry is gone: DMA into freed memory |
| invalidation (TLBI) | command that drops cached translations (`CMD_TLBI_NH_VA` on SMMUv3) |
| `CMD_SYNC` | SMMUv3 completion: when it completes, every earlier command has completed |
| strict | invalidate and wait before `iommu_unmap()` returns |
"""),
        code(VERSIONS_CELL),
        code("import iommu_lab as il\nfrom iommu_lab import views"),
        md("""
## 1. The device and the IOTLB

We need a domain whose `iommu_unmap()` does **not** flush, to see what a flush protects
against. Joerg Roedel's 2017 proposal is exactly that (notebook 03): `api="rfc-2017"`.
"""),
        code('dom = il.iommu_domain_alloc("smmuv3-v5.4", api="rfc-2017")\nil.iommu_map(dom, 0x0, 0x4000_0000, 0x4000, il.IOMMU_READ | il.IOMMU_WRITE)'),
        md("**Predict:** the device reads `0x0`, `0x1000`, then `0x0` again. Hit, walk or fault each time?"),
        code("[il.dma_access(dom, a) for a in (0x0, 0x1000, 0x0)]"),
        code("views.iotlb_table(dom)"),
        md("""
## 2. Unmap without a flush

The kernel unmaps `0x0..0x3fff`. The page table forgets it at once:
"""),
        code("il.iommu_unmap(dom, 0x0, 0x4000)\nil.iommu_iova_to_phys(dom, 0x0)"),
        md("""
**Predict:** the device (a buggy or malicious one, or simply one with DMA still in flight)
reads `0x0` again. What does it get?
"""),
        code('il.dma_access(dom, 0x0), il.dma_access(dom, 0x2000, write=True)'),
        code("views.iotlb_styler(views.iotlb_table(dom))"),
        md("""
`stale`: the IOTLB still translates `0x0 → 0x40000000`. The kernel believes that page is
free and may reuse it for anything — the device now reads (or writes!) someone else's
data. `0x2000` was never cached, so it faults, as it should. Both entries in red are
*stale*; the counters keep the evidence:
"""),
        code('views.counters_table(dom.stats(), ["stale_hits", "max_stale_ns", "faults", "iotlb_hits", "iotlb_misses"])'),
        md("""
## 3. The fix: invalidate, then wait

The 2017 API's answer is to tell the driver which range changed and then wait for the
invalidation to finish:
"""),
        code("il.iommu_tlb_range_add(dom, 0x0, 0x4000)\nil.iommu_tlb_sync(dom)\nil.dma_access(dom, 0x0), len(views.iotlb_table(dom))"),
        md("""
## 4. What Linux v4.14 actually did: flush inside every unmap

Before (and in) v4.14 the safe thing happened inside `iommu_unmap()` itself: the core
called the driver once per page-size piece, and on SMMUv3 io-pgtable issued one
`CMD_TLBI_NH_VA` per granule and then a `CMD_SYNC` — and waited — **for every piece**, each
command with its own doorbell (hardware-invalidation.md §1.4).

**Predict:** unmapping 16K of 4K pages on `smmuv3-v4.14`: how many TLBIs, CMD_SYNCs and
doorbells? Is the device's next read stale?
"""),
        code('strict = il.iommu_domain_alloc("smmuv3-v4.14")\nil.iommu_map(strict, 0x0, 0x4000_0000, 0x4000, il.IOMMU_READ)\nil.dma_access(strict, 0x0), il.iommu_unmap(strict, 0x0, 0x4000), il.dma_access(strict, 0x0)'),
        code('views.counters_table(strict.stats(), ["inv_cmds", "sync_cmds", "doorbells", "cpu_ns", "iommu_ns"])'),
        md("""
Safe (`fault`, never `stale`), but four round trips for 16K: each `CMD_SYNC` makes the CPU
spin until the SMMU has drained the queue.

## 5. The price at guest scale

When a KVM guest with an assigned device is destroyed, VFIO unmaps the guest's memory chunk
by chunk (`vfio_unmap_unpin`), one `iommu_unmap()` per physically contiguous chunk. Joerg
Roedel's patch (LKML, 17 Aug 2017) called the result "thousands of unnecessary TLB flushes".
Let's count them for a small 256 MiB guest whose memory is scattered 4K pages.

**Predict:** how many `CMD_SYNC`s on `smmuv3-v4.14`? And if the guest were backed by 2M
huge pages?
"""),
        code("""
from iommu_lab.analysis.compare import compare
from iommu_lab.inputs.workloads import kvm_teardown
df = compare(kvm_teardown("256M", "4K"), ["smmuv3-v4.14"], ["unmap-each"])
views.compare_table(df)
"""),
        code('views.compare_table(compare(kvm_teardown("256M", "2M"), ["smmuv3-v4.14"], ["unmap-each"]))'),
        md("""
65,536 CMD_SYNCs (and 131,072 doorbells) for 4K pages; 128 with 2M pages. A 16 GiB guest
of 4K pages is 4,194,304. Every one makes the CPU wait for the SMMU. The times (`end_ns`)
come from a cost model whose numbers are mostly **assumptions** (no vendor publishes
per-command latencies) — read them as a shape, not a benchmark:
"""),
        code("import pandas as pd\nfrom iommu_lab.hw.costs import cost_table\npd.DataFrame(cost_table())"),
        md("""
## Exercises

Set `SEED` to your student number; predict, write `ANSWER`, run the check.
"""),
        code("from iommu_lab.exercises import stale_dma, flush_count\nSEED = 0  # change me"),
        *exercise_cells(1, "stale_dma", "p1", "which reads are stale?",
                        "Follow the steps; remember the IOTLB starts empty and every read "
                        "that walks the table also fills the IOTLB.",
                        '["hit", "stale", "fault"]', """
For each read in step 5: was the page cached in step 2 (or earlier in step 5)? Is it still
mapped after step 3? Did step 4 invalidate?
- cached and still mapped → `hit`; cached, unmapped, no sync → `stale`;
- not cached → `walk` if mapped, `fault` if not (a sync in step 4 empties the unmapped
  entries, so they fault)."""),
        *exercise_cells(2, "flush_count", "p2", "the cost of one strict unmap (v4.14)",
                        "Split the range with `iommu_pgsize` first (notebook 01).",
                        '{"inv_cmds": 5, "sync_cmds": 5, "doorbells": 10}', """
The pieces are: the leading 4K pages, the 2M blocks, the trailing 4K pages (the `iova` is
aligned to 2M after the head, and `paddr = iova + 1G` keeps the same alignment). v4.14 issues
one TLBI per piece (a 2M block is one granule of its own size) and one CMD_SYNC per piece;
every command has its own doorbell, so `doorbells = 2 × pieces`."""),
        md("""
## Kernel cross-reference

| Python (iommu_lab) | kernel symbol | file | version |
|---|---|---|---|
| `il.dma_access(dom, iova)` | (hardware) SMMU TLB lookup, table walk | Arm IHI 0070 (SMMUv3 spec) | — |
| `dom.hw.iotlb` | the SMMU TLB, tagged by ASID | Arm IHI 0070 | — |
| `il.iommu_unmap` on `smmuv3-v4.14` | `iommu_unmap()` → `arm_smmu_unmap()` → `arm_lpae_unmap()` | iommu.c, arm-smmu-v3.c, io-pgtable-arm.c | v4.14 |
| TLBI per granule | `arm_smmu_tlb_inv_range_nosync()` (`tlb_add_flush`) | drivers/iommu/arm-smmu-v3.c | v4.14 |
| CMD_SYNC + wait per piece | `io_pgtable_tlb_sync()` → `__arm_smmu_tlb_sync()`, `queue_poll_cons(drain)` | io-pgtable-arm.c, arm-smmu-v3.c | v4.14 |
| `iommu_tlb_range_add` + `iommu_tlb_sync` | same names | include/linux/iommu.h | v4.14 |
| `kvm_teardown(...)` + caller `unmap-each` | `vfio_unmap_unpin()` → `iommu_unmap()` per chunk | drivers/vfio/vfio_iommu_type1.c | v4.14 |
| `cost_table()` | (model) hardware-invalidation.md §0.2 | — | assumptions |

## Instructor notes

- 40 minutes. The stale read in section 2 is the moment: ask "what is at 0x40000000 now?"
  (whatever the page allocator gave it to: a network buffer, a page of another process).
- Explain that a real device would not announce its stale access: the IOMMU translated it
  successfully. Security angle: DMA attacks and use-after-free through the IOMMU.
- Section 4 vs 5: one strict unmap is cheap; a teardown is millions of them. Ask the room
  to estimate the 16 GiB case before revealing 4,194,304.
- The costs are assumptions: emphasise counts (exact, cited) over times (modelled).

{nav}
""".replace("{nav}", nav("02"))),
        finish("02-The-IOTLB-and-why-unmap-must-flush"),
    ]


# ---- 03 flush interface ------------------------------------------------------------------
def nb03() -> list[dict[str, Any]]:
    return [
        md(f"""
# 03 · A flush interface: `range_add`, `sync`, `flush_all`

{nav("03")}

> Joerg Roedel's August 2017 patch: take the TLB flush *out* of `iommu_map()`/`iommu_unmap()`
> and let the caller say when to flush. This notebook runs his interface on the simulator and
> measures what it saves — and sets up Will Deacon's objection (notebook 04).
"""),
        md("""
## Learning objectives

After this notebook you can:

1. state the three functions and two wrappers Joerg proposed, and why (KVM teardown);
2. predict what `iommu_tlb_range_add` + `iommu_tlb_sync`, `iommu_flush_tlb_all` and the
   `iommu_map_sync`/`iommu_unmap_sync` wrappers issue to the hardware;
3. compare caller patterns on a guest teardown: unmap-each, VFIO's batch of 512,
   unmap-then-flush-all, the wrappers;
4. say what actually merged in v4.14 (the three functions and `iommu_unmap_fast`; the
   default `iommu_unmap` stayed strict; the wrappers never merged).

## Prerequisites and time

[02 · The IOTLB and why unmap must flush](02-The-IOTLB-and-why-unmap-must-flush.ipynb).
About 40 minutes.

## Vocabulary

| term | meaning |
|---|---|
| `iommu_tlb_range_add(dom, iova, size)` | "add a given range to the flush queue for this domain" |
| `iommu_tlb_sync(dom)` | flush all queued ranges; returns when the flush is finished |
| `iommu_flush_tlb_all(dom)` | flush every TLB entry of the domain; done when it returns |
| `iommu_map_sync` / `iommu_unmap_sync` | proposed wrappers: the call, then range_add + sync |
| caller pattern | how a user (VFIO, the DMA API, KVM teardown) strings the calls together |
| `api="rfc-2017"` | a simulated domain with the proposal's semantics: `iommu_unmap` never flushes |
"""),
        code(VERSIONS_CELL),
        code("import iommu_lab as il\nfrom iommu_lab import views"),
        md(f"""
## 1. The proposal

In "[PATCH 02/13] iommu: Introduce Interface for IOMMU TLB Flushing" Joerg Roedel (IOMMU
subsystem maintainer) observed that unmapping a large address space, as when a KVM domain with
assigned devices is destroyed, "causes thousands of unnecessary TLB flushes" because the
unmap callback flushes for every physical page. He proposed removing the flush from
`iommu_map`/`iommu_unmap` and adding three functions — `iommu_flush_tlb_all()`,
`iommu_tlb_range_add()`, `iommu_tlb_sync()` — plus synchronised wrappers for existing
users, with semantics "intentionally similar to the iommu_gather_ops from the io-pgtable
code". (Source: {SEED_MAIL}; `reference/seed-lkml-2017-08-17.txt`.)

We model a driver that defers all of its invalidation to the sync (as SMMUv3 does from
v5.4: one `CMD_TLBI_NH_VA` per 4K page of the pending range, then `CMD_SYNC`) — the
behaviour the proposal assumes.
"""),
        code('dom = il.iommu_domain_alloc("smmuv3-v5.4", api="rfc-2017")\nfor at in (0x0, 0x8000, 0x10000):\n    il.iommu_map(dom, at, 0x4000_0000 + at, 0x8000, il.IOMMU_READ | il.IOMMU_WRITE)'),
        md("""
## 2. Unmap, then `range_add` + `sync`

**Predict:** we unmap the three 32K regions with `iommu_unmap` (no flush), then call
`iommu_tlb_range_add` for each and one `iommu_tlb_sync`. How many invalidation commands
and how many CMD_SYNCs, in total?
"""),
        code("before = dom.stats()\nfor at in (0x0, 0x8000, 0x10000):\n    il.iommu_unmap(dom, at, 0x8000)\nviews.counters_diff(before, dom.stats())"),
        code("for at in (0x0, 0x8000, 0x10000):\n    il.iommu_tlb_range_add(dom, at, 0x8000)\nil.iommu_tlb_sync(dom)\nviews.counters_diff(before, dom.stats())"),
        md("""
No hardware command during the unmaps; then 24 TLBIs (one per 4K page) and **one**
CMD_SYNC with a single doorbell. Here is the queue the sync wrote:
"""),
        code("views.ring_table(dom.driver.q)"),
        md("""
## 3. `iommu_flush_tlb_all`

**Predict:** remap, unmap the same 96K, and finish with one `iommu_flush_tlb_all`
instead. How many commands now?
"""),
        code("il.iommu_map(dom, 0x0, 0x4000_0000, 0x18000, il.IOMMU_READ)\nbefore = dom.stats()\nil.iommu_unmap(dom, 0x0, 0x18000); il.iommu_flush_tlb_all(dom)\nviews.counters_diff(before, dom.stats())"),
        md("""
Two commands: `CMD_TLBI_NH_ASID` (everything with this domain's ASID) and `CMD_SYNC`.
Cheaper than 24 TLBIs — at the price of also dropping valid entries of the domain that
had nothing to do with the unmap (they must be walked again later).

## 4. The wrappers, and a sync after *map*

`iommu_map_sync()` maps, then calls `iommu_tlb_range_add` + `iommu_tlb_sync`. Most IOMMUs
cache nothing for unmapped addresses, so a sync after a map has nothing to wait for.
**Predict:** what does one `iommu_map_sync` cost on this driver?
"""),
        code("before = dom.stats()\nil.iommu_map_sync(dom, 0x0, 0x4000_0000, 0x8000, il.IOMMU_READ)\nviews.counters_diff(before, dom.stats())"),
        md("""
A lone `CMD_SYNC` — counted as `needless_sync_cmds`. Will Deacon's reply asked for a flags
argument so drivers could tell the two cases apart; the kernel later added an optional
`->iotlb_sync_map` callback instead (present by v5.3; kernel-api-history.md §5.1).

## 5. What merged in v4.14

Commit add02cfdc9bc (v4.14) added the three functions and `iommu_unmap_fast()`, but kept
`iommu_unmap()` **strict** — batching became opt-in — and dropped the wrappers. In v4.14 no
driver implemented the new callbacks yet; SMMUv3 still flushed inside `->unmap`:
"""),
        code('il.strategies().loc[lambda d: d["name"].str.startswith("smmuv3"), ["name", "kernel", "summary"]]'),
        md("""
## 6. The teardown, per caller pattern

**Predict:** for a 256 MiB guest of 4K pages, rank the callers by `inv_cmds` and by
`sync_cmds`: `unmap-each`, `unmap-fast-batch` (VFIO: sync every 512 regions),
`unmap-then-flush-all` (Joerg's plan), `rfc-2017-wrappers`.
"""),
        code("""
from iommu_lab.analysis.compare import compare
from iommu_lab.inputs.workloads import kvm_teardown
callers = ["unmap-each", "unmap-fast-batch", "unmap-then-flush-all", "rfc-2017-wrappers"]
df = compare(kvm_teardown("256M", "4K"), ["smmuv3-v4.14", "smmuv3-v5.4", "amd-flush-all"], callers)
"""),
        code('views.compare_figure(df, "sync_cmds", log=True)'),
        code('views.compare_pivot(df, "inv_cmds")'),
        code('views.compare_pivot(df, "end_ns")'),
        md("""
On `smmuv3-v4.14` nothing changes: that driver flushes inside `->unmap` whatever the caller
does (which is why the proposal needed the drivers to change too). On the deferring driver,
flush-all turns 65,536 TLBIs + 65,536 syncs into 1 + 1, and the wrappers double the syncs
(one needless sync per map). AMD's v5.10 driver flushes the whole domain at every sync.

**But:** is "fewest commands" the whole story on SMMUv3, whose invalidations are
*asynchronous*? Will Deacon's answer is the next notebook.

## Exercises
"""),
        code("from iommu_lab.exercises import teardown, rfc2017_calls\nSEED = 0  # change me"),
        *exercise_cells(1, "teardown", "p1", "flushes of a guest teardown",
                        "One backing page = one unmap call (no physical contiguity).",
                        '{"inv_cmds": 65536, "sync_cmds": 128}', """
Count the pages: guest size / page size. Then:
- `unmap-each`: each call ends with its own sync → `inv_cmds = pages`, `sync_cmds = pages`
  (both drivers: one TLBI per page-sized granule, one CMD_SYNC per call);
- `unmap-fast-batch` on v5.4: one TLBI per page, one sync per 512 pages (rounded up);
- `unmap-then-flush-all` on v5.4: nothing until the end, then 1 TLBI_NH_ASID + 1 CMD_SYNC."""),
        *exercise_cells(2, "rfc2017_calls", "p2", "what the 2017 calls issue",
                        "Count the syncs first, then the pages each sync covers.",
                        '{"inv_cmds": 12, "sync_cmds": 1}', """
- range_add + one sync: every unmapped page gets one TLBI at the single sync →
  `inv_cmds = total pages`, `sync_cmds = 1`;
- one flush-all: `inv_cmds = 1` (NH_ASID), `sync_cmds = 1`;
- `iommu_unmap_sync` per region: each region is synced on its own →
  `inv_cmds = total pages`, `sync_cmds = number of regions`."""),
        md("""
## Kernel cross-reference

| Python (iommu_lab) | kernel symbol | file | version |
|---|---|---|---|
| `il.iommu_tlb_range_add` | `iommu_tlb_range_add()` → `ops->iotlb_range_add` | include/linux/iommu.h | v4.14–v5.3 (op removed in v5.4) |
| `il.iommu_tlb_sync` | `iommu_tlb_sync()` → `ops->iotlb_sync` (renamed `iommu_iotlb_sync`) | include/linux/iommu.h | v4.14 (v5.10) |
| `il.iommu_flush_tlb_all` | `iommu_flush_tlb_all()` (renamed `iommu_flush_iotlb_all`) | include/linux/iommu.h | v4.14 (v5.10) |
| `il.iommu_unmap_fast` | `iommu_unmap_fast()` (gains a gather in v5.4) | drivers/iommu/iommu.c | v4.14 |
| `il.iommu_map_sync` / `il.iommu_unmap_sync` | proposed in [PATCH 02/13], never merged | — | RFC Aug 2017 |
| caller `unmap-fast-batch` | `unmap_unpin_fast()`, `VFIO_IOMMU_TLB_SYNC_MAX` (512) | drivers/vfio/vfio_iommu_type1.c | by v4.20 |
| caller `unmap-then-flush-all` | KVM teardown as Joerg described it | LKML 2017-08-17 | RFC |
| strategy `amd-flush-all` | `amd_iommu_flush_iotlb_all()` as `.iotlb_sync` | drivers/iommu/amd/iommu.c | v5.10 |

## Instructor notes

- 40 minutes. Read the proposal paragraph aloud, then let students predict sections 2–4
  before running them.
- The `smmuv3-v4.14` row is a useful trap: an interface change alone saves nothing until
  drivers implement it.
- Set up the cliff-hanger: flush-all is "obviously" best by command count. Ask what a
  driver that has *already* queued the TLBIs would think of it (notebook 04).

{nav}
""".replace("{nav}", nav("03"))),
        finish("03-A-flush-interface-range_add-sync-flush_all"),
    ]


# ---- 04 SMMUv3 command queue --------------------------------------------------------------
def nb04() -> list[dict[str, Any]]:
    return [
        md(f"""
# 04 · The SMMUv3 command queue: Will Deacon's reply, stepped

{nav("04")}

> ARM's SMMUv3 has no invalidation registers: the driver writes 16-byte commands into one
> ring in memory, rings a doorbell, and the SMMU consumes them *asynchronously*. This
> notebook steps that queue slot by slot to follow Will Deacon's 2017 objection.
"""),
        md("""
## Learning objectives

After this notebook you can:

1. describe the SMMUv3 command queue: slots, `CMDQ_PROD`/`CMDQ_CONS` with their wrap bit,
   the doorbell, asynchronous consumption, and `CMD_SYNC` as the only proof of completion;
2. step **early issue** (TLBIs queued inside `->unmap`, one CMD_SYNC at `iotlb_sync`) and
   explain why a stale hit is still possible until the sync;
3. read a CPU-vs-IOMMU timeline and find the overlap Will wanted;
4. measure the waste when a flush-all follows early issue (`wasted_inv_cmds`) and the
   needless sync after map (`needless_sync_cmds`).

## Prerequisites and time

[03 · A flush interface](03-A-flush-interface-range_add-sync-flush_all.ipynb). About 50 minutes.

## Vocabulary

| term | meaning |
|---|---|
| command queue (cmdq) | a ring of 2^n 16-byte slots in memory, shared by all CPUs (under a lock in 2017) |
| `CMDQ_PROD` | producer index + wrap bit; writing it is the **doorbell** (MMIO) |
| `CMDQ_CONS` | consumer index + wrap bit, advanced by the SMMU as it executes commands |
| consumed vs completed | executed by the SMMU vs *known* done by the CPU (a later CMD_SYNC finished) |
| early issue | queue each TLBI as soon as `->unmap` clears a PTE (smmuv3-v4.15) |
| wasted TLBI | an invalidation made pointless by a later invalidate-all |
"""),
        code(VERSIONS_CELL),
        code("import iommu_lab as il\nfrom iommu_lab import views\nfrom iommu_lab.ui import Stepper"),
        md(f"""
## 1. The objection

Replying to the patch, Will Deacon (Arm SMMU driver maintainer) explained that SMMUv3 has a single
in-memory command queue, filled under a lock and processed asynchronously by the hardware;
completion is known only by inserting a SYNC and waiting for it to be consumed. The driver
wants to insert invalidations *as early as possible* — inside `->unmap` — so the hardware
works while the CPU unmaps more pages, and then sync once in `->iotlb_sync`. A later
`iommu_flush_tlb_all()` breaks that: one invalidate-all plus a SYNC would have been better
than all the early commands. His conclusion, in one line:

> "we really need the information about the invalidation as part of the unmap call."

(Source: {SEED_MAIL}.) Let's step it. A **stepper** holds one domain; its IOMMU is paused,
so it consumes commands only when we say so. The ring has 32 slots to fit the screen
(v4.15 allowed up to 256).
"""),
        code('s = Stepper("smmuv3-v4.15", cmdq_entries=32)\ns.map("0x0", "64K"); s.dma_read("0x1000")\ns.ring_figure()'),
        md("""
## 2. Early issue

**Predict:** `iommu_unmap_fast` of those 64K (16 pages) on the v4.15 driver. How many slots
fill? Where are PROD and CONS afterwards? How many doorbells?
"""),
        code('s.unmap_fast("0x0", "64K")\ns.ring_figure()'),
        code('s.counters(["inv_cmds", "sync_cmds", "doorbells", "pages_unmapped"])'),
        md("""
Sixteen `CMD_TLBI_NH_VA` (NH_VA) commands, published one by one (v4.15's
`arm_smmu_cmdq_issue_cmd`: lock, write, doorbell, per command): PROD = 0x10, CONS = 0.
They are **pending**: written and visible to the SMMU, not yet executed.

**Predict:** the page table no longer maps `0x1000`. What does the device get now?
"""),
        code('s.dma_read("0x1000")'),
        md("""
Stale: queued is not done. Let the SMMU execute two commands (the TLBIs for `0x0` and
`0x1000`) and try again:
"""),
        code('s.consume(2)\ns.dma_read("0x1000"), s.status()'),
        md("""
CONS moved to 2 and the read faults. But the CPU cannot *see* that yet: those two slots
are **consumed**, not **completed**. Only a CMD_SYNC proves completion:
"""),
        code("s.tlb_sync()\ns.ring_figure()"),
        md("""
`iommu_iotlb_sync` appended one CMD_SYNC and the CPU waited until the SMMU had worked through
the queue up to it: everything before the sync is now *completed* (green), PROD = CONS.

## 3. Time: does early issue overlap?

Now let the IOMMU run on its own clock and replay "map 64K; unmap_fast; sync" on three
drivers. **Predict:** on which one does the SMMU start invalidating while the CPU is still
inside `iommu_unmap_fast`? Which one finishes first?
"""),
        code('runs = {name: Stepper(name, paused=False) for name in ("smmuv3-v4.14", "smmuv3-v4.15", "smmuv3-v5.4")}\nfor t in runs.values():\n    t.map("0x0", "64K"); t.unmap_fast(); t.tlb_sync()\n{name: (t.domain.clock.now, views.overlap_ns(t.domain)) for name, t in runs.items()}'),
        code('runs["smmuv3-v4.15"].timeline()'),
        code('runs["smmuv3-v5.4"].timeline()'),
        md("""
On **v4.15** the IOMMU bars sit *inside* the CPU's `iommu_unmap_fast`: that is Will's
overlap. On **v5.4** (gather, 2019) nothing is issued until the sync, then all 16 TLBIs and
the CMD_SYNC go in one batch with one doorbell. On **v4.14** the CPU also overlaps — but only
because it spins on a CMD_SYNC after every page.

With this model's (assumed) costs, an SMMU TLBI takes 50 ns and a doorbell 100 ns, so
v5.4's single doorbell wins anyway. **Predict:** if each TLBI took the SMMU 400 ns, which
would finish first, v4.15 or v5.4?
"""),
        code('slow = {n: Stepper(n, paused=False, costs={"hw_tlbi_ns": 400}) for n in ("smmuv3-v4.15", "smmuv3-v5.4")}\nfor t in slow.values():\n    t.map("0x0", "64K"); t.unmap_fast(); t.tlb_sync()\n{n: t.domain.clock.now for n, t in slow.items()}'),
        md("""
With slow invalidation the overlap pays: early issue finishes first. Which effect dominates
depends on the hardware — exactly why the argument was about *information*, not a rule.

## 4. The waste when a flush-all follows

Joerg's teardown unmaps everything (2017 API: no flush) and then calls
`iommu_flush_tlb_all`. On the early-issue driver every unmap has already queued its TLBIs;
the flush-all must still invalidate the whole ASID. **Predict:** for 8 pages, how many TLBIs
are wasted?
"""),
        code('w = Stepper("smmuv3-v4.15", api="rfc-2017", cmdq_entries=32)\nw.map("0x0", "32K"); w.unmap(); w.flush_all()\nw.ring_figure()'),
        code('w.counters(["inv_cmds", "inv_all_cmds", "sync_cmds", "wasted_inv_cmds"])'),
        md("""
Eight `NH_VA` commands, then `NH_ASID` + `CMD_SYNC`: the eight were wasted work for the
SMMU, in the same queue every CPU shares. At guest scale:
"""),
        code("""
from iommu_lab.analysis.compare import compare
from iommu_lab.inputs.workloads import kvm_teardown
df = compare(kvm_teardown("64M", "4K"), ["smmuv3-v4.15", "smmuv3-v5.4"], ["unmap-then-flush-all", "rfc-2017-wrappers"])
views.compare_table(df, ["inv_cmds", "wasted_inv_cmds", "sync_cmds", "needless_sync_cmds", "doorbells", "end_ns"])
"""),
        md("""
With early issue, 16,384 wasted TLBIs; with a gather (v5.4) none, because `->unmap` only
*recorded* the range and the flush-all discarded it. The wrappers add one needless CMD_SYNC
per `iommu_map_sync` on both drivers (the "flags argument" Will asked for).

## 5. How it was resolved

- **v4.14** kept `iommu_unmap` strict and made batching opt-in (`iommu_unmap_fast` + sync).
- **v4.15**: SMMUv3 queues TLBIs inside `->unmap` and issues one CMD_SYNC in `->iotlb_sync`
  (the design Will described); io-pgtable stopped syncing in every unmap.
- **v5.4** (Will's 2019 series): `struct iommu_iotlb_gather` travels with the unmap calls —
  the information *as part of the unmap call* — and `->iotlb_range_add` was removed.
  SMMUv3 then builds TLBIs at sync in batches of 64. That is notebook 05.

## 6. Try it yourself

The same stepper with buttons. Suggested experiments: `map` then `DMA read`, `unmap_fast`,
`DMA read` (stale?), `consume n`, `iotlb_sync`; switch the API era to `rfc-2017` and end
with `flush_tlb_all` instead; switch the strategy to `smmuv3-v5.4` and compare the queue.
"""),
        code('Stepper("smmuv3-v4.15", cmdq_entries=32)'),
        md("""
## Exercises
"""),
        code("from iommu_lab.exercises import ring_registers, waste\nSEED = 0  # change me"),
        *exercise_cells(1, "ring_registers", "p1", "PROD, CONS and the wrap bit",
                        "Registers count modulo twice the ring size.",
                        '{"prod": "0x12", "cons": "0x0e", "free": 12}', """
With N slots, PROD = written mod 2N and CONS = consumed mod 2N: the low log2(N) bits are the
slot index, the next bit is the wrap bit, which flips every time the index passes the end.
The queue holds `written - consumed` commands, so `free = N - (written - consumed)`. Full
means same index, different wrap bits; empty means equal registers."""),
        *exercise_cells(2, "waste", "p2", "wasted TLBIs and needless syncs",
                        "Walk through the three steps with the driver's behaviour in mind.",
                        '{"inv_cmds": 9, "wasted_inv_cmds": 8, "needless_sync_cmds": 3}', """
- Step 1: each `iommu_map_sync` ends with a CMD_SYNC that has nothing to complete →
  `needless_sync_cmds = regions` (both drivers).
- Step 2, `smmuv3-v4.15`: one NH_VA per page, queued at once → `regions × pages` TLBIs,
  all still uncovered by a sync. `smmuv3-v5.4`: nothing issued (adjacent regions merge into
  one gathered range).
- Step 3: NH_ASID + CMD_SYNC. `inv_cmds` = early TLBIs + 1; the early TLBIs are all wasted
  (v4.15), none on v5.4 (`inv_cmds = 1`, `wasted = 0`)."""),
        md("""
## Kernel cross-reference

| Python (iommu_lab) | kernel symbol | file | version |
|---|---|---|---|
| `s.queue` (`CommandQueue`, style `ring`) | `struct arm_smmu_cmdq` / `arm_smmu_queue` | drivers/iommu/arm-smmu-v3.c | v4.15 |
| `q.register_values()` | `ARM_SMMU_CMDQ_PROD` (0x98), `ARM_SMMU_CMDQ_CONS` (0x9c), `Q_IDX`/`Q_WRP` | arm-smmu-v3.c | v4.14+ |
| one doorbell per command | `arm_smmu_cmdq_issue_cmd()` | arm-smmu-v3.c | v4.15 |
| one doorbell per batch | `arm_smmu_cmdq_issue_cmdlist()`, `CMDQ_BATCH_ENTRIES` (64) | arm-smmu-v3.c | v5.4 |
| `CMD_TLBI_NH_VA` (0x12) | `CMDQ_OP_TLBI_NH_VA`, `arm_smmu_tlb_inv_range_nosync()` | arm-smmu-v3.c | v4.15 |
| `CMD_TLBI_NH_ASID` (0x11) | `CMDQ_OP_TLBI_NH_ASID`, `arm_smmu_tlb_inv_context()` | arm-smmu-v3.c | v4.14+ |
| `CMD_SYNC` (0x46), `s.tlb_sync()` | `CMDQ_OP_CMD_SYNC`, `arm_smmu_iotlb_sync()` → `__arm_smmu_tlb_sync()` | arm-smmu-v3.c | v4.15 |
| `s.consume(n)` | (hardware) the SMMU advancing `CMDQ_CONS` | Arm IHI 0070 | — |
| `views.overlap_ns` | — (model metric: IOMMU busy time inside CPU unmap calls) | — | — |
| `IommuIotlbGather` | `struct iommu_iotlb_gather` | include/linux/iommu.h | v5.4 |

## Instructor notes

- 50 minutes. Project the stepper and run sections 1–2 live; pause on the stale read after
  `unmap_fast` (queued ≠ done) and on "consumed vs completed".
- The app notebook [app-stepper](app-stepper.ipynb) (`make app`) gives the same stepper with
  buttons; let students try `flush_all` after `unmap_fast` themselves.
- Section 3 is the debate in one chart: ask the room which costs would make each side right,
  then run the 400 ns variant. Stress that the costs are assumptions.
- Close with the resolution list and point to notebook 05 (coming).

{nav}
""".replace("{nav}", nav("04"))),
        finish("04-SMMUv3-command-queue"),
    ]


# ---- apps ---------------------------------------------------------------------------------
def app_stepper() -> list[dict[str, Any]]:
    return [
        md("""
# IOMMU stepper

Pick a driver strategy and API era, type an IOVA and a size (hex, decimal or `64K`/`2M`),
and press the buttons. The IOMMU is paused: use *consume* to let it execute queued commands.
"""),
        code(VERSIONS_CELL),
        code('from iommu_lab.ui import Stepper\nStepper("smmuv3-v4.15", cmdq_entries=32)'),
        finish("app-stepper"),
    ]


def app_compare() -> list[dict[str, Any]]:
    return [
        md("""
# Strategy comparison dashboard

Pick driver strategies, caller patterns and a guest, then *run compare()*. Counts are exact
for each kernel version; times come from a cost model of assumptions.
"""),
        code(VERSIONS_CELL),
        code("from iommu_lab.ui import CompareDashboard\nCompareDashboard()"),
        finish("app-compare"),
    ]


NOTEBOOKS = {
    "00-Index": nb00,
    "01-IO-page-tables-and-iommu_map": nb01,
    "02-The-IOTLB-and-why-unmap-must-flush": nb02,
    "03-A-flush-interface-range_add-sync-flush_all": nb03,
    "04-SMMUv3-command-queue": nb04,
    "app-stepper": app_stepper,
    "app-compare": app_compare,
}


# ---- writing ------------------------------------------------------------------------------
def build(stem: str) -> nbformat.NotebookNode:
    """The notebook ``stem`` as an nbformat v4 node (no outputs, stable ids)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                       "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(NOTEBOOKS[stem]()):
        cid = str(i)  # what nbstripout writes: stable, and --verify stays clean
        if cell["kind"] == "markdown":
            c = nbformat.v4.new_markdown_cell(cell["source"], id=cid)
        else:
            c = nbformat.v4.new_code_cell(cell["source"], id=cid)
            c.metadata = cell.get("metadata") or {}
        nb.cells.append(c)
    nbformat.validate(nb)
    return nb


def render(stem: str) -> str:
    return nbformat.writes(build(stem)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a notebook is out of date")
    args = ap.parse_args(argv)
    NB_DIR.mkdir(exist_ok=True)
    stale = []
    for stem in NOTEBOOKS:
        path = NB_DIR / f"{stem}.ipynb"
        text = render(stem)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python tools/make_notebooks.py):", ", ".join(stale),  # noqa: T201
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
