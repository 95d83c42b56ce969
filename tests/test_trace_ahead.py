"""A trace parsed in a child process while the replay runs (inputs/trace/ahead.py; issue 13
item 3): the same ops, lenient skips, strict error (after the same ops) and progress as
parsing here, whatever the block size; the child is gone when the reader stops early;
a one-pair replay of a big file uses it and gives the row parsing here gives."""

from __future__ import annotations

import io
import multiprocessing
import threading
from itertools import islice
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab.analysis import replay as replay_mod
from iommu_lab.inputs.trace import ahead
from iommu_lab.inputs.trace.ahead import parse_ahead, worth_parsing_ahead
from iommu_lab.inputs.trace.record import TraceFormatError
from iommu_lab.inputs.trace.synth import make_synthetic_trace
from iommu_lab.inputs.trace.to_ops import iter_trace_ops, iter_trace_rows

BAD = "unmap: IOMMU: iova=0x00000000000010zz size=4096 unmapped_size=4096\n"
NOISE = "  <idle>-0  [001] d.h1.  12.000001: irq_handler_entry: irq=42 name=eth0\n"


def _trace(tmp_path: Path, lines: list[str], name: str = "t.txt") -> str:
    path = tmp_path / name
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> str:
    """1,500 synthetic lines with malformed ones at 3 places (lenient skips)."""
    lines = list(make_synthetic_trace(1_500, seed=11))
    for at in (1_200, 700, 5):
        lines[at:at] = [BAD, NOISE]
    return _trace(tmp_path_factory.mktemp("ahead"), lines)


@settings(max_examples=12, deadline=None)
@given(block=st.integers(1, 2_000))
def test_same_ops_and_skips_as_parsing_here(mixed, block):
    here: list = []
    there: list = []
    expected = list(iter_trace_ops(mixed, strict=False, skips=here))
    assert list(parse_ahead(mixed, strict=False, skips=there, block=block)) == expected
    assert there == here and [n for n, _ in here] == [6, 703, 1205]


@pytest.mark.parametrize("block", [1, 64, 10_000])
def test_strict_error_after_the_same_ops(tmp_path, block):
    lines = list(make_synthetic_trace(400, seed=3))
    lines.insert(250, BAD)
    path = _trace(tmp_path, lines)

    def run(ops) -> tuple[list, TraceFormatError]:
        got = []
        with pytest.raises(TraceFormatError) as err:
            for op in ops:
                got.append(op)
        return got, err.value

    ops_here, err_here = run(iter_trace_ops(path))
    ops_there, err_there = run(parse_ahead(path, block=block))
    assert ops_there == ops_here and len(ops_here) > 100
    assert (str(err_there), err_there.line, err_there.reason, err_there.errno) == (
        str(err_here), err_here.line, err_here.reason, err_here.errno)
    assert err_here.line == 251


def test_a_reader_that_stops_early_leaves_no_child(mixed):
    ops = parse_ahead(mixed, strict=False, block=16)
    first = list(islice(ops, 20))
    assert len(first) == 20 and [c for c in multiprocessing.active_children()
                                 if c.name == "iommu-lab-parse"]
    ops.close()
    assert not [c for c in multiprocessing.active_children() if c.name == "iommu-lab-parse"]


def test_a_missing_file_raises_as_parsing_here(tmp_path):
    missing = str(tmp_path / "nope.txt")
    assert not worth_parsing_ahead(missing)
    with pytest.raises(FileNotFoundError):
        il.replay(missing, ["smmuv3-v5.4"], ["unmap-each"])


def test_the_bar_advances_to_the_file_size(mixed, monkeypatch):
    from tqdm import tqdm

    out = io.StringIO()
    bars: list = []

    def bar(src, progress):
        bars.append(tqdm(total=Path(src).stat().st_size, unit="B", file=out, mininterval=0))
        return bars[-1]

    monkeypatch.setattr(ahead, "progress_bar", bar)
    n = sum(1 for _ in parse_ahead(mixed, strict=False, progress=True, block=50))
    assert n > 0 and bars[0].n == Path(mixed).stat().st_size and "100%" in out.getvalue()


def test_only_big_files_from_a_process_allowed_children(tmp_path, monkeypatch):
    path = _trace(tmp_path, make_synthetic_trace(100, seed=1))
    assert not worth_parsing_ahead(path)                      # small: parsed here
    monkeypatch.setattr(ahead, "AHEAD_BYTES", 0)
    assert worth_parsing_ahead(path) and worth_parsing_ahead(Path(path))
    assert not worth_parsing_ahead(Path(path).read_text())    # the text itself
    assert not worth_parsing_ahead(["map: IOMMU: ...\n"])
    monkeypatch.setattr(multiprocessing.current_process(), "_config",
                        {**multiprocessing.current_process()._config, "daemon": True})
    assert not worth_parsing_ahead(path)                      # may not start a child


def test_one_pair_replay_of_a_big_file_parses_ahead_same_row(tmp_path, monkeypatch):
    lines = list(make_synthetic_trace(3_000, seed=7))
    lines.insert(40, BAD)
    path = _trace(tmp_path, lines)
    here = il.replay(path, ["vtd-psi"], ["unmap-fast-batch"], strict=False)
    monkeypatch.setattr(ahead, "AHEAD_BYTES", 0)
    used = []
    real = replay_mod.parse_ahead

    def counting(*args, **kwargs):
        used.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(replay_mod, "parse_ahead", counting)
    there = il.replay(path, ["vtd-psi"], ["unmap-fast-batch"], strict=False)
    assert used == [1]
    pd.testing.assert_frame_equal(there, here)
    assert there.attrs["skips"] == here.attrs["skips"] and here.attrs["skips"][0][0] == 41


class _Unrebuildable(Exception):
    """Holds a lock, which no pickler takes (with or without tblib, which dask installs and
    which does rebuild exceptions whose __init__ wants other args)."""

    def __init__(self, what: str, line: int) -> None:
        super().__init__(f"{what} at line {line}")
        self.lock = threading.Lock()


def test_an_error_that_cannot_cross_the_pipe_still_reaches_the_reader(mixed, monkeypatch):
    def failing(*args, **kwargs):
        yield from islice(iter_trace_rows(mixed, strict=False), 10)
        raise _Unrebuildable("boom", 11)

    monkeypatch.setattr(ahead, "iter_trace_rows", failing)    # the forked child sees it
    got = []
    with pytest.raises(RuntimeError, match="_Unrebuildable: boom at line 11"):
        for op in parse_ahead(mixed, strict=False):
            got.append(op)
    assert len(got) == 10
