"""Notebook 05: SMMUv3.2 range invalidation (RIL) against one TLBI per page.

With ``ARM_SMMU_FEAT_RANGE_INV`` (``IDR3.RIL``) ``arm_smmu_tlb_inv_range`` (v5.10.89)
covers ``num_pages`` 4K pages with range commands: ``scale = __ffs(num_pages)``,
``num = (num_pages >> scale) & 31`` (``CMDQ_TLBI_RANGE_NUM_MAX``), the command's NUM field
is ``num - 1``, it covers ``num << scale`` pages, and the loop goes on with what is left
(hardware-invalidation.md §1.6). Without RIL (v5.4) it is one TLBI per page, in batches of
``CMDQ_BATCH_ENTRIES`` (64), one doorbell per batch.
"""

from __future__ import annotations

from typing import Any

from ..analysis.lessons import ril_commands, sync_batches
from ..units import SZ_4K, fmt_size
from ._base import Problem, dict_of_ints, explainer, md_table, rng_for, run_check, seeded

NAME = "ril_range"
NOTEBOOK = "05"
KIND = "numeric"
FIELDS = ("commands", "NUM_first", "SCALE_first", "NUM_last", "SCALE_last",
          "v5_4_doorbells")


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """One contiguous unmap of 1 .. 511 4K pages at a 2M-aligned IOVA (fewer than 512, so
    the range never covers a whole page-table page, whose freeing would add a synchronous
    walk invalidation)."""
    rng = rng_for(NAME, seed)
    shape = rng.random()
    if shape < 0.2:
        pages = rng.randrange(1, 32)
    elif shape < 0.45:
        pages = rng.randrange(1, 32) << rng.randrange(1, 5)     # a multiple of a power of two
    else:
        pages = rng.randrange(32, 512)
    iova = rng.randrange(1, 256) * 0x20_0000
    text = (f"An SMMUv3.2 with range invalidation (strategy smmuv3-ril, Linux v5.10) unmaps "
            f"{pages} contiguous 4K pages at {iova:#x} (iommu_unmap: one gather, one sync; "
            "fewer than 512 pages, so no page-table page is freed).\n"
            "How many CMD_TLBI_NH_VA range commands does arm_smmu_tlb_inv_range build "
            "(commands)? What are the NUM and SCALE fields of the first and of the last of "
            "them (equal if there is one)? And how many doorbells would smmuv3-v5.4 (no "
            "RIL: one TLBI per page, batches of 64) ring for the same unmap (v5_4_doorbells)?")
    return Problem(NAME, seed, text, {"pages": pages, "iova": iova},
                   answer_format='a dict, e.g. {"commands": 2, "NUM_first": 2, '
                                 '"SCALE_first": 0, "NUM_last": 0, "SCALE_last": 5, '
                                 '"v5_4_doorbells": 1}',
                   hint="write the page count in binary; SCALE = position of the lowest set "
                        "bit, the 5 bits starting there are num (NUM field = num - 1); "
                        "subtract num << SCALE and repeat. v5.4: ceil(pages / 64) batches.")


def _rows(problem: Problem) -> list[dict[str, Any]]:
    p = problem.params
    return ril_commands(p["pages"] * SZ_4K, SZ_4K, p["iova"])


def solve(problem: Problem) -> dict[str, int]:
    """The range commands the model's ``smmuv3-ril`` driver builds; v5.4's batches."""
    p = problem.params
    rows = _rows(problem)
    batches = sync_batches("smmuv3-v5.4", p["pages"] * SZ_4K, p["iova"])
    return {"commands": len(rows), "NUM_first": rows[0]["NUM"],
            "SCALE_first": rows[0]["SCALE"], "NUM_last": rows[-1]["NUM"],
            "SCALE_last": rows[-1]["SCALE"], "v5_4_doorbells": len(batches)}


@explainer
def explain(problem: Problem) -> str:
    """The binary decomposition, the encoded commands, v5.4's batches."""
    p = problem.params
    rows = _rows(problem)
    batches = sync_batches("smmuv3-v5.4", p["pages"] * SZ_4K, p["iova"])
    left, steps = p["pages"], []
    for r in rows:
        steps.append({"pages left": f"{left} = {left:#b}", "SCALE = lowest set bit": r["SCALE"],
                      "num = 5 bits from SCALE up": r["NUM"] + 1, "NUM field = num - 1": r["NUM"],
                      "covers": f"{r['pages']} pages from {r['addr']:#x} "
                                f"({fmt_size(r['bytes'])})", "TG, TTL": f"{r['TG']}, {r['TTL']}"})
        left -= r["pages"]
    v54 = [{"batch": b["call"], "TLBIs": b["commands"] - int(b["ends with CMD_SYNC"]),
            "with CMD_SYNC": b["ends with CMD_SYNC"]} for b in batches]
    return (f"{p['pages']} pages. Each range command covers `(NUM+1) × 2^SCALE` pages of the "
            "4K granule (TG = 1); TTL = 3 says the leaves are level-3 pages.\n\n"
            + md_table(steps) + f"\n\n{len(rows)} range command(s): the first has NUM "
            f"{rows[0]['NUM']} and SCALE {rows[0]['SCALE']}, the last NUM {rows[-1]['NUM']} and "
            f"SCALE {rows[-1]['SCALE']}.\n\nOn smmuv3-v5.4 the same unmap is one TLBI per page, "
            "built into batches of 64 and issued with a doorbell each, the last with the "
            f"CMD_SYNC — {len(batches)} doorbell(s):\n\n" + md_table(v54))


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "A 5-bit NUM and a SCALE exponent: any page count in a handful of "
                     "commands, exactly — no power-of-two superset.")
