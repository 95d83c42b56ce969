"""The block fast path of the trace import (inputs/trace/fast.py, fast_ops.py) against the
per-line reference path (``fast=False``: parse_line per line, events_to_ops, _merge_runs).

Same ops (genuine ``Op`` records), same skips, same error (message, line, reason) and the same
ops yielded before an error, for every format make_synthetic_trace writes (kernel-api-history
§6.1 generations, ftrace / trace-cmd prefixes) and for hostile text.
"""

from __future__ import annotations

import dataclasses
import gzip
from operator import itemgetter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommu_lab.inputs.ops import Op
from iommu_lab.inputs.trace import TraceFormatError, iter_trace_ops, source
from iommu_lab.inputs.trace.fast import LINE_RE, chunks, decode, fast_op, fast_row, op_fields
from iommu_lab.inputs.trace.synth import (
    GENERATIONS,
    PREFIX_STYLES,
    format_line,
    format_payload,
    make_synthetic_trace,
)
from iommu_lab.inputs.trace.to_ops import iter_trace_rows


def outcome(src, fast: bool, strict: bool = True, **kw):
    """``(ops, skips, error)``: every op yielded (also those before an error), the skips, and
    the error as (type, message, line, reason) or None."""
    ops, skips, error = [], [], None
    try:
        if fast == "rows":    # the parse-ahead child's path: the ops' fields, not the ops
            for row in iter_trace_rows(src, strict, skips=skips, **kw):
                assert type(row) is tuple
                ops.append(row)
        else:
            for op in iter_trace_ops(src, strict, skips=skips, fast=fast, **kw):
                assert type(op) is Op
                ops.append(op)
    except TraceFormatError as exc:
        error = ("TraceFormatError", str(exc), exc.line, exc.reason)
    except (OverflowError, ValueError) as exc:  # e.g. a timestamp too large to count from
        error = (type(exc).__name__, str(exc), None, None)
    return ops, skips, error


def same(src, **kw) -> tuple:
    """Assert the fast path gives what the reference gives, and the rows path the fields of
    those ops (with the same skips and error); return the reference."""
    ref = outcome(src, False, **kw)
    assert outcome(src, True, **kw) == ref
    ops, skips, error = ref
    assert outcome(src, "rows", **kw) == ([op_fields(op) for op in ops], skips, error)
    return ref


OPTIONS = st.fixed_dictionaries({
    "strict": st.booleans(), "merge_runs": st.booleans(), "per_cpu": st.booleans(),
    "fault_write_mask": st.sampled_from([0, 1])})


# --------------------------------------------------------------------------- synthetic formats


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("style", PREFIX_STYLES)
def test_every_synthetic_format_same_ops_as_the_reference(generation, style, tmp_path,
                                                          monkeypatch):
    text = "".join(make_synthetic_trace(3000, generation, seed=5, style=style,
                                        fault_rate=0.01))
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    gz = tmp_path / "t.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(text)
    monkeypatch.setattr(source, "BLOCK_CHARS", 20_000)  # many blocks, cut mid-trace
    for src in (path, gz, text):
        for strict in (True, False):
            ops, skips, error = same(src, strict=strict, per_cpu=True, fault_write_mask=1)
            if generation == "v3.16" and strict:  # v3.16 maps trace size 0 (§6.2)
                assert error is not None and "v3.16 map event has size 0" in error[1]
            else:
                assert error is None and len(ops) > 100
    if generation == "v3.16":
        assert len(skips) > 100


@pytest.mark.parametrize("style", PREFIX_STYLES)
@pytest.mark.parametrize("generation", GENERATIONS)
def test_every_map_unmap_line_of_the_synthesizer_is_a_fast_row(generation, style):
    """The fast path pays off for every format: each map/unmap line is matched by the block
    regex and taken by decode(), none left to parse_line."""
    lines = list(make_synthetic_trace(2000, generation, seed=2, style=style, fault_rate=0.01))
    g = LINE_RE.groupindex
    fields = itemgetter(*(g[k] - 1 for k in ("name", "iova", "end", "paddr", "dsize", "done",
                                              "hsize")))
    fast = [fields(row) for chunk in chunks(["".join(lines)]) for row in chunk.rows
            if row[g["iova"] - 1]]
    assert len(fast) == sum(1 for line in lines if "IOMMU: iova=" in line) > 1000
    assert all(decode(*row) is not None for row in fast)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(GENERATIONS), st.sampled_from(PREFIX_STYLES), st.integers(0, 2**32),
       st.integers(1, 400), st.floats(0, 0.5), st.floats(0, 0.2), OPTIONS,
       st.sampled_from([64, 300, 4096]))
def test_random_synthetic_traces_same_as_reference(generation, style, seed, n, noise,
                                                   fault_rate, options, block):
    text = "".join(make_synthetic_trace(n, generation, seed, noise, style=style,
                                        fault_rate=fault_rate))
    if "\n" in text:  # a str without a newline names a file
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(source, "BLOCK_CHARS", block)
            same(text, **options)


