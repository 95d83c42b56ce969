"""iommu_lab.native: a compiled hot module is used only while its ``.py`` is the text it was
built from, and the compiled engine counts exactly what the Python one does."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from importlib.machinery import ExtensionFileLoader

import pytest

from iommu_lab import native


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    """A scratch build directory (the real build is left alone)."""
    monkeypatch.setattr(native, "DIR", tmp_path)
    monkeypatch.setattr(native, "MANIFEST", tmp_path / "manifest.json")
    return tmp_path


def fake_build(name: str) -> None:
    so = native.built_file(name)
    so.parent.mkdir(parents=True, exist_ok=True)
    so.write_bytes(b"")


def source_digest(name: str) -> str:
    return native.digest(native.source_text(name))


def build_all() -> dict[str, str]:
    """A (fake) fresh build of every hot module, and its manifest."""
    built = {}
    for name in native.HOT:
        fake_build(name)
        built[name] = source_digest(name)
    return built


def test_a_build_is_used_only_while_its_source_is_unchanged(build_dir) -> None:
    name = "iommu_lab.hw.clock"                         # its declarations cimport nothing
    assert native.cimported(name) == []
    fake_build(name)
    spec = native.NativeFinder({name: source_digest(name)}).find_spec(name)
    assert spec is not None and spec.origin == str(native.built_file(name))
    assert isinstance(spec.loader, ExtensionFileLoader)

    edited = native.NativeFinder({name: "0" * 64})     # built from other text
    assert edited.find_spec(name) is None               # -> the .py is imported
    assert edited.stale == {name} and edited.loaded == set()

    native.built_file(name).unlink()                    # listed, but no file
    assert native.NativeFinder({name: source_digest(name)}).find_spec(name) is None
    # a module that is not built is never claimed (e.g. one that reads its own source)
    assert native.NativeFinder({name: source_digest(name)}).find_spec(
        "iommu_lab.drivers.examples") is None


def test_declarations_are_part_of_what_a_module_is_built_from(tmp_path, monkeypatch) -> None:
    """A module's ``.pxd`` (C types for its compiled build), and the ``.pxd`` of each
    module that one cimports, count as its source: a change to either makes the build
    stale; a module without one is built from its ``.py`` alone."""
    # the session's declarations cimport the memo's, which cimport the queue's
    assert {"iommu_lab.memo", "iommu_lab.hw.cmdq"} <= set(
        native.cimported("iommu_lab.analysis.session"))
    monkeypatch.setattr(native, "SOURCE_ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    files = {"a.py": "A = 1\n", "a.pxd": "from pkg.b cimport B\n", "b.py": "B = 2\n",
             "b.pxd": "cdef class B:\n    pass\n", "c.py": "C = 3\n"}
    for file, text in files.items():
        (tmp_path / "pkg" / file).write_text(text)
    before = {m: native.source_text(f"pkg.{m}") for m in "abc"}
    assert before["c"] == b"C = 3\n" and native.cimported("pkg.a") == ["pkg.b"]
    (tmp_path / "pkg" / "b.pxd").write_text("cdef class B:\n    cdef public object x\n")
    after = {m: native.source_text(f"pkg.{m}") for m in "abc"}
    assert [m for m in "abc" if after[m] != before[m]] == ["a", "b"]


def test_a_build_runs_only_beside_the_builds_whose_declarations_it_takes(build_dir) -> None:
    """The session's build takes the memo's C types (session.pxd cimports memo.pxd): once
    memo.py is edited (it runs as Python), the session runs as Python too, and both are
    rebuilt; a module that cimports nothing is unaffected."""
    built = build_all()
    built["iommu_lab.memo"] = "0" * 64                  # memo.py edited since its build
    assert not native.fresh("iommu_lab.analysis.session", built)
    assert native.fresh("iommu_lab.units", built)
    assert {"iommu_lab.memo", "iommu_lab.analysis.session"} <= set(native.outdated(built))


def test_outdated_lists_exactly_the_modules_to_rebuild(build_dir) -> None:
    built = build_all()
    assert native.outdated(built) == []
    # three modules whose C types no other build takes (else those are outdated too)
    taken = {m for name in native.HOT for m in native.cimported(name)}
    changed, missing, gone = [m for m in native.HOT if m not in taken][:3]
    built[changed] = "0" * 64
    del built[missing]
    native.built_file(gone).unlink()
    assert native.outdated(built) == [changed, missing, gone]


def test_a_manifest_for_another_interpreter_is_ignored(build_dir) -> None:
    modules = {"iommu_lab.memo": "ab" * 32, "iommu_lab.ui.stepper": "cd" * 32}
    native.write_manifest(modules)
    assert native.read_manifest() == {"iommu_lab.memo": "ab" * 32}   # HOT modules only
    data = json.loads(native.MANIFEST.read_text())
    data["options"] = "0" * 64          # another ABI, other directives or flags
    native.MANIFEST.write_text(json.dumps(data))
    assert native.read_manifest() == {}
    native.MANIFEST.write_text("{not json")
    assert native.read_manifest() == {}


def test_each_hot_module_runs_compiled_exactly_when_its_build_is_fresh() -> None:
    """``make test`` builds first (``make native``); under CI=true the build must succeed,
    so the exact-count tests and the bench run the compiled engine."""
    states = native.status()
    if native.pure():
        assert set(states.values()) == {"python"}
        return
    built = native.read_manifest()
    for name, state in states.items():
        # a module imported before a rebuild keeps the build it was imported from
        want = "compiled" if native.fresh(name, built) else {"compiled", "stale", "python"}
        assert state == want or state in want, name
    if os.environ.get("CI") == "true":
        assert set(states.values()) == {"compiled"}, native.summary()


def declared_classes(name: str) -> list[str]:
    """The classes module ``name``'s ``.pxd`` declares (``cdef class X``)."""
    pxd = native.declarations_of(name)
    text = pxd.read_text(encoding="utf-8") if pxd.is_file() else ""
    return [line.split()[2].rstrip(":(") for line in text.splitlines()
            if line.startswith("cdef class ")]


