"""Ops CSV: exact round trip, the on-disk layout, and errors naming row and column."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.inputs.ops import NEEDS_SIZE, OP_FIELDS, OP_KINDS, Op
from iommu_lab.inputs.ops_csv import iter_ops_csv, ops_to_csv_text, read_ops_csv, write_ops_csv

u64 = st.integers(0, (1 << 64) - 1)


@st.composite
def ops(draw):
    kind = draw(st.sampled_from(OP_KINDS))
    size = draw(st.integers(1 if kind in NEEDS_SIZE else 0, (1 << 64) - 1))
    return Op(kind, iova=draw(u64), size=size, paddr=draw(u64), prot=draw(st.integers(0, 63)),
              write=draw(st.booleans()), ns=draw(st.integers(0, 1 << 62)),
              count=draw(st.integers(1, 1 << 40)), stride=draw(u64), paddr_stride=draw(u64),
              at_ns=draw(st.none() | st.integers(-(1 << 62), 1 << 62)))


@settings(max_examples=200, deadline=None)
@given(st.lists(ops(), max_size=8))
def test_round_trip_is_exact(items):
    buf = io.StringIO()
    assert write_ops_csv(items, buf) == len(items)
    buf.seek(0)
    assert read_ops_csv(buf) == items


def test_round_trip_through_a_file(tmp_path):
    items = [Op("map", 0xFFFFF000, 4096, 0x80000000, at_ns=5),
             Op("unmap", 0x1000, 0x2000, count=3, stride=0x2000),
             Op("access", 0x1000, write=True), Op("advance", ns=1000), Op("flush_all")]
    p = tmp_path / "ops.csv"
    write_ops_csv(items, p)
    assert read_ops_csv(p) == items
    assert read_ops_csv(str(p)) == items
    assert list(iter_ops_csv(p)) == items


def test_layout():
    text = ops_to_csv_text([Op("map", 0xFFFFF000, 4096, 0x80000000, at_ns=12),
                            Op("access", 0x10, write=True, cpu=0)])
    lines = text.splitlines()
    assert lines[0] == ",".join(OP_FIELDS)
    assert lines[1] == "map,0xfffff000,0x1000,0x80000000,3,0,0,1,0x0,0x0,12,0"
    assert lines[2] == "access,0x10,0x0,0x0,3,1,0,1,0x0,0x0,,0"


def test_lenient_input_forms():
    text = ("# a comment\n"
            "kind , size, iova,write\n"
            "\n"
            "map,4K,4096,\n"
            "unmap,0x2000,0x1000,0\n"
            "access,,0x1000,true\n")
    assert read_ops_csv(io.StringIO(text)) == [Op("map", 0x1000, 0x1000),
                                               Op("unmap", 0x1000, 0x2000),
                                               Op("access", 0x1000, write=True)]


def test_bom_is_ignored(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes(b"\xef\xbb\xbfkind,iova,size\nunmap,0x1000,4096\n")
    assert read_ops_csv(p) == [Op("unmap", 0x1000, 4096)]


@pytest.mark.parametrize(("text", "message"), [
    ("kind,iova,size\nmap,0x1000,4096\nmap,zz,4K\n", "row 2 (line 3), column iova: iova 'zz'"),
    ("kind,iova,size\nmap,0x1000,\n", "row 1 (line 2): op map at iova 0x1000: size 0"),
    ("kind,size\nremap,4096\n", "row 1 (line 2), column kind: unknown op kind 'remap'"),
    ("kind,size\n,4096\n", "row 1 (line 2), column kind: empty"),
    ("kind,write\naccess,2\n", "row 1 (line 2), column write: write '2' must be 0 or 1"),
    ("kind,count\nflush_all,0\n", "row 1 (line 2): op flush_all: count 0 must be at least 1"),
    ("kind,count\nflush_all,-1\n", "row 1 (line 2), column count: count '-1' is not"),
    ("kind,at_ns\nflush_all,soon\n", "row 1 (line 2), column at_ns: at_ns 'soon' is not"),
    ("kind,iova\nmap,0x1000,4096\n", "row 1 (line 2): has 3 cells, the header has 2"),
    ("kind,iova,size\nunmap,0x1000,-4096\n", "row 1 (line 2), column size"),
    ("kind,size\nunmap,0x10000000000000000\n", "outside 0 .. 2^64-1"),
    ("iova,size\n0x1000,4096\n", "line 1: header has no 'kind' column"),
    ("kind,bogus\nmap,1\n", "line 1: header column 2 'bogus' is not an Op field"),
    ("kind,kind\nmap,map\n", "header names column 'kind' twice"),
    ("", "no header row"),
])
def test_bad_csv_errors_name_row_and_column(text, message):
    with pytest.raises(IommuError) as info:
        read_ops_csv(io.StringIO(text))
    assert info.value.errno == EINVAL
    assert message in str(info.value), str(info.value)


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("kind,iova\nmap,0x1000\n")
    with pytest.raises(IommuError, match=r"bad\.csv row 1 \(line 2\)"):
        read_ops_csv(p)
    p.write_bytes(b"kind,iova\nmap,\xff\n")
    with pytest.raises(IommuError, match="not a readable CSV file"):
        read_ops_csv(p)


def test_write_rejects_non_ops():
    with pytest.raises(IommuError, match="item 2 is a dict, not an Op"):
        ops_to_csv_text([Op("flush_all"), {"kind": "map"}])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.text(max_size=12), max_size=6), max_size=6))
def test_random_cells_raise_only_iommu_error(rows):
    buf = io.StringIO()
    buf.write("kind,iova,size,write,at_ns,count\n")
    for cells in rows:
        buf.write(",".join(c.replace(",", "").replace("\n", "").replace("\r", "")
                           .replace('"', "") for c in cells) + "\n")
    buf.seek(0)
    try:
        read_ops_csv(buf)
    except IommuError as exc:
        assert exc.errno == EINVAL