# --------------------------------------------------------------------------- hostile text

COMMS = ["iperf3", "a b-c", "x-1 [0]", "[x]", "kworker/u16:3", "-", "--", "ü-ß", "a\tb",
         "#c", "IOMMU:", "map: x", "<idle>", "q-9 [000] 1.0:", ""]


@st.composite
def event_line(draw) -> str:
    """A map/unmap/fault line in any generation and prefix style, often with a hostile comm
    and sometimes with values the kernel never prints."""
    event = draw(st.sampled_from(["map", "unmap", "map", "unmap", "io_page_fault"]))
    gen = draw(st.sampled_from(GENERATIONS))
    iova = draw(st.sampled_from([0, 0xFFFFE000, (1 << 64) - 4096, (1 << 64) - 1]))
    size = draw(st.sampled_from([4096, 1, 0, 10**19 - 1, 10**19, (1 << 64) - 1, 1 << 64]))
    payload = format_payload(event, iova, paddr=draw(st.sampled_from([0, 0x1234000])),
                             size=size, flags=draw(st.sampled_from([0, 1, 0x1FFFF])),
                             unmapped_size=draw(st.sampled_from([None, 0, 8192, 10**20])),
                             device="0000:03:00.0", driver="ixgbe", generation=gen)
    ctx = dict(style=draw(st.sampled_from(PREFIX_STYLES)), task=draw(st.sampled_from(COMMS)),
               pid=draw(st.sampled_from([0, 1234, 999_999_999, 10**9])),
               cpu=draw(st.integers(0, 600)),
               timestamp=draw(st.sampled_from([0.0, 1137.000037, 5e11, 1e300])))
    return format_line(event, payload, **ctx)


def mutate(line: str, data) -> str:
    """One character deleted, inserted or replaced (often making the line malformed)."""
    pos = data.draw(st.integers(0, len(line)))
    char = data.draw(st.sampled_from(list("0123456789abcdefABCDEFxX -=:.[]()\t\r#ü") +
                                     ["map", "unmap", "IOMMU:", " - 0x", "0x"]))
    how = data.draw(st.sampled_from(["delete", "insert", "replace", "keep", "keep"]))
    if how == "delete":
        return line[:pos] + line[pos + 1:]
    if how == "insert":
        return line[:pos] + char + line[pos:]
    if how == "replace":
        return line[:pos] + char + line[pos + 1:]
    return line


OTHER_LINES = ["", "   ", "# tracer: nop", "#", "CPU:3 [LOST 17 EVENTS]", "[LOST 5 EVENTS]",
               "  <idle>-0 [001] d..1. 1.000000: sched_switch: prev_comm=x",
               "IOMMU: device=0000:03:00.0", "map: no payload", "unmap:", "\ufeffIOMMU:",
               "bash-1 [000] 1.0: iommu:map: IOMMU: iova=0x0000000000001000 paddr="
               "0x0000000000002000 size=4096",
               "x-1 [000] 1.0: unmap: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 "
               "size=4096", "IOMMU: iova=0x0000000000001000 size=4096",
               "IOMMU: iova=0x0000000000001000 - 0x0000000000002000 size=0x1000",
               "IOMMU: iova=0x0000000000001000 size=0x0", "map: IOMMU: iova=0x0000000000001000"
               " paddr=0x0000000000002000 size=0123",
               "IOMMU: iova=0x000000000000ABCD paddr=0x0000000000002000 size=4096 IOMMU: x",
               "#comm-1 [000] 1.0: map: IOMMU: iova=0x0000000000001000 paddr=0x00000000000020"
               "00 size=4096", " #c-1 [000] 1.0: IOMMU: iova=0x0000000000001000 size=1 "
               "unmapped_size=1", "a-1 [000] IOMMU:x 1.0: map: IOMMU: iova=0x0000000000001000"
               " paddr=0x0000000000002000 size=4096", "c IOMMU:-1 [000] 1.0: IOMMU: iova=0x0000"
               "000000001000 size=1 unmapped_size=1"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(event_line(), st.sampled_from(OTHER_LINES)), min_size=1,
                max_size=25), st.data(), OPTIONS,
       st.sampled_from(["\n", "\n", "\r\n", "\r"]), st.booleans(),
       st.sampled_from([64, 512, 1 << 20]))
def test_hostile_text_same_as_reference(lines, data, options, newline, final, block):
    """Hostile comms, malformed payloads, huge values, CRLF / CR line ends, blank, comment and
    [LOST n EVENTS] lines: the same ops, skips and error by both paths."""
    lines = [mutate(line, data) for line in lines]
    text = newline.join(lines) + (newline if final else "")
    if "\n" not in text:
        text += "\n"  # a str without a newline names a file
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(source, "BLOCK_CHARS", block)
        same(text, **options)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=12), OPTIONS)
def test_random_text_same_as_reference(lines, options):
    same("\n".join(lines) + "\n", **options)