def test_declared_classes_are_extension_types_exactly_when_compiled() -> None:
    """A class its module's ``.pxd`` declares has C fields and no ``__dict__`` (an extension
    type: what makes a replayed op cheaper) when the module runs compiled, and is the plain
    class of its ``.py`` otherwise; the replay path's classes are among them."""
    declared = {name: declared_classes(name) for name in native.HOT}
    assert {"OpMemo", "Plan", "Session", "CallerState", "CommandQueue", "IommuHw", "LeafSlots",
            "IoPgtableArm", "IommuDomain", "Clock", "Cpus", "FlushQueue",
            "IommuIotlbGather"} <= {
        c for names in declared.values() for c in names}
    for name, classes in declared.items():
        mod = importlib.import_module(name)
        for cls_name in classes:
            cls = getattr(mod, cls_name)
            assert ("__dict__" not in vars(cls)) == native.is_compiled(mod), cls


SCRIPT = """
import ast
import json
from iommu_lab import native, replay, compare, workloads
from iommu_lab.inputs.trace.synth import make_synthetic_trace
lines = list(make_synthetic_trace(4_000, seed=7))
rows = replay(lines, ["smmuv3-v5.4", "smmuv3-v4.14", "vtd-psi", "amd-range"],
              ["unmap-each", "unmap-fast-batch", "dma-lazy"])
teardown = compare(workloads.kvm_teardown("64M", contiguity=0.5, seed=3), ["smmuv3-v5.4", "amd-range"])
print(json.dumps({"states": sorted(set(native.status().values())),
                  "replay": rows.drop(columns=["commands"], errors="ignore").to_json(),
                  "teardown": teardown.drop(columns=["commands"], errors="ignore").to_json()}))
"""


def run_engine(pure: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    if pure:
        env[native.PURE_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=600)
    return json.loads(out.stdout)


def test_compiled_and_python_engines_count_exactly_the_same() -> None:
    """Every counter, clock and note of a trace replayed (12 pairs, the memo replaying
    most ops) and of a teardown, in two fresh interpreters: one with the builds, one with
    ``IOMMU_LAB_PURE=1``."""
    pure, compiled = run_engine(True), run_engine(False)
    assert pure["states"] == ["python"]
    if native.read_manifest():
        assert compiled["states"] == ["compiled"]
    assert json.loads(compiled["replay"]) == json.loads(pure["replay"])
    assert json.loads(compiled["teardown"]) == json.loads(pure["teardown"])
    assert len(json.loads(pure["replay"])["map_calls"]) == 12


COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def test_no_compiled_module_assigns_with_walrus_inside_a_comprehension() -> None:
    """Cython 3.1 miscompiles ``[k for s, a in xs for i in ... if (k := (s, i)) in d]``
    when the comprehension's names are also locals of the function around it: it returned
    [] where Python returns the keys (hw/iotlb.py's probe of the cached page sizes did
    this, and 27 exact-count tests failed compiled). Such code stays out of the hot
    modules: a plain loop says the same."""
    for name in native.HOT:
        tree = ast.parse(native.source_of(name).read_text(encoding="utf-8"))
        for comp in (n for n in ast.walk(tree) if isinstance(n, COMPREHENSIONS)):
            walrus = [n for n in ast.walk(comp) if isinstance(n, ast.NamedExpr)]
            assert not walrus, f"{native.source_of(name)}:{comp.lineno}"


def test_build_compiles_what_changed_and_moves_it_into_place(build_dir, monkeypatch) -> None:
    """A real (small) build: one module, into a scratch directory."""
    name = "iommu_lab.units"
    monkeypatch.setattr(native, "HOT", (name,))
    assert native.build(jobs=1) == [name]
    so = native.built_file(name)
    assert so.read_bytes()[:4] == b"\x7fELF" and not list(build_dir.rglob("*.part"))
    assert native.read_manifest() == {name: source_digest(name)}
    assert native.build(jobs=1) == []                   # nothing changed: nothing built
    monkeypatch.setattr(native, "MANIFEST", build_dir / "other.json")
    native.write_manifest({name: "0" * 64})             # as if the source had changed
    assert native.outdated(native.read_manifest()) == [name]
