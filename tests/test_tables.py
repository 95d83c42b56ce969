"""What varies is chosen once, from a table (DESIGN §2): strategies, callers, kernel eras,
API variants, domain types, op kinds, stepper actions. Adding one is one row (plus its
functions) — shown here by adding rows — and no module tests those names as strings.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

import iommu_lab as il
from iommu_lab.analysis import callers as callers_mod
from iommu_lab.analysis import session as session_mod
from iommu_lab.analysis.callers import CALLERS, Caller, end_batch, map_iommu
from iommu_lab.analysis.compare import compare
from iommu_lab.analysis.stepping import ACTIONS, StepperModel
from iommu_lab.core.domain import DOMAIN_TYPES
from iommu_lab.core.era import CORE_ERAS, CoreRules, KernelVersion, core_rules
from iommu_lab.core.gather import GATHER_V5_15
from iommu_lab.core.iommu import iommu_unmap_fast
from iommu_lab.drivers.registry import API_VARIANTS, STRATEGIES
from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.inputs.ops import OP_KINDS, Op

PKG = Path(il.__file__).resolve().parent
RW = il.IOMMU_READ | il.IOMMU_WRITE


# ---- kernel eras ----------------------------------------------------------------------------

def test_kernel_versions_are_ordered_and_parsed() -> None:
    v = KernelVersion.parse
    assert v("v4.15") < v("v4.20") < v("v5.4") < v("5.10") < v("v5.15") < v("v6.18")
    assert str(v("5.4")) == "v5.4" and v(v("v5.4")) == v("v5.4")
    for bad in ("5", "v5.x", "", "vv5.4", None, 5.4):
        with pytest.raises(IommuError) as exc:
            v(bad)  # type: ignore[arg-type]
        assert exc.value.errno == EINVAL


@pytest.mark.parametrize("version,since", [
    ("v4.14", "v4.14"), ("v4.15", "v4.14"), ("v4.20", "v4.14"), ("v5.3", "v4.14"),
    ("v5.4", "v5.4"), ("v5.9", "v5.4"), ("v5.10", "v5.10"), ("v5.14", "v5.10"),
    ("v5.15", "v5.15"), ("v6.18", "v5.15")])
def test_core_rules_are_the_last_row_at_or_before(version: str, since: str) -> None:
    assert str(core_rules(version).since) == since


@pytest.mark.parametrize("version", ["v4.13", "v3.16", "v6.19", "v7.0"])
def test_an_era_outside_the_model_is_einval(version: str) -> None:
    with pytest.raises(IommuError, match="outside the modelled range") as exc:
        core_rules(version)
    assert exc.value.errno == EINVAL


def test_every_strategy_gets_its_era_once() -> None:
    for s in STRATEGIES.values():
        dom = il.iommu_domain_alloc(s.name)
        assert dom.core is core_rules(s.kernel) and dom.core.since <= s.version


def test_adding_an_era_is_one_row() -> None:
    """A hypothetical v6.6 row (v5.15 rules, but gather through v5.15 helpers only) is
    selected for v6.6 and later, and nothing else needs to know about it."""
    row = CoreRules(KernelVersion(6, 6), True, GATHER_V5_15, range_add_per_chunk=False,
                    map_sg_sync_once=True, source="hypothetical row for this test")
    eras = (*CORE_ERAS, row)
    assert core_rules("v6.8", eras) is row and core_rules("v6.5", eras) is CORE_ERAS[-1]


# ---- API variants and domain types --------------------------------------------------------------

def test_api_variants_and_domain_types_are_tables() -> None:
    assert set(API_VARIANTS) == {"kernel", "rfc-2017"}
    assert API_VARIANTS["kernel"].merged and not API_VARIANTS["rfc-2017"].merged
    assert [t.name for t in DOMAIN_TYPES.values() if t.dma_api] == ["DMA", "DMA_FQ"]
    for bad, what in ((dict(api="rfc-2018"), "unknown api"), (dict(type="DMA-FQ"),
                                                               "unknown domain type")):
        with pytest.raises(IommuError, match=what):
            il.iommu_domain_alloc("smmuv3-v5.4", **bad)


def test_2017_api_is_its_own_ops_variant() -> None:
    """The 2017 flush-all is the driver's whole-context flush (its optional
    ``tlb_flush_all``); the merged v4.15 one is a bare CMD_SYNC (kernel-api-history §3.4)."""
    kernel = il.iommu_domain_alloc("smmuv3-v4.15")
    rfc = il.iommu_domain_alloc("smmuv3-v4.15", api="rfc-2017")
    for dom in (kernel, rfc):
        il.iommu_flush_iotlb_all(dom)
    assert (kernel.stats()["inv_all_cmds"], rfc.stats()["inv_all_cmds"]) == (0, 1)
    virtio = il.iommu_domain_alloc("virtio-iommu")
    assert virtio.ops.flush_iotlb_all is None  # v5.15: no flush_iotlb_all (v6.7+)


# ---- callers and op kinds --------------------------------------------------------------------

def unmap_fast_every_16(s: session_mod.Session, op: Op) -> None:
    """A caller that syncs every 16 regions instead of VFIO's 512."""
    iommu_unmap_fast(s.dom, op.iova, op.size, s.gather)
    s.pending_regions += 1
    if s.pending_regions >= 16:
        callers_mod.sync_batch(s)


