"""``check_strategy`` and ``race`` (issue 14): every shipped strategy passes, each shipped
unsafe example is caught with a short counterexample under exactly the caller patterns
whose completion it breaks, each invariant is reachable, the search is deterministic for a
seed (an int or a student ID), and a counterexample replays on the stepper model.

Which patterns cannot apply, from the kernel: no ``flush_iotlb_all`` op in SMMUv3 v4.14 and
SMMUv2 v4.14 (arm-smmu-v3.c / arm-smmu.c @v4.14.5), VT-d v5.10 (``intel_iommu_ops``,
intel/iommu.c @v5.10.89:6130-6157) and virtio-iommu v5.15 (it came with [M6], v6.7); no lazy
flush queue before SMMUv3 v4.20 (``IO_PGTABLE_QUIRK_NON_STRICT``), on SMMUv2 v4.14, and on
virtio-iommu v5.15 (kernel-api-history.md §5, hardware-invalidation.md §1.4, §5, §6.2).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab import views
from iommu_lab.analysis import check
from iommu_lab.analysis.check import PATTERNS, Move, Trial, check_strategy
from iommu_lab.analysis.stepping import StepperModel
from iommu_lab.drivers import examples, user
from iommu_lab.drivers.base import Driver
from iommu_lab.drivers.registry import STRATEGIES
from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.hw.commands import Command
from iommu_lab.inputs.workloads import nic_streaming

SHIPPED = [s.name for s in STRATEGIES.values() if not s.user_defined]
NO_FLUSH_ALL_OP = {"smmuv3-v4.14", "smmuv2", "vtd-psi", "virtio-iommu"}
NO_FLUSH_QUEUE = {"smmuv3-v4.14", "smmuv3-v4.15", "smmuv2", "virtio-iommu"}
SYNC_PATTERNS = {"unmap-each", "unmap-fast-batch", "rfc-2017-wrappers", "dma-strict"}
EXAMPLES = 60
PKG = Path(il.__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("clean_registry")   # conftest.py


@pytest.fixture(scope="module")
def unsafe_results():
    """Each shipped unsafe example checked once (seed 0), registered only meanwhile."""
    out = {}
    before = dict(STRATEGIES)
    for name, ex in examples.EXAMPLES.items():
        if not ex.safe:
            examples.register_example(name)
            out[name] = check_strategy(name, examples=EXAMPLES, seed=0)
    STRATEGIES.clear()
    STRATEGIES.update(before)
    return out


# ---- every shipped strategy passes -----------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_strategy_passes(name):
    res = check_strategy(name, examples=30, seed=0)
    assert res.ok, res
    assert res.counterexample is None and res.invariant is None and res.unsafe_callers == []
    na = {p.caller for p in res.patterns if p.ok is None}
    want = ({"unmap-then-flush-all"} if name in NO_FLUSH_ALL_OP else set()) | (
        {"dma-lazy"} if name in NO_FLUSH_QUEUE else set())
    assert na == want
    for p in res.patterns:
        assert (p.examples, bool(p.skipped)) == ((0, True) if p.ok is None else (30, False))


def test_the_safe_example_passes():
    examples.register_example("range-or-all")
    assert check_strategy("range-or-all", examples=30).ok


# ---- the unsafe examples are caught ---------------------------------------------------------

@pytest.mark.parametrize("name,failing,invariants", [
    ("sync-every-k", SYNC_PATTERNS, {"strict-unmap"}),
    ("range-off-by-one", SYNC_PATTERNS, {"strict-unmap"}),
    ("fq-no-wait", {"unmap-then-flush-all", "dma-lazy"}, {"strict-unmap", "lazy-reuse"}),
])
def test_each_unsafe_example_is_caught_where_its_completion_breaks(
        unsafe_results, name, failing, invariants):
    res = unsafe_results[name]
    assert not res.ok
    assert set(res.unsafe_callers) == failing
    assert {p.counterexample.invariant for p in res.patterns if p.counterexample} == invariants
    for p in res.patterns:
        if p.counterexample is not None:
            cx = p.counterexample
            assert 4 <= len(cx.steps) <= 5, cx        # map, touch, unmap, (complete), touch
            assert cx.steps[-1].saw == "stale" and cx.steps[1].saw == "walk"
            assert cx.steps[0].action in ("map", "map_sync")


def test_the_sync_every_k_counterexample_is_four_clicks(unsafe_results):
    cx = unsafe_results["sync-every-k"].for_caller("unmap-each").counterexample
    assert [str(s) for s in cx.steps] == [
        "map('0x100000', '4K', '0x40000000')", "dma_read('0x100000') → walk",
        "unmap('0x100000', '4K')", "dma_read('0x100000') → stale"]
    assert cx.invariant == "strict-unmap" and "use after unmap" in cx.message
    assert unsafe_results["sync-every-k"].counterexample.steps == cx.steps  # the shortest


def test_the_lazy_counterexample_reuses_the_iova(unsafe_results):
    cx = unsafe_results["fq-no-wait"].for_caller("dma-lazy").counterexample
    acts = [s.action for s in cx.steps]
    assert acts[:3] == ["map", "dma_read", "unmap"] and acts[4:] == ["dma_read"]
    flush = cx.steps[3]   # what makes dma-iommu flush: reusing the IOVA, or the 10 ms timer
    if flush.action == "map":
        assert flush.args[0] == cx.steps[0].args[0] and flush.args[2] != cx.steps[0].args[2]
    else:
        assert flush.action == "advance" and flush.args[0] > 10_000_000
    assert cx.steps[4].args[0] == cx.steps[0].args[0]
    assert cx.invariant == "lazy-reuse" and cx.type == "DMA_FQ" and cx.params["fq_size"] == 3


# ---- each invariant is reachable --------------------------------------------------------------

def _tlbi(drv):
    return Command("CMD_TLBI_NH_ASID", drv.asid, fields=(("ASID", drv.asid),))


def forgets_doorbell(drv, dom, gather):
    """Writes TLBI + CMD_SYNC into the ring but never rings the doorbell."""
    drv.q.write(_tlbi(drv))
    drv.q.write(Command("CMD_SYNC"))


def invents_a_tlbi(drv, dom, gather):
    """Counts an invalidation it never issues (and then does v5.4's sync)."""
    dom.stats["inv_cmds"] += 1
    type(drv).__mro__[1].iotlb_sync(drv, dom, gather)


def flush_raises(drv, dom):
    raise RuntimeError("flush-all not written yet")


def maps_read_only(drv, dom, iova, paddr, pgsize, pgcount, prot):
    return Driver.map_pages(drv, dom, iova, paddr, pgsize, pgcount, int(il.IOMMU_READ))


@pytest.mark.parametrize("ops,invariant", [
    ({"iotlb_sync": forgets_doorbell}, "commands-complete"),
    ({"iotlb_sync": invents_a_tlbi}, "counters-conserve"),
    ({"flush_iotlb_all": flush_raises}, "calls-succeed"),
    ({"map": maps_read_only}, "mapped-translates"),
    ({"iotlb_sync": lambda drv, dom, gather: None}, "strict-unmap"),
])
def test_each_invariant_is_reachable(ops, invariant):
    il.register_strategy("broken", base="smmuv3-v5.4", **ops)
    res = check_strategy("broken", examples=EXAMPLES, callers=["unmap-each",
                                                                "unmap-fast-batch"])
    assert not res.ok and res.invariant == invariant, res
    assert len(res.counterexample.steps) <= 6


# ---- determinism, seeds, bad input ---------------------------------------------------------------

def test_deterministic_for_a_seed_and_a_student_id(unsafe_results):
    """Each pattern's search depends only on (seed, caller): checking two patterns again
    gives exactly the counterexamples of the full check; a string seed is stable too."""
    examples.register_example("sync-every-k")
    first = unsafe_results["sync-every-k"]
    again = check_strategy("sync-every-k", examples=EXAMPLES, seed=0,
                           callers=["dma-strict", "unmap-each"])
    for p in again.patterns:
        assert p == first.for_caller(p.caller)
    a = check_strategy("sync-every-k", examples=20, seed="s1234567", callers=["dma-strict"])
    b = check_strategy("sync-every-k", examples=20, seed="s1234567", callers=["dma-strict"])
    assert a.counterexample == b.counterexample is not None and a.seed == "s1234567"
    assert check.seed_value("s1") != check.seed_value("s2")
    assert check.seed_value(0, "dma-lazy") != check.seed_value(0, "dma-strict")


def test_a_string_seed_is_the_same_in_another_process():
    """Python salts str hashes per process; the checker's seed must not depend on that."""
    import subprocess
    import sys

    code = "from iommu_lab.analysis.check import seed_value; print(seed_value('s1234567'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "random", "PATH": ""}, cwd=PKG.parent,
                         timeout=60, check=True)
    assert int(out.stdout) == check.seed_value("s1234567")


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "nope"}, "unknown strategy"),
    ({"examples": 0}, "examples must be a whole number"),
    ({"examples": True}, "examples must be a whole number"),
    ({"steps": 1000}, "steps must be a whole number"),
    ({"seed": 1.5}, "seed must be an int or a string"),
    ({"callers": ["unmap-everything"]}, "unknown caller"),
    ({"callers": ["api-calls"]}, "has no check pattern"),
])
def test_bad_input_is_einval(kwargs, match):
    args = {"name": "smmuv3-v5.4", **kwargs}
    with pytest.raises(IommuError, match=match) as exc:
        check_strategy(args.pop("name"), **args)
    assert exc.value.errno == EINVAL


