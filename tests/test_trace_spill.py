"""Ops parsed once and read back per pair (inputs/trace/spill.py; issue 13 item 3): a
replay of a trace file under several pairs gives exactly the rows and skips of replaying
each pair from the text on its own, leaves no file behind, and reads back every op as it
was written (any u64 field, no timestamp, merged runs, several blocks)."""

from __future__ import annotations

import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab.inputs.ops import Op
from iommu_lab.inputs.trace import spill as spill_mod
from iommu_lab.inputs.trace.record import TraceFormatError
from iommu_lab.inputs.trace.spill import OpSpill, read_spill
from iommu_lab.inputs.trace.synth import make_synthetic_trace

U64 = st.integers(0, (1 << 64) - 1)
OPS = st.lists(st.builds(
    Op, st.sampled_from(["map", "unmap", "access"]), U64, st.integers(1, (1 << 64) - 1), U64,
    st.sampled_from([1, 2, 3]), st.booleans(), st.integers(0, 10**12), st.integers(1, 10**6),
    U64, U64, st.none() | st.integers(0, 1 << 62), st.integers(0, 63)), max_size=40)
PAIRS = (["smmuv3-v5.4", "vtd-psi", "amd-range"], ["unmap-each", "unmap-fast-batch"])


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """Temporary files go to ``tmp_path``, so a test can see what is left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@settings(max_examples=60, deadline=None)
@given(ops=OPS, block=st.integers(1, 7))
def test_spill_reads_back_every_op_as_written(ops, block):
    with OpSpill(ops, block=block) as spill:
        assert len(spill) == len(ops)
        assert list(spill) == ops and list(spill) == ops      # any number of times
        assert list(read_spill(spill.path)) == ops
        assert all(type(op) is Op for op in spill)
    assert not spill.path.exists()


def test_a_failing_source_leaves_no_file(own_tmp):
    def ops():
        yield Op("map", 0x1000, 0x1000, 0x2000)
        raise TraceFormatError("line 2: boom")

    with pytest.raises(TraceFormatError, match="line 2: boom"):
        OpSpill(ops())
    assert list(own_tmp.iterdir()) == []


def _trace(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "t.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


def _alone(path: str, strict: bool = True) -> tuple[pd.DataFrame, list]:
    """Each pair replayed on its own, streaming the text (one parse per pair)."""
    frames = [il.replay(path, [s], [c], strict=strict) for s in PAIRS[0] for c in PAIRS[1]]
    return pd.concat(frames, ignore_index=True), frames[-1].attrs["skips"]


def test_several_pairs_parse_once_same_rows_and_skips(own_tmp, monkeypatch):
    lines = list(make_synthetic_trace(3_000, seed=7))
    lines.insert(40, "unmap: IOMMU: iova=0x00000000000010zz size=4096 unmapped_size=4096\n")
    path = _trace(own_tmp, lines)
    parsed = []
    real = spill_mod.OpSpill.__init__

    def counting(self, ops, *args):
        parsed.append(1)
        real(self, ops, *args)

    monkeypatch.setattr(spill_mod.OpSpill, "__init__", counting)
    together = il.replay(path, *PAIRS, strict=False)
    alone, skips = _alone(path, strict=False)
    pd.testing.assert_frame_equal(together, alone)
    assert together.attrs["skips"] == skips and skips and skips[0][0] == 41
    assert parsed == [1]                                 # one parse for six pairs
    assert sorted(p.name for p in own_tmp.iterdir()) == ["t.txt"]   # the spill is gone


def test_strict_error_is_the_one_pair_gives(own_tmp):
    lines = list(make_synthetic_trace(500, seed=3))
    lines.insert(100, "unmap: IOMMU: iova=0x00000000000010zz size=4096 unmapped_size=4096\n")
    path = _trace(own_tmp, lines)
    with pytest.raises(TraceFormatError) as alone:
        il.replay(path, ["smmuv3-v5.4"], ["unmap-each"])
    with pytest.raises(TraceFormatError) as together:
        il.replay(path, *PAIRS)
    assert str(together.value) == str(alone.value) and "line 101" in str(alone.value)
    assert sorted(p.name for p in own_tmp.iterdir()) == ["t.txt"]


def test_a_local_pool_reads_the_spill(own_tmp):
    path = _trace(own_tmp, make_synthetic_trace(2_000, seed=5))
    with ProcessPoolExecutor(2) as pool:
        pooled = il.replay(path, *PAIRS, executor=pool)
    pd.testing.assert_frame_equal(pooled, _alone(path)[0])
    assert sorted(p.name for p in own_tmp.iterdir()) == ["t.txt"]