def test_a_line_longer_than_a_block_and_a_missing_final_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(source, "BLOCK_CHARS", 16)
    text = "".join(make_synthetic_trace(50, "v4.0", seed=1, style="trace-cmd")).rstrip("\n")
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    ops, _, error = same(path)
    assert error is None and len(ops) > 20


def test_errors_come_after_the_same_ops():
    good = "".join(make_synthetic_trace(200, "v5.17", seed=4, style="none", noise=0))
    bad = "map: IOMMU: iova=0x0000000000001000 - 0x0000000000009999 paddr=0x0 size=4096\n"
    ops, _, error = same(good + bad + good, merge_runs=True)
    assert error[0] == "TraceFormatError" and error[2] == 201 and ops  # runs before the error
    lenient = same(good + bad + good, strict=False)
    assert lenient[2] is None and [n for n, _ in lenient[1]] == [201]


# --------------------------------------------------------------------------- the trusted Op


@given(st.sampled_from(["map", "unmap", "access"]), st.integers(0, (1 << 64) - 1),
       st.integers(1, 1 << 64), st.integers(0, (1 << 64) - 1), st.booleans(),
       st.one_of(st.none(), st.integers(0, 10**15)), st.integers(0, 64))
def test_fast_op_is_the_checked_op(kind, iova, size, paddr, write, at_ns, cpu):
    op = fast_op(kind, iova, size, paddr, write, at_ns, cpu)
    ref = Op(kind, iova, size, paddr, write=write, at_ns=at_ns, cpu=cpu)
    assert type(op) is Op and op == ref and hash(op) == hash(ref) and repr(op) == repr(ref)
    assert dataclasses.astuple(op) == dataclasses.astuple(ref)
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.iova = 1  # type: ignore[misc]
    row = fast_row(kind, iova, size, paddr, write, at_ns, cpu)
    assert type(row) is tuple and row == op_fields(ref)
    assert [type(v) for v in row] == [type(v) for v in op_fields(ref)]


def test_iterables_of_lines_keep_the_reference_path():
    assert source.blocks(["a\n"]) is None
    assert source.blocks("a\nb") is not None


def _map(iova: int, size: int = 4096, *, end: int | None = None, name: str = "map",
         size_text: str | None = None, tail: str = "") -> str:
    """A no-prefix v4.0 (or, with ``end``, v5.17) map line, its fields as given."""
    rng = f" - 0x{end:016x}" if end is not None else ""
    return (f"{name}: IOMMU: iova=0x{iova:016x}{rng} paddr=0x{iova * 2:016x} "
            f"size={size_text or size}{tail}\n")


@pytest.mark.parametrize("bad", [
    _map(0x5000, end=0x5000),  # v5.17 range end != iova + size
    _map(0x5000, end=0x7000),
    _map(0x5000, name="unmap"),  # an unmap named over a map payload
    _map(0x5000, tail=" unmapped_size=4096"),  # a map with unmapped_size=
    _map(0x5000, size_text="04096"),  # a leading zero
    _map(0x5000, size_text="0"),
    _map(0x5000, size_text="18446744073709551616"),  # 2^64
    _map(0x5000, size_text="99999999999999999999"),
    _map(0x5000, end=0x6000, size_text="0x1000"),  # v5.17 range with a v3.16 hex size
    "unmap: IOMMU: iova=0x0000000000005000 size=4096\n",  # v4.0 unmap without unmapped_size
    "unmap: IOMMU: iova=0x0000000000005000 size=0x0\n",
    "IOMMU: iova=0x0000000000005000 size=0x1000 unmapped_size=4096\n",
])
@pytest.mark.parametrize("strict", [True, False])
def test_one_subtle_line_in_a_plain_block(bad, strict):
    """Fast-looking lines the kernel never prints, in blocks that are otherwise plain."""
    good = "".join(_map(0x1000 * i) for i in range(1, 40))
    ops, skips, error = same(good + bad + good, strict=strict, merge_runs=False)
    if strict:
        assert error is not None and error[2] == 40
    else:
        assert [n for n, _ in skips] == [40] and len(ops) == 78


def test_untimed_runs_merge_across_blocks_and_timed_lines(monkeypatch):
    """Consecutive untimed ops at a constant stride fold into runs; a timed op breaks them."""
    monkeypatch.setattr(source, "BLOCK_CHARS", 500)
    timed = ("x-1 [000] 5.000000: map: IOMMU: iova=0x0000000000100000 paddr=0x000000000010"
             "0000 size=4096\n")
    text = "".join(_map(0x1000 * i) for i in range(1, 30)) + timed + "".join(
        _map(0x1000 * i) for i in range(30, 60)) + _map(0x1000 * 59)
    ops, _, error = same(text)
    assert error is None
    assert [op.count for op in ops] == [29, 1, 30, 1]



def test_bench_ops_small():
    from iommu_lab.inputs.trace.bench import bench_ops

    got = bench_ops(2000, "v3.16", "trace-cmd")
    assert set(got) == {"fast", "per_line"} and all(0 < s < 60 for s in got.values())