def test_every_default_caller_has_a_pattern():
    from iommu_lab.analysis.callers import DEFAULT_CALLERS

    assert list(PATTERNS) == list(DEFAULT_CALLERS)
    assert set(check.INVARIANTS) == {"strict-unmap", "lazy-reuse", "mapped-translates",
                                     "commands-complete", "counters-conserve", "calls-succeed"}


# ---- replay on the stepper ----------------------------------------------------------------------

def test_every_counterexample_replays_on_a_fresh_stepper_model(unsafe_results):
    for name, res in unsafe_results.items():
        examples.register_example(name)
        for p in res.patterns:
            if p.counterexample is None:
                continue
            r = p.counterexample.replay()
            lines = r.run()
            assert r.done and len(lines) == len(p.counterexample.steps)
            assert r.model.error is None and "(the checker saw" not in "\n".join(lines)
            assert lines[-1].endswith(p.counterexample.message)
            assert r.step().startswith("done:")
            assert r.model.domain.stats()["stale_hits"] == 1


def test_replay_refuses_a_stepper_on_another_domain(unsafe_results):
    examples.register_example("fq-no-wait")
    res = unsafe_results["fq-no-wait"]
    with pytest.raises(IommuError, match="needs a stepper on fq-no-wait"):
        res.replay(StepperModel("smmuv3-v5.4"))
    with pytest.raises(IommuError, match="StepperModel or a ui.Stepper"):
        res.replay("not a stepper")
    with pytest.raises(IommuError, match="no counterexample to replay"):
        check_strategy("smmuv3-v5.4", examples=5, callers=["unmap-each"]).replay()
    model = StepperModel(**res.counterexample.stepper_args())
    assert res.replay(model).model is model


