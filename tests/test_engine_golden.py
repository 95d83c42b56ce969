"""The step-by-step engine's counts, clock and trace are pinned (issue 13 item 3).

The engine was optimised for speed (fewer Python calls per op); it must behave exactly as
before. Each workload below — seeded random map / unmap / unmap_fast / sync / flush_all /
DMA-API / device-access / advance ops under several (strategy, caller) pairs, with
several CPUs and with ATS — was run on the engine *before* the optimisation and every
counter, the end clock, the queue tallies and a digest of the whole trace were written to
``tests/golden/engine.json``. Any change of behaviour changes one of them.

Regenerate (only for an intended behaviour change, and say why in the commit):
``.venv/bin/python tests/test_engine_golden.py --write``.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from iommu_lab.analysis.session import Session
from iommu_lab.inputs.ops import Op

GOLDEN = Path(__file__).parent / "golden" / "engine.json"
SLOT = 1 << 21                  # each region lives in its own 2 MiB slot
BASE = 1 << 30
PADDR = 1 << 36
SIZES = (0x1000, 0x1000, 0x2000, 0x4000, 0x10000, 0x200000)

# (name, strategy, caller, params, ops, how): ``how`` "do" steps op by op ("timed": each
# op also carries a trace timestamp ``at_ns``, as in a replay), "run" uses Session.run
# (runs of count > 1, several CPUs).
CASES: tuple[tuple[str, str, str, dict[str, Any], int, str], ...] = (
    ("v54-each", "smmuv3-v5.4", "unmap-each", {}, 1500, "do"),
    ("v54-batch", "smmuv3-v5.4", "unmap-fast-batch", {}, 1500, "do"),
    ("v54-api", "smmuv3-v5.4", "api-calls", {}, 1500, "do"),
    ("v54-ats", "smmuv3-v5.4", "unmap-each", {"ats": True}, 1200, "do"),
    ("v415-each", "smmuv3-v4.15", "unmap-each",
     {"cmdq_entries": 32, "costs": {"hw_tlbi_ns": 400}}, 1200, "do"),
    ("v414-flushall", "smmuv3-v4.14", "unmap-then-flush-all", {}, 1200, "do"),
    ("ril-rfc", "smmuv3-ril", "rfc-2017-wrappers", {}, 1200, "do"),
    ("v2-each", "smmuv2", "unmap-each", {}, 1200, "do"),
    ("vtd-each", "vtd-psi", "unmap-each", {}, 1500, "do"),
    ("vtd-strict", "vtd-psi", "dma-strict", {}, 1200, "do"),
    ("vtd-ats", "vtd-psi", "api-calls", {"ats": True}, 1200, "do"),
    ("amd-range-each", "amd-range", "unmap-each", {}, 1500, "do"),
    ("amd-range-lazy", "amd-range", "dma-lazy", {"fq_size": 16}, 1500, "do"),
    ("amd-flushall-batch", "amd-flush-all", "unmap-fast-batch", {}, 1200, "do"),
    ("virtio-each", "virtio-iommu", "unmap-each", {}, 1200, "do"),
    ("v54-lazy", "smmuv3-v5.4", "dma-lazy", {"fq_size": 32}, 1200, "do"),
    ("v54-cpus2", "smmuv3-v5.4", "unmap-each", {"cpus": 2}, 1200, "run"),
    ("vtd-cpus2-batch", "vtd-psi", "unmap-fast-batch", {"cpus": 2}, 1200, "run"),
    ("amd-cpus2-strict", "amd-range", "dma-strict", {"cpus": 2, "ats": True}, 1000, "run"),
    ("v54-compact-runs", "smmuv3-v5.4", "unmap-fast-batch", {"compact": True}, 300, "run"),
    ("v2-compact-runs", "smmuv2", "unmap-each", {"compact": True}, 300, "run"),
    ("v54-untraced-timed", "smmuv3-v5.4", "unmap-each", {"trace_limit": 0}, 1500, "timed"),
    ("vtd-untraced-timed", "vtd-psi", "unmap-fast-batch", {"trace_limit": 0}, 1200, "timed"),
    ("amd-short-trace", "amd-range", "unmap-each", {"trace_limit": 500}, 1200, "do"),
)


def workload(seed: int, n: int, runs: bool = False) -> list[Op]:
    """``n`` seeded random ops over 64 slots: mostly valid, some deliberately not."""
    rng = random.Random(seed)
    mapped: dict[int, int] = {}            # slot -> size mapped at its start
    dma: list[int] = []                    # buffers handed out by the DMA layer (paddr)
    gone: list[int] = []                   # IOVAs recently unmapped (stale DMA targets)
    ops: list[Op] = []
    for _ in range(n):
        r = rng.random()
        slot = rng.randrange(64)
        iova = BASE + slot * SLOT
        if runs and r < 0.04:
            k = rng.choice((64, 100, 200))
            base = BASE + 64 * SLOT + rng.randrange(8) * 0x1000000
            ops.append(Op("map", base, 0x1000, PADDR, count=k, stride=0x1000,
                          paddr_stride=0x1000))
            ops.append(Op("unmap", base, 0x1000, count=k, stride=0x1000))
        elif r < 0.30:
            size = rng.choice(SIZES)
            ops.append(Op("map", iova, size, PADDR + slot * SLOT))
            mapped.setdefault(slot, size)
        elif r < 0.50 and mapped:
            slot = rng.choice(sorted(mapped))
            size = mapped.pop(slot)
            if size == SLOT and rng.random() < 0.3:
                size = 0x1000          # split a block: unmap one page of it
            ops.append(Op("unmap", BASE + slot * SLOT, size))
            gone.append(BASE + slot * SLOT)
        elif r < 0.56 and mapped:
            slot = rng.choice(sorted(mapped))
            ops.append(Op("unmap_fast", BASE + slot * SLOT, mapped.pop(slot)))
            gone.append(BASE + slot * SLOT)
        elif r < 0.60:
            ops.append(Op("sync"))
        elif r < 0.62:
            ops.append(Op("flush_all"))
        elif r < 0.70:
            paddr = PADDR + (1 << 32) + rng.randrange(256) * 0x10000
            ops.append(Op("dma_map", 0, rng.choice((0x800, 0x1000, 0x3000)), paddr))
            dma.append(paddr)
        elif r < 0.76 and dma:
            ops.append(Op("dma_unmap", 0, 0x1000, dma.pop(rng.randrange(len(dma)))))
        elif r < 0.93:
            hot = [BASE + s * SLOT for s in list(mapped)[-3:]]  # mostly recent: hits
            pool = hot if hot and rng.random() < 0.7 else [
                BASE + s * SLOT for s in mapped] + gone[-8:]
            target = rng.choice(pool) if pool else iova
            ops.append(Op("access", target + rng.randrange(4) * 0x1000,
                          write=rng.random() < 0.3))
        elif r < 0.96 and dma:
            ops.append(Op("access", 0, paddr=rng.choice(dma)))
        else:
            ops.append(Op("advance", ns=rng.choice((100, 5_000, 2_000_000))))
    return ops


def _digest(items: Any) -> str:
    return hashlib.sha256(repr(items).encode()).hexdigest()[:20]


def outcome(strategy: str, caller: str, params: dict[str, Any], n: int, how: str,
            seed: int) -> dict[str, Any]:
    """Run one case and return everything that must not change."""
    compact = bool(params.get("compact", False))
    p = {k: v for k, v in params.items() if k != "compact"}
    s = Session(strategy, caller, params=p, compact=compact, lenient=True)
    ops = workload(seed, n, runs=compact)
    results: list[Any] = []
    if how == "timed":
        ops = [replace(op, at_ns=k * 700) for k, op in enumerate(ops)]
    if how != "run":
        for op in ops:
            results.append(s.do(op))
        s.finish()
    else:
        s.run(ops)
    dom = s.dom
    queues = [(q.prod, q.published, q.hw_free, dict(q.tally))
              for hw in dom.iommus for q in hw.queues]
    return {
        "stats": dom.stats(),
        "clock": dom.clock.now,
        "trace_len": len(dom.trace),
        "trace_dropped": dom.trace.dropped,
        "trace": _digest(list(dom.trace.events)),
        "results": _digest(results),
        "op_errors": len(s.op_errors),
        "errors": _digest(s.op_errors),
        "queues": _digest(queues),
        "per_iommu": dom.per_iommu(),
        "leaves": _digest(list(dom.pgtable.leaves())),
        "iotlb": _digest([(e.entry, e.stale, e.cache) for e in dom.iotlb_entries()]),
        "items": s.items,
        "compacted": s.compacted_items,
    }


def compute_all() -> dict[str, Any]:
    return {name: outcome(st, caller, params, n, how, seed=i)
            for i, (name, st, caller, params, n, how) in enumerate(CASES)}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_engine_matches_golden(case, golden):
    name, strategy, caller, params, n, how = case
    i = CASES.index(case)
    got = json.loads(json.dumps(outcome(strategy, caller, params, n, how, seed=i)))
    want = golden[name]
    changed = {k: v for k, v in want["stats"].items() if got["stats"].get(k) != v}
    assert not changed, {k: (v, got["stats"].get(k)) for k, v in changed.items()}
    assert got == want


def test_golden_workloads_exercise_the_engine(golden):
    # The pinned runs are not trivially empty: commands, syncs, hits, walks, stale hits,
    # DMA-API work, errors and (where asked) compact runs all happen in them.
    total = {k: sum(g["stats"].get(k, 0) for g in golden.values())
             for k in ("inv_cmds", "sync_cmds", "iotlb_hits", "iotlb_misses", "stale_hits",
                       "atc_inv_cmds", "fq_flushes", "spin_ns", "cmdq_full_stalls")}
    assert all(total.values()), total
    assert sum(g["op_errors"] for g in golden.values()) > 0
    assert golden["v54-compact-runs"]["compacted"] > 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_engine_golden.py --write   (regenerates tests/golden/engine.json)")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(compute_all(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