def test_adding_a_caller_is_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    row = Caller("unmap-fast-every-16", "UNMANAGED", "kernel", "sync every 16 regions",
                 "this test", map_iommu, unmap_fast_every_16, end_batch)
    monkeypatch.setitem(CALLERS, row.name, row)
    w = [Op("map", 0, 0x1000, 1 << 32, count=100, stride=0x2000, paddr_stride=0x2000),
         Op("unmap", 0, 0x1000, count=100, stride=0x2000)]
    df = compare(w, ["smmuv3-v5.4"], ["unmap-fast-every-16", "unmap-fast-batch"])
    # disjoint pages: every page syncs early in the v5.4 gather; the batch adds the last sync
    assert df["sync_cmds"].tolist() == [100, 100]
    assert df["sync_calls"].tolist() == [7, 1]   # ceil(100 / 16) vs one VFIO batch


def test_every_op_kind_has_a_handler() -> None:
    assert set(session_mod.OP_KINDS) == set(OP_KINDS)


def test_every_stepper_action_is_a_model_method() -> None:
    m = StepperModel("smmuv3-v5.4")
    for a in ACTIONS:
        assert callable(getattr(m, a.name)), a.name
    assert len({a.stem for a in ACTIONS}) == len(ACTIONS)


def test_strategy_rows_use_keywords_and_validate_their_kernel() -> None:
    s = STRATEGIES["smmuv3-v5.4"]
    with pytest.raises(IommuError, match="outside the modelled range"):
        replace(s, kernel="v4.9")


# ---- nobody tests a table's names as strings --------------------------------------------------

NAMES = (set(STRATEGIES) | set(CALLERS) | set(API_VARIANTS) | set(DOMAIN_TYPES)
         | {str(r.since) for r in CORE_ERAS} | {"v4.15", "v4.20", "v5.15", "v6.18"})


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def string_tests(path: Path) -> list[str]:
    """Comparisons against a table's names, prefix tests on them, dynamic dispatch."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if isinstance(node.ops[0], ast.In | ast.NotIn) and not _strings(parts[1]):
                parts = parts[1:]  # "x" in df.columns: membership of a column name
            names = [s for part in parts for s in _strings(part)]
            out += [f"{node.lineno}: compares {s!r}" for s in names if s in NAMES]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            args = [s for a in node.args for s in _strings(a)]
            if node.func.attr in ("startswith", "endswith") and any(
                    n.startswith(a) or n.endswith(a) for a in args for n in NAMES):
                out.append(f"{node.lineno}: {node.func.attr}({args})")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.BinOp | ast.JoinedStr):
                out.append(f"{node.lineno}: built name {node.func.id}")  # type: ignore[attr-defined]
            elif "driver" in ast.unparse(node.args[0]):
                out.append(f"{node.lineno}: {node.func.id} on a driver")  # type: ignore[attr-defined]
    return out


def test_no_module_tests_table_names_as_strings() -> None:
    bad = {str(p.relative_to(PKG)): v for p in PKG.rglob("*.py") if (v := string_tests(p))}
    assert bad == {}


def test_the_scanner_sees_string_tests(tmp_path: Path) -> None:
    src = ('if dom.api == "rfc-2017": pass\nif name.startswith("dma"): pass\n'
           'if era in ("v5.4", "v5.10"): pass\nhasattr(domain.driver, "dma_unmap")\n'
           'getattr(self, "_op_" + kind)\nif kind == "map": pass\n')
    f = tmp_path / "probe.py"
    f.write_text(src, encoding="utf-8")
    found = string_tests(f)
    assert len(found) == 6 and not any("'map'" in s for s in found), found


def private_imports(path: Path) -> list[str]:
    """``from x import _name`` (or ``import x._y``) of another module's private name."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                "iommu_lab")):
            out += [f"{node.lineno}: {a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_private_name_is_imported_across_modules() -> None:
    bad = {str(p.relative_to(PKG)): v for p in PKG.rglob("*.py") if (v := private_imports(p))}
    assert bad == {}