def test_a_counterexample_replays_on_the_ui_stepper_one_click_at_a_time(unsafe_results):
    """What notebook 10 does: the widget shows each click (its log) as the replay plays."""
    from iommu_lab.ui import Stepper

    examples.register_example("sync-every-k")
    cx = unsafe_results["sync-every-k"].counterexample
    s = Stepper(**cx.stepper_args())
    r = cx.replay(s)
    assert r.model is s.model
    logs = []
    for _ in cx.steps:
        r.step()
        logs.append(s.w_log.value)
    assert r.done and len(set(logs)) == len(cx.steps)   # every click changed the log
    assert s.model.domain.stats()["stale_hits"] == 1 and s.model.error is None


_SMALL = st.lists(st.integers(0, (1 << check.MOVE_BITS) - 1).map(Move.decode), max_size=10)


@settings(max_examples=25, deadline=None, database=None, derandomize=True)
@given(program=_SMALL, pattern=st.sampled_from(sorted(PATTERNS)),
       strategy=st.sampled_from(["smmuv3-v4.15", "smmuv3-v5.4", "amd-range", "vtd-psi"]))
def test_the_checker_runs_what_the_stepper_runs(program, pattern, strategy):
    """Reference: the stepper model (one atomic action per click) against the checker's
    direct session: the same steps give the same device results and the same counters."""
    trial = Trial(strategy, PATTERNS[pattern])
    trial.play(program)
    model = StepperModel(**{"strategy": strategy, "api": trial.dom.api.name,
                            "type": trial.dom.type, **PATTERNS[pattern].params})
    for step in trial.steps:
        got = getattr(model, step.action)(*step.args)
        assert model.error is None, model.error
        if step.saw:
            assert got == step.saw, step
    for q in trial.dom.hw.queues:       # finish() let the checker's IOMMU run to idle
        q.run_until_idle()
    model.run_until_idle()
    assert model.domain.stats() == trial.dom.stats()


# ---- race ---------------------------------------------------------------------------------------

