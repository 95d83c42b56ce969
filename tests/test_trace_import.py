"""Trace import: every format generation and prefix layout, bad lines, ops, bundled examples.

Formats from kernel-api-history §6.1 (include/trace/events/iommu.h).
"""

from __future__ import annotations

import gzip
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.inputs.ops import Op
from iommu_lab.inputs.trace import (
    COLUMNS,
    TraceFormatError,
    bench_import,
    iter_trace_ops,
    read_trace,
    trace_to_ops,
)
from iommu_lab.inputs.trace.synth import (
    GENERATIONS,
    PREFIX_STYLES,
    format_line,
    format_payload,
    make_synthetic_trace,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"
REQUIRED = ["event", "timestamp", "iova", "paddr", "size", "unmapped_size", "flags", "line",
            "cpu", "task", "device", "generation"]
NA = None


def row(df: pd.DataFrame, i: int = 0) -> dict:
    """Row ``i`` as plain Python values (NA -> None, NaN timestamp -> None)."""
    out = {}
    for col in df.columns:
        v = df[col].iloc[i]
        if v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v is None:
            out[col] = None
        elif isinstance(v, np.generic):
            out[col] = v.item()
        else:
            out[col] = v
    return out


def one(line: str, **kw) -> dict:
    df = read_trace([line], **kw)
    assert len(df) == 1, (line, df.attrs)
    return row(df)


# --------------------------------------------------------------------------- formats

MAP_V517 = ("iova=0x00000000fffed000 - 0x00000000fffef000 paddr=0x000000036aed0000 size=8192")
CASES = [
    # ftrace `trace`, v5.17+ range form, 5-char irq flags
    ("          iperf3-2211    [000] d..1.   845.217065: map: IOMMU: " + MAP_V517,
     dict(event="map", timestamp=845.217065, iova=0xFFFED000, paddr=0x36AED0000, size=8192,
          unmapped_size=NA, flags=NA, cpu=0, task="iperf3", pid=2211, device="",
          generation="v5.17")),
    # ftrace `trace`, v4.14 4-char flags, unmap
    (" qemu-system-x86-2817  [001] ....  5187.443050: unmap: IOMMU: iova=0x0000000007000000 "
     "size=2097152 unmapped_size=2097152",
     dict(event="unmap", timestamp=5187.443050, iova=0x7000000, paddr=NA, size=2097152,
          unmapped_size=2097152, flags=NA, cpu=1, task="qemu-system-x86", pid=2817,
          generation="v4.0")),
    # older ftrace without the irq-flags column; unmapped_size larger than asked (Intel)
    ("            bash-1234  [003]  1234.567890: unmap: IOMMU: iova=0x0000000000201000 "
     "size=4096 unmapped_size=2097152",
     dict(event="unmap", timestamp=1234.56789, iova=0x201000, size=4096,
          unmapped_size=2097152, cpu=3, task="bash", pid=1234, generation="v4.0")),
    # trace_pipe with a record-tgid column
    ("     kworker/0:1-12      (     12) [002] dN.2.    77.000001: map: IOMMU: "
     "iova=0x0000000000400000 - 0x0000000000600000 paddr=0x0000000080000000 size=2097152",
     dict(event="map", timestamp=77.000001, iova=0x400000, paddr=0x80000000, size=2097152,
          cpu=2, task="kworker/0:1", pid=12, generation="v5.17")),
    # trace-cmd report: padded event name, no flags
    ("  kworker/0:1-12  [000]  1234.567890: map:                  IOMMU: "
     "iova=0x0000000000001000 paddr=0x0000000000002000 size=4096",
     dict(event="map", timestamp=1234.56789, iova=0x1000, paddr=0x2000, size=4096, cpu=0,
          task="kworker/0:1", pid=12, generation="v4.0")),
    # trace-cmd report showing the system:event name
    ("  fio-5012  [003]  9182.336062: iommu:unmap:          IOMMU: iova=0x00000000fffe0000 - "
     "0x0000000100000000 size=131072 unmapped_size=131072",
     dict(event="unmap", iova=0xFFFE0000, size=131072, unmapped_size=131072, cpu=3,
          task="fio", pid=5012, generation="v5.17")),
    # comm with a space and dashes
    ("Web Content-gpu-4321 [002] .... 10.5: unmap: IOMMU: iova=0x0000000000003000 size=4096 "
     "unmapped_size=4096",
     dict(event="unmap", timestamp=10.5, task="Web Content-gpu", pid=4321, cpu=2)),
    # integer timestamp (a counter clock)
    ("  a-1 [000] 123456789: map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 "
     "size=4096",
     dict(event="map", timestamp=123456789.0, task="a", pid=1)),
    # context-info off: event name only
    ("map: IOMMU: iova=0x0000000010000000 paddr=0x00000008a3c40000 size=4096",
     dict(event="map", timestamp=NA, iova=0x10000000, paddr=0x8A3C40000, size=4096, cpu=-1,
          pid=-1, task="", generation="v4.0")),
    # bare payloads: the event is told by the fields
    ("IOMMU: iova=0x0000000010000000 - 0x0000000010001000 paddr=0x0000000000005000 size=4096",
     dict(event="map", timestamp=NA, iova=0x10000000, paddr=0x5000, size=4096, cpu=-1,
          generation="v5.17")),
    ("IOMMU: iova=0x0000000010000000 size=4096 unmapped_size=0",
     dict(event="unmap", size=4096, unmapped_size=0, generation="v4.0")),
    # v3.16: hex sizes, no unmapped_size (= size), map size 0x0 (post-loop, §6.2)
    (" qemu-system-x86-1422  [000] ....   312.550129: map: IOMMU: iova=0x0000000000001000 "
     "paddr=0x0000000010d98000 size=0x0",
     dict(event="map", iova=0x1000, paddr=0x10D98000, size=0, unmapped_size=NA,
          generation="v3.16")),
    ("unmap: IOMMU: iova=0x0000000000003000 size=0x2000",
     dict(event="unmap", iova=0x3000, paddr=NA, size=0x2000, unmapped_size=0x2000,
          generation="v3.16")),
    ("iommu:map: IOMMU: iova=0x0000000000003000 paddr=0x0000000000008000 size=0x1000",
     dict(event="map", size=0x1000, generation="v3.16")),
    # io_page_fault: driver, device, flags
    ("   irq/25-AMD-Vi-152     [001] .....   845.217469: io_page_fault: IOMMU:ixgbe "
     "0000:03:00.0 iova=0x00000000ffff3000 flags=0x0001",
     dict(event="io_page_fault", iova=0xFFFF3000, paddr=NA, size=NA, unmapped_size=NA,
          flags=1, device="0000:03:00.0", driver="ixgbe", generation=NA, cpu=1,
          task="irq/25-AMD-Vi", pid=152)),
    ("io_page_fault: IOMMU: 0000:00:1f.0 iova=0xfffffffffffff000 flags=0x12345",
     dict(event="io_page_fault", iova=0xFFFFFFFFFFFFF000, flags=0x12345, device="0000:00:1f.0",
          driver="", timestamp=NA)),
    ("IOMMU:arm-smmu-v3 ffff0000.gpu iova=0x0000000000100000 flags=0x0000",
     dict(event="io_page_fault", flags=0, device="ffff0000.gpu", driver="arm-smmu-v3")),
    # extremes of the 64-bit fields
    ("map: IOMMU: iova=0xffffffffffffe000 - 0xfffffffffffff000 paddr=0xffffffffffffffff "
     "size=4096",
     dict(iova=0xFFFFFFFFFFFFE000, paddr=0xFFFFFFFFFFFFFFFF, size=4096)),
    ("unmap: IOMMU: iova=0x0000000000000000 size=18446744073709551615 "
     "unmapped_size=18446744073709551615",
     dict(size=(1 << 64) - 1, unmapped_size=(1 << 64) - 1)),
    # trailing whitespace and CRLF are fine
    ("map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=4096 \r\n",
     dict(size=4096)),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_parses_exact_values(line, expected):
    got = one(line)
    for key, value in expected.items():
        if key == "timestamp" and value is not None:
            assert got[key] == pytest.approx(value, abs=1e-9), key
        else:
            assert got[key] == value, (key, got)
    assert got["line"] == 1


def test_columns_order_and_dtypes():
    df = read_trace([c[0] for c in CASES])
    assert list(df.columns)[:12] == REQUIRED
    assert tuple(df.columns) == COLUMNS
    assert df["iova"].dtype == np.uint64
    assert df["timestamp"].dtype == np.float64
    for col in ("paddr", "size", "unmapped_size"):
        assert str(df[col].dtype) == "UInt64"
    assert str(df["flags"].dtype) == "UInt32"
    assert df["line"].tolist() == list(range(1, len(CASES) + 1))
    assert df["cpu"].dtype == np.int64
    assert set(df["event"]) == {"map", "unmap", "io_page_fault"}
    assert df.attrs["generations"] == ["v3.16", "v4.0", "v5.17"]
    assert df.attrs["skipped_other"] == 0 and df.attrs["skips"] == []


def test_empty_input_gives_empty_frame_with_columns():
    df = read_trace([])
    assert len(df) == 0 and tuple(df.columns) == COLUMNS
    assert df["iova"].dtype == np.uint64
    assert df.attrs == {"skipped_other": 0, "skips": [], "generations": [], "lost_events": 0}


def test_other_lines_are_counted_and_skipped():
    lines = [
        "# tracer: nop",
        "#           TASK-PID   CPU#  ||||    TIMESTAMP  FUNCTION",
        "version = 6",
        "cpus=4",
        "CPU 2 is empty",
        "",
        "   ",
        " qemu-system-x86-2817  [002] ....  5121.201004: attach_device_to_domain: IOMMU: "
        "device=0000:01:00.0",
        "   systemd-udevd-301   [000] ....     2.1: add_device_to_group: IOMMU: groupID=7 "
        "device=0000:03:00.0",
        "IOMMU: device=0000:01:00.0",
        "  iperf3-2211 [000] d..2. 845.3: sched_switch: prev_comm=mmap_test prev_pid=2211 "
        "prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120",
        "CPU:1 [LOST 1234 EVENTS]",
        "##### CPU 3 buffer started ####",
        "map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=4096",
    ]
    df = read_trace(lines)
    assert len(df) == 1 and df["line"].tolist() == [len(lines)]
    assert df.attrs["skipped_other"] == len(lines) - 1
    assert df.attrs["lost_events"] == 1234


def test_mixed_generations_in_one_file():
    df = read_trace([
        "unmap: IOMMU: iova=0x0000000000003000 size=0x2000",
        "unmap: IOMMU: iova=0x0000000000003000 - 0x0000000000005000 size=8192 "
        "unmapped_size=8192",
        "unmap: IOMMU: iova=0x0000000000003000 size=8192 unmapped_size=8192",
    ])
    assert df["generation"].tolist() == ["v3.16", "v5.17", "v4.0"]
    assert df.attrs["generations"] == ["v3.16", "v4.0", "v5.17"]


# --------------------------------------------------------------------------- malformed

GOOD = "map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=4096"
BAD = [
    ("unmap: IOMMU: iova=0x0000000000001000 unmapped_size=4096", "unmap event has no size= field"),
    ("map: IOMMU: iova=0x0000000000001000 size=4096", "map event has no paddr= field"),
    ("map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=0", "map event has size 0"),
    ("unmap: IOMMU: iova=0x0000000000001000 size=0 unmapped_size=0", "unmap event has size 0"),
    ("map: IOMMU: iova=0x0000000000001000 - 0x0000000000003000 paddr=0x0000000000002000 "
     "size=4096", "range end 0x0000000000003000 != iova + size (0x0000000000002000)"),
    ("map: IOMMU: iova=0xfffffffffffff000 - 0x0000000000000000 paddr=0x0000000000002000 "
     "size=4096", "overflows 64 bits"),
    ("map: IOMMU: iova=0x10000000000000000 paddr=0x0000000000002000 size=4096",
     "iova value 0x10000000000000000 overflows 64 bits"),
    ("map: IOMMU: iova=0x000000000001000 paddr=0x0000000000002000 size=4096",
     "has 15 hex digits; the kernel prints 16"),
    ("map: IOMMU: iova=0x0000000000001000 paddr=0x00000000000g2000 size=4096",
     "is not a hex number"),
    ("map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=18446744073709551616",
     "overflows 64 bits"),
    ("unmap: IOMMU: iova=0x0000000000001000 size=0x10000000000000000", "overflows 64 bits"),
    ("unmap: IOMMU: iova=0x0000000000001000 size=4096",
     "unmap event has no unmapped_size= field"),
    ("unmap: IOMMU: iova=0x0000000000001000 size=0x1000 unmapped_size=4096",
     "unmapped_size= with a v3.16 hex size"),
    ("map: IOMMU: iova=0x0000000000001000 - 0x0000000000002000 paddr=0x0000000000002000 "
     "size=0x1000", "mixes the v5.17 range form with a v3.16 hex size"),
    ("map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=04096",
     "leading zero"),
    ("map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=4096 prot=3",
     "unexpected field prot="),
    ("map: IOMMU: iova=0x0000000000001000 iova=0x0000000000001000 paddr=0x0000000000002000 "
     "size=4096", "iova= twice"),
    ("map: IOMMU: iova=0x00000000000\ufffd1000 paddr=0x0000000000002000 size=4096",
     "not valid UTF-8"),
    ("io_page_fault: IOMMU:ixgbe 0000:03:00.0 iova=0x0000000000001000",
     "io_page_fault event has no flags= field"),
    ("io_page_fault: IOMMU:ixgbe 0000:03:\ufffd iova=0x0000000000001000 flags=0x0000",
     "not valid UTF-8"),
    ("map: size=4096", "map event has no 'IOMMU:' payload"),
    ("  bash-1 [000] 1.0: unmap:", "unmap event has no 'IOMMU:' payload"),
    ("  bash-1 [0x0] 1.0: map: " + GOOD[5:], "cannot parse the text before 'IOMMU:'"),
    ("map: IOMMU: iova=0x0000000000001000  paddr=0x0000000000002000 size=4096 junk",
     "does not match the kernel format"),
    ("  a-99999999999 [000] 1.0: " + GOOD, "cannot parse the text before 'IOMMU:'"),
    ("io_page_fault: IOMMU:x y iova=0x0000000000001000 flags=0x123456789",
     "wider than the kernel's 32-bit int"),
]


@pytest.mark.parametrize(("line", "reason"), BAD)
def test_malformed_line_strict_error_names_line_and_reason(line, reason):
    lines = [GOOD] * 16 + [line] + [GOOD]
    with pytest.raises(TraceFormatError) as info:
        read_trace(lines)
    err = info.value
    assert isinstance(err, IommuError) and err.errno == EINVAL
    assert err.line == 17
    assert str(err).startswith("[EINVAL] line 17: ")
    assert reason in str(err), str(err)
    assert reason in err.reason


@pytest.mark.parametrize(("line", "reason"), BAD)
def test_malformed_line_lenient_skip(line, reason):
    df = read_trace([GOOD, line, GOOD], strict=False)
    assert len(df) == 2 and df["line"].tolist() == [1, 3]
    assert len(df.attrs["skips"]) == 1
    assert df.attrs["skips"][0][0] == 2 and reason in df.attrs["skips"][0][1]


def test_brief_example_message():
    lines = [GOOD] * 16 + ["unmap: IOMMU: iova=0x0000000000001000 unmapped_size=4096"]
    with pytest.raises(TraceFormatError, match=r"line 17: unmap event has no size= field"):
        read_trace(lines)


def test_lenient_mode_reports_every_skip():
    lines = [GOOD, BAD[0][0], "# c", BAD[1][0], GOOD, BAD[4][0], "sched_switch: x=1"]
    df = read_trace(lines, strict=False)
    assert len(df) == 2
    assert [n for n, _ in df.attrs["skips"]] == [2, 4, 6]
    assert df.attrs["skipped_other"] == 2
    assert len(df) + len(df.attrs["skips"]) + df.attrs["skipped_other"] == len(lines)


def test_non_utf8_file(tmp_path):
    p = tmp_path / "t.txt"
    good = GOOD.encode()
    p.write_bytes(b"  b\xffsh-1 [000] 1.0: " + good + b"\n"
                  + b"map: IOMMU: iova=0x00000000000\xff1000 paddr=0x0000000000002000 size=4096\n")
    with pytest.raises(TraceFormatError, match="line 2: map payload contains bytes that are not"):
        read_trace(p)
    df = read_trace(p, strict=False)
    assert len(df) == 1 and df["task"].iloc[0] == "b\ufffdsh"
    assert df.attrs["skips"][0][0] == 2


def test_error_pickles():
    err = TraceFormatError("line 3: bad", 3, "bad")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.errno, copy.line, copy.reason, str(copy)) == (EINVAL, 3, "bad", str(err))


# --------------------------------------------------------------------------- inputs


def test_input_kinds(tmp_path):
    text = "\n".join([GOOD, "# x", GOOD.replace("0x0000000000001000", "0x0000000000005000")])
    p = tmp_path / "trace.txt"
    p.write_text(text + "\n")
    gz = tmp_path / "trace.txt.gz"
    with gzip.open(gz, "wt") as f:
        f.write(text)
    expect = [0x1000, 0x5000]
    for src in (str(p), p, gz, text, text.splitlines(), [s.encode() for s in text.splitlines()],
                iter(text.splitlines())):
        df = read_trace(src)
        assert df["iova"].tolist() == expect, src
        assert df["line"].tolist() == [1, 3]
    with open(p) as f:
        assert read_trace(f)["iova"].tolist() == expect
    with pytest.raises(IommuError):
        read_trace(b"bytes")
    with pytest.raises(IommuError):
        read_trace([GOOD, 5])


def test_progress_bar(tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_text("".join(make_synthetic_trace(5000, seed=3)))
    df = read_trace(p, progress=True)
    err = capsys.readouterr().err
    assert "t.txt" in err and "100%" in err
    assert len(df) > 4000
    read_trace(p.read_text().splitlines(), progress=True)
    assert "lines" in capsys.readouterr().err


def test_progress_bar_on_error_and_streaming(tmp_path, capsys):
    p = tmp_path / "bad.txt"
    p.write_text(GOOD + "\n" + BAD[0][0] + "\n")
    with pytest.raises(TraceFormatError, match="line 2"):
        read_trace(p, progress=True)
    assert "bad.txt" in capsys.readouterr().err
    p.write_text(GOOD + "\n")
    assert list(iter_trace_ops(p, progress=True)) == [Op("map", 0x1000, 4096, 0x2000)]
    assert "100%" in capsys.readouterr().err


# --------------------------------------------------------------------------- ops

TIMED = [
    "  a-1 [000] 100.000000: map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000009000 "
    "size=4096",
    "  a-1 [000] 100.000250: map: IOMMU: iova=0x0000000000002000 paddr=0x000000000000a000 "
    "size=4096",
    "  a-1 [001] 100.001000: unmap: IOMMU: iova=0x0000000000001000 size=8192 "
    "unmapped_size=4096",
    "  irq-2 [001] 100.001500: io_page_fault: IOMMU:drv 0000:00:01.0 iova=0x0000000000001000 "
    "flags=0x0001",
]


def test_trace_to_ops_timed():
    ops = trace_to_ops(read_trace(TIMED))
    assert ops == [
        Op("map", 0x1000, 4096, 0x9000, at_ns=0),
        Op("map", 0x2000, 4096, 0xA000, at_ns=250_000),
        Op("unmap", 0x1000, 8192, at_ns=1_000_000),
        Op("access", 0x1000, write=False, at_ns=1_500_000),
    ]
    ops = trace_to_ops(read_trace(TIMED), fault_write_mask=0x1)
    assert ops[-1] == Op("access", 0x1000, write=True, at_ns=1_500_000)


def test_trace_to_ops_merges_untimed_runs_only():
    lines = [f"map: IOMMU: iova=0x{0x10000 + i * 0x1000:016x} paddr=0x{0x80000 + i * 0x2000:016x}"
             f" size=4096" for i in range(5)]
    lines += ["map: IOMMU: iova=0x0000000000100000 paddr=0x0000000000200000 size=4096"]
    lines += [f"unmap: IOMMU: iova=0x{0x10000 + i * 0x1000:016x} size=4096 unmapped_size=4096"
              for i in range(5)]
    ops = trace_to_ops(read_trace(lines))
    assert ops == [
        Op("map", 0x10000, 4096, 0x80000, count=5, stride=0x1000, paddr_stride=0x2000),
        Op("map", 0x100000, 4096, 0x200000),
        Op("unmap", 0x10000, 4096, count=5, stride=0x1000),
    ]
    flat = trace_to_ops(read_trace(lines), merge_runs=False)
    assert len(flat) == 11
    assert [o for op in ops for o in op.expand()] == flat
    # timed ops never merge
    timed = trace_to_ops(read_trace([f"  a-1 [000] 1.{i:06d}: " + s for i, s in enumerate(lines)]))
    assert len(timed) == 11


def test_trace_to_ops_downward_runs_do_not_merge():
    lines = [f"unmap: IOMMU: iova=0x{0xfffff000 - i * 0x1000:016x} size=4096 unmapped_size=4096"
             for i in range(4)]
    assert len(trace_to_ops(read_trace(lines))) == 4


def test_trace_to_ops_v316_map_is_not_replayable():
    df = read_trace(DATA / "legacy-v3.16.txt")
    with pytest.raises(TraceFormatError, match=r"line \d+: v3.16 map event has size 0"):
        trace_to_ops(df)
    ops = trace_to_ops(df, strict=False, merge_runs=False)
    assert [op.kind for op in ops] == ["unmap"] * 15


def test_trace_to_ops_accepts_plain_frames_and_rejects_bad_ones():
    df = pd.DataFrame({"event": ["map", "unmap"], "iova": [0x1000, 0x1000],
                       "size": [4096, 4096], "paddr": [0x5000, 0], "flags": [0, 0]})
    assert trace_to_ops(df) == [Op("map", 0x1000, 4096, 0x5000), Op("unmap", 0x1000, 4096)]
    with pytest.raises(IommuError, match="lacks column"):
        trace_to_ops(df.drop(columns=["size"]))
    with pytest.raises(IommuError, match="unknown trace event 'remap'"):
        trace_to_ops(df.assign(event=["remap", "map"]))


def test_iter_trace_ops_matches_trace_to_ops():
    for name in ("nic-v5.17.txt", "no-prefix-v5.4.txt", "vfio-teardown-v4.14.txt",
                 "trace-cmd-v6.8.txt"):
        assert list(iter_trace_ops(DATA / name)) == trace_to_ops(read_trace(DATA / name)), name
    skips: list = []
    ops = list(iter_trace_ops(DATA / "legacy-v3.16.txt", strict=False, skips=skips))
    assert len(ops) == 15 and len(skips) == 15
    with pytest.raises(TraceFormatError):
        list(iter_trace_ops(DATA / "legacy-v3.16.txt"))


# --------------------------------------------------------------------------- bundled data

EXPECTED_FILES = {
    "vfio-teardown-v4.14.txt": ["v4.0"],
    "nic-v5.17.txt": ["v5.17"],
    "trace-cmd-v6.8.txt": ["v5.17"],
    "legacy-v3.16.txt": ["v3.16"],
    "no-prefix-v5.4.txt": ["v4.0"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_bundled_traces_parse_strictly(name):
    path = DATA / name
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# synthetic example made by iommu-lab; imitates the ")
    assert "not captured from a real machine" in first
    assert text.count("\n") < 200
    df = read_trace(path)
    assert df.attrs["skips"] == [] and df.attrs["generations"] == EXPECTED_FILES[name]
    assert len(df) >= 30
    assert set(df["event"]) >= {"map", "unmap"}


def test_bundled_traces_are_consistent():
    """Every unmap (except v3.16's shifted values) removes a range mapped earlier."""
    for name in set(EXPECTED_FILES) - {"legacy-v3.16.txt"}:
        live: dict[int, int] = {}
        for op in trace_to_ops(read_trace(DATA / name), merge_runs=False):
            if op.kind == "map":
                assert op.iova not in live
                live[op.iova] = op.size
            elif op.kind == "unmap":
                covered = 0
                while covered < op.size:
                    covered += live.pop(op.iova + covered)
                assert covered == op.size, name
    nic = read_trace(DATA / "nic-v5.17.txt")
    assert (nic["event"] == "io_page_fault").sum() == 1
    vfio = read_trace(DATA / "vfio-teardown-v4.14.txt")
    assert 36 <= (vfio["event"] == "map").sum() <= 44
    assert vfio.attrs["skipped_other"] >= 4


# --------------------------------------------------------------------------- synthetic


def test_synthetic_trace_is_deterministic():
    a = list(make_synthetic_trace(500, seed=7))
    assert a == list(make_synthetic_trace(500, seed=7))
    assert a != list(make_synthetic_trace(500, seed=8))
    assert len(a) == 500 and all(s.endswith("\n") for s in a)
    assert a[0].startswith("# synthetic trace made by iommu-lab")
    with pytest.raises(ValueError):
        list(make_synthetic_trace(5, generation="v9"))
    with pytest.raises(ValueError):
        list(make_synthetic_trace(5, style="json"))
    assert list(make_synthetic_trace(0)) == []


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("style", PREFIX_STYLES)
def test_synthetic_styles_parse(generation, style):
    lines = list(make_synthetic_trace(400, generation, seed=5, style=style, fault_rate=0.02))
    df = read_trace(lines)
    assert df.attrs["skips"] == [] and df.attrs["generations"] == [generation]
    assert len(df) + df.attrs["skipped_other"] == 400
    assert (df["event"] == "io_page_fault").any()
    assert df["timestamp"].isna().all() == (style in ("none", "bare"))


def test_synthetic_20k_import_from_file(tmp_path):
    p = tmp_path / "big.txt"
    with open(p, "w") as f:
        f.writelines(make_synthetic_trace(20_000, "v5.17", seed=11))
    df = read_trace(p)
    assert len(df) + df.attrs["skipped_other"] == 20_000
    assert df.attrs["skipped_other"] > 1000  # ~10 % noise + header
    ops = trace_to_ops(df)
    assert len(ops) == len(df)
    assert all(a.at_ns <= b.at_ns for a, b in zip(ops, ops[1:], strict=False))
    live = set()
    for op in ops:
        if op.kind == "map":
            live.add(op.iova)
        elif op.kind == "unmap":
            live.remove(op.iova)


def test_bench_import_small():
    seconds, peak = bench_import(2000)
    assert seconds > 0 and peak > 0


def test_format_helpers_reject_unknown_names():
    with pytest.raises(ValueError):
        format_payload("map", 0, generation="v2.6")
    with pytest.raises(ValueError):
        format_payload("remap", 0, size=1)
    with pytest.raises(ValueError):
        format_line("map", "IOMMU:", style="xml")


# --------------------------------------------------------------------------- fuzzing

u64 = st.integers(0, (1 << 64) - 1)
text_lines = st.lists(st.one_of(
    st.text(max_size=120),
    st.text(alphabet="IOMU:mapun_io=0x123456789abcdef -[]().#\t", max_size=120),
    st.sampled_from([c[0] for c in CASES] + [b[0] for b in BAD]),
    st.tuples(st.text(alphabet="ab -0123456789[]().:d\t", max_size=40),
              st.sampled_from([c[0][c[0].index("IOMMU:"):] for c in CASES]),
              st.sampled_from(["map: ", "unmap: ", "io_page_fault: ", "", "iommu:map: "]))
    .map(lambda t: t[0] + t[2] + t[1]),
), max_size=12)


@settings(max_examples=200, deadline=None)
@given(text_lines)
def test_fuzz_text_strict_raises_only_trace_format_error(lines):
    try:
        df = read_trace(lines)
    except TraceFormatError as exc:
        assert exc.errno == EINVAL and 1 <= exc.line <= len(lines)
        return
    assert len(df) + df.attrs["skipped_other"] == len(lines)


@settings(max_examples=200, deadline=None)
@given(st.one_of(text_lines, st.lists(st.binary(max_size=120), max_size=12)))
def test_fuzz_lenient_never_raises_and_counts_every_line(lines):
    df = read_trace(lines, strict=False)
    assert len(df) + df.attrs["skipped_other"] + len(df.attrs["skips"]) == len(lines)
    assert df["line"].is_monotonic_increasing


@st.composite
def events(draw):
    """A random valid event and the kwargs to format it."""
    event = draw(st.sampled_from(["map", "unmap", "io_page_fault"]))
    gen = draw(st.sampled_from(GENERATIONS))
    style = draw(st.sampled_from(PREFIX_STYLES))
    iova = draw(st.integers(0, (1 << 64) - 2))
    top = {"v3.16": (1 << 32) - 1, "v4.0": (1 << 64) - 1, "v5.17": (1 << 64) - 1 - iova}[gen]
    size = draw(st.integers(1, top))
    ev = dict(event=event, iova=iova, paddr=draw(u64), size=size,
              unmapped_size=draw(u64), flags=draw(st.integers(0, (1 << 32) - 1)),
              device=draw(st.from_regex(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]",
                                        fullmatch=True)),
              driver=draw(st.sampled_from(["", "ixgbe", "nvme", "arm-smmu"])), generation=gen)
    ctx = dict(style=style, task=draw(st.sampled_from(["iperf3", "kworker/0:1", "<idle>",
                                                        "a b-c"])),
               pid=draw(st.integers(0, 4_000_000)), cpu=draw(st.integers(0, 511)),
               timestamp=draw(st.integers(0, 10**11)) / 1e6)
    return ev, ctx


def render(ev: dict, ctx: dict) -> str:
    kw = {k: v for k, v in ev.items() if k != "event"}
    return format_line(ev["event"], format_payload(ev["event"], **kw), **ctx)


@settings(max_examples=200, deadline=None)
@given(events())
def test_formatted_events_parse_back_exactly(case):
    ev, ctx = case
    got = one(render(ev, ctx))
    assert got["event"] == ev["event"] and got["iova"] == ev["iova"]
    if ev["event"] == "io_page_fault":
        assert (got["flags"], got["device"], got["driver"]) == (ev["flags"], ev["device"],
                                                               ev["driver"])
        assert got["generation"] is None
    else:
        assert got["generation"] == ev["generation"] and got["size"] == ev["size"]
        if ev["event"] == "map":
            assert got["paddr"] == ev["paddr"]
        elif ev["generation"] == "v3.16":
            assert got["unmapped_size"] == ev["size"]
        else:
            assert got["unmapped_size"] == ev["unmapped_size"]
    if ctx["style"] in ("none", "bare"):
        assert got["timestamp"] is None and got["cpu"] == -1
    else:
        assert got["timestamp"] == pytest.approx(ctx["timestamp"], abs=1e-6)
        assert (got["cpu"], got["pid"], got["task"]) == (ctx["cpu"], ctx["pid"], ctx["task"])


def naive_fields(line: str) -> dict[str, int]:
    """The numbers as a person reads them off the text (the test's independent oracle)."""
    payload = line[line.index("IOMMU:"):]
    out = {}
    for key, value in re.findall(r"(?<![A-Za-z_])(iova|paddr|size|unmapped_size|flags)=(\S+)",
                                 payload):
        out[key] = int(value, 16) if value.startswith("0x") else int(value)
    rng = re.search(r"iova=\S+[ \t]+-[ \t]+0x(\S+)", payload)   # blanks: spaces or tabs
    if rng:
        out["end"] = int(rng.group(1), 16)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.data())
def test_mutated_lines_never_parse_to_silently_wrong_values(case, data):
    ev, ctx = case
    line = render(ev, ctx)
    pos = data.draw(st.integers(0, len(line)))
    op = data.draw(st.sampled_from(["delete", "insert", "replace"]))
    char = data.draw(st.sampled_from(list("0123456789abcdefxX -=:.[]()\t\ufffd") + ["map"]))
    if op == "delete":
        mutated = line[:pos] + line[pos + 1:]
    elif op == "insert":
        mutated = line[:pos] + char + line[pos:]
    else:
        mutated = line[:pos] + char + line[pos + 1:]
    df = read_trace([mutated], strict=False)
    if len(df) == 0:
        return  # reported as malformed or as another event: fine
    got = row(df)
    # (1) the values are the ones written in the mutated text
    naive = naive_fields(mutated)
    assert got["iova"] == naive["iova"]
    if got["event"] == "io_page_fault":
        assert got["flags"] == naive["flags"]
    else:
        assert got["size"] == naive["size"]
        if got["event"] == "map":
            assert got["paddr"] == naive["paddr"]
        if got["generation"] == "v5.17":
            assert naive["end"] == got["iova"] + got["size"]
        if got["event"] == "unmap" and got["generation"] != "v3.16":
            assert got["unmapped_size"] == naive["unmapped_size"]
    # (2) formatting the parsed event again reproduces the same values
    again = {k: got[k] for k in ("event", "iova", "generation", "device", "driver")}
    if got["event"] != "io_page_fault":
        again.update(size=got["size"], paddr=got["paddr"] or 0,
                     unmapped_size=got["unmapped_size"])
    else:
        again.update(flags=got["flags"], generation="v5.17")
    ctx2 = dict(ctx)
    if got["timestamp"] is None:
        ctx2["style"] = "none" if ctx["style"] != "bare" else "bare"
    else:
        ctx2.update(style="ftrace", task=got["task"], pid=got["pid"], cpu=got["cpu"],
                    timestamp=got["timestamp"])
        assume("\n" not in got["task"] and "IOMMU:" not in got["task"])
    back = one(render(again, ctx2))
    for key in ("event", "iova", "paddr", "size", "unmapped_size", "flags", "device", "driver",
                "generation", "cpu", "pid", "task"):
        assert back[key] == got[key], key


# --------------------------------------------------------------------------- one rule, two paths


def both_paths(src, *, strict=True, merge_runs=True, fault_write_mask=0):
    """What the DataFrame path and the streaming path make of ``src``: ops or the error.

    Each result is ``("ops", ops, skipped_lines)`` or ``("error", line, reason, message)``.
    """
    kw = dict(merge_runs=merge_runs, fault_write_mask=fault_write_mask)
    out = []
    for path in ("frame", "stream"):
        try:
            if path == "frame":
                df = read_trace(src, strict=strict)
                ops = trace_to_ops(df, strict=strict, **kw)
                size0 = df["line"][(df["size"] == 0).fillna(False)].tolist()
                skipped = sorted([n for n, _ in df.attrs["skips"]] + size0)
            else:
                skips: list = []
                ops = list(iter_trace_ops(src, strict, skips=skips, **kw))
                skipped = [n for n, _ in skips]
            out.append(("ops", ops, skipped))
        except TraceFormatError as exc:
            out.append(("error", exc.line, exc.reason, str(exc)))
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.txt")))
@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("merge_runs", [True, False])
def test_bundled_traces_same_ops_by_both_paths(name, strict, merge_runs):
    frame, stream = both_paths(DATA / name, strict=strict, merge_runs=merge_runs,
                               fault_write_mask=1)
    assert frame == stream
    if strict and name == "legacy-v3.16.txt":
        assert frame[0] == "error"  # v3.16 maps trace size 0 (§6.2)
    else:
        assert frame[0] == "ops" and frame[1]


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("style", PREFIX_STYLES)
def test_synthetic_traces_same_ops_by_both_paths(generation, style):
    lines = list(make_synthetic_trace(600, generation, seed=3, style=style, fault_rate=0.02))
    for strict in (True, False):
        frame, stream = both_paths(lines, strict=strict)
        assert frame == stream
    if generation != "v3.16":  # v3.16 maps trace size 0: no ops in strict mode
        assert frame[1] and (style in ("none", "bare")) == (frame[1][0].at_ns is None)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(GENERATIONS), st.sampled_from(PREFIX_STYLES), st.integers(0, 2**32),
       st.integers(0, 300), st.floats(0, 0.5), st.floats(0, 0.2), st.booleans(),
       st.sampled_from([0, 1]), st.booleans())
def test_both_paths_agree_on_random_synthetic_traces(generation, style, seed, n, noise,
                                                     fault_rate, strict, mask, merge):
    lines = list(make_synthetic_trace(n, generation, seed, noise, style=style,
                                      fault_rate=fault_rate))
    frame, stream = both_paths(lines, strict=strict, merge_runs=merge, fault_write_mask=mask)
    assert frame == stream


# --------------------------------------------------------------------------- module hygiene

TRACE_PKG = Path(__file__).resolve().parent.parent / "iommu_lab" / "inputs" / "trace"
NAMEDTUPLE_API = {"_fields", "_field_defaults", "_make", "_replace", "_asdict"}  # public API


def _module_ast(name: str):
    import ast

    return ast.parse((TRACE_PKG / f"{name}.py").read_text(encoding="utf-8"))


def test_no_private_name_crosses_a_trace_module():
    """A name starting with ``_`` is used only in its own module (imports and attributes)."""
    import ast

    bad = []
    for path in sorted(TRACE_PKG.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                where = "." * node.level + (node.module or "")
                bad += [f"{path.name}:{node.lineno}: from {where} import {a.name}"
                        for a in node.names if a.name.startswith("_")]
                parts = (node.module or "").split(".")
                bad += [f"{path.name}:{node.lineno}: from {node.module}"
                        for p in parts if p.startswith("_") and p != "__future__"]
                modules.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if any(p.startswith("_") for p in a.name.split(".")):
                        bad.append(f"{path.name}:{node.lineno}: import {a.name}")
                    modules.add((a.asname or a.name).split(".")[0])
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.attr not in NAMEDTUPLE_API
                    and isinstance(node.value, ast.Name) and node.value.id in modules):
                bad.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert bad == []


def test_names_shared_between_trace_modules_are_documented():
    """Every name one trace module imports from a sibling is defined there with a docstring
    (a def/class docstring, or a string right after the assignment), or re-exported."""
    import ast

    def documented(module: str | None, name: str, seen: int = 0) -> bool:
        if module is None:  # from . import <module>
            return ast.get_docstring(_module_ast(name)) is not None
        body = _module_ast(module).body
        for i, node in enumerate(body):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
                return ast.get_docstring(node) is not None
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if name in names:
                nxt = body[i + 1] if i + 1 < len(body) else None
                return (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                        and isinstance(nxt.value.value, str))
            if (isinstance(node, ast.ImportFrom) and node.level == 1 and seen < 5
                    and name in (a.name for a in node.names)):
                return documented(node.module, name, seen + 1)
        return False

    missing = [f"{path.name}: {a.name} from .{node.module}"
               for path in sorted(TRACE_PKG.glob("*.py"))
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ImportFrom) and node.level == 1
               for a in node.names if not documented(node.module, a.name)]
    assert missing == []


def test_event_record_is_a_row():
    from iommu_lab.inputs.trace.record import Event

    assert Event._fields == COLUMNS