def test_race_ranks_safe_first_then_time():
    examples.register_example("sync-every-k")
    examples.register_example("range-or-all")
    df = il.race(nic_streaming(packets=64), ["smmuv3-v5.4", "sync-every-k", "range-or-all"],
                 ["dma-strict"], examples=20)
    assert df["rank"].tolist() == [1, 2, 3]
    assert df["safe"].tolist() == [True, True, False]
    assert df["strategy"].iloc[-1] == "sync-every-k"
    assert df["unsafe_because"].tolist() == ["", "", "strict-unmap"]
    safe = df[df["safe"]]
    assert safe["end_ns"].is_monotonic_increasing
    # the unsafe one skips 3 of 4 waits: fastest, still last
    assert df["end_ns"].iloc[-1] < safe["end_ns"].min()
    assert (df["commands"] == df["inv_cmds"] + df["sync_cmds"] + df["requests"]).all()
    assert df.set_index("strategy")["user_defined"].to_dict() == {
        "smmuv3-v5.4": False, "sync-every-k": True, "range-or-all": True}
    fig = views.compare_figure(df, "end_ns")
    assert list(fig.data[0].x) == df["strategy"].tolist()
    assert list(views.compare_table(df, ["rank", "safe"]).columns)[:2] == ["strategy", "caller"]


def test_race_uses_each_callers_safety_and_given_checks():
    examples.register_example("fq-no-wait")
    done = {"fq-no-wait": check_strategy("fq-no-wait", examples=40,
                                         callers=["dma-strict", "dma-lazy"])}
    df = il.race(nic_streaming(packets=32), ["fq-no-wait"], ["dma-strict", "dma-lazy"],
                 checks=done)
    assert dict(zip(df["caller"], df["safe"])) == {"dma-strict": True, "dma-lazy": False}
    with pytest.raises(IommuError, match="unknown strategy"):
        il.race(nic_streaming(packets=8), ["nope"], ["dma-strict"])


def test_the_challenge_races_against_v54_on_both_workloads():
    """notebook 10's challenge: the safe range-or-all (T = 2) beats v5.4 on the NIC ring and
    the teardown; sync-every-k is faster on the NIC ring but unsafe, so it never beats."""
    from iommu_lab.analysis.race import CHALLENGE, challenge

    class RangeOrAll2(examples.RangeOrAll):
        params = {**examples.RangeOrAll.params, "flush_all_above": 2}

    il.register_strategy("range-or-all", RangeOrAll2)
    examples.register_example("sync-every-k")
    ok = challenge("range-or-all", examples=10)
    assert ok["workload"].tolist() == [w for w in CHALLENGE for _ in range(2)]
    assert ok["caller"].tolist() == [c for _, c in CHALLENGE.values() for _ in range(2)]
    mine = ok[ok["strategy"] == "range-or-all"]
    base = ok[ok["strategy"] == "smmuv3-v5.4"]
    assert mine["beats"].all() and not base["beats"].any() and ok["safe"].all()
    assert (mine["end_ns"].to_numpy() < base["end_ns"].to_numpy()).all()
    assert (mine["inv_all_cmds"] > 0).all() and (base["inv_all_cmds"] == 0).all()
    bad = challenge("sync-every-k", examples=10)
    fast = bad[bad["strategy"] == "sync-every-k"]
    assert not fast["safe"].any() and not fast["beats"].any()
    assert set(fast["unsafe_because"]) == {"strict-unmap"}
    assert (fast["rank"] == 2).all()
    with pytest.raises(IommuError, match="unknown strategy"):
        challenge("nope")


# ---- layering ------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["drivers/user.py", "drivers/examples.py"])
def test_user_strategies_live_in_the_kernel_mirror_layer(module):
    """The definitions import only the hardware model and the kernel mirror (and not the
    analysis layer above them); the checker and the race stay in analysis."""
    tree = ast.parse((PKG / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            top = (node.module or "").split(".")[0]
            assert top in ("", "core", "errors", "hw", "io_pgtable", "prot", "units",
                           "registry", "base", "user", "arm_smmu_v3"), (module, node.module)
    assert user.__name__.startswith("iommu_lab.drivers")


def test_domain_parameters_reach_the_check_and_the_replay():
    """``sync_every=1`` makes sync-every-k wait at every sync: v5.4 again, safe; an unknown
    parameter is EINVAL naming it."""
    examples.register_example("sync-every-k")
    assert check_strategy("sync-every-k", examples=20, callers=["unmap-each"],
                          params={"sync_every": 1}).ok
    res = check_strategy("sync-every-k", examples=20, callers=["unmap-each"],
                         params={"sync_every": 3})
    assert not res.ok and res.counterexample.params["sync_every"] == 3
    assert res.replay().run()[-1].splitlines()[0].endswith("→ stale")
    with pytest.raises(IommuError, match="unknown parameter"):
        check_strategy("sync-every-k", examples=5, params={"sync_evry": 2})
