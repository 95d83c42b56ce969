"""The engine's hot modules compiled with Cython, loaded only while they match their source.

Why: a replayed op is tens of thousands of instructions spread thinly over the memo, the
page table and the command queue (issue 13); compiling those modules unchanged (plain
Python, no Cython types) runs the step-by-step engine ~1.15-1.4x faster with the same
behaviour, every counter and the clock included. Compiled code still reaches attributes
and builtins (``zip``, generators, a dataclass's generated ``__init__``) through the
generic C API, so the hot path avoids those (index loops, plain loops, bare tuples).

The few classes every replayed op passes through (the op memo and its plans, the session
and its caller's state, the domain with its clock and CPUs, the gathers, the flush queue,
the command queue, the IOMMU, the page table and a memo key's PTE slots) also have a
``.pxd`` beside their module: Cython's augmenting declarations, which make each an
extension type whose fields are C struct members (still Python objects) and whose calls to
its own methods and to the others' are C calls: 19-32 % fewer instructions per replayed
op, 12 % fewer again with the domain, clock and CPUs, and 12-21 % fewer again with the
plans, caller state, gathers and flush queue. Methods with closures stay Python methods
(cpdef has none); an extension type cannot be patched (a test subclasses it).

The ``.py`` files stay the only source Python runs. ``python -m iommu_lab native build``
(``make lab`` and ``make test`` run it) compiles the modules of :data:`HOT` into
``build/native/`` and records the SHA-256 of the exact text each was built from (its
``.py``, its ``.pxd`` and those its ``.pxd`` cimports). At import, a compiled module is
used only while that text is unchanged: an edited strategy is never shadowed by an old
build, it runs as Python until the next build. ``IOMMU_LAB_PURE=1`` uses none.
Without Cython or a C compiler nothing is built and everything runs as Python.
``python -m iommu_lab native status`` (and the bench) say which modules ran compiled.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE = __name__.rpartition(".")[0]
SOURCE_ROOT = Path(__file__).resolve().parent.parent
DIR = SOURCE_ROOT / "build" / "native"
MANIFEST = DIR / "manifest.json"
EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))
PURE_ENV = "IOMMU_LAB_PURE"

HOT: tuple[str, ...] = tuple(f"{PACKAGE}.{m}" for m in (
    # chosen by profile (cProfile of a 1M-line replay and of the bench): where the
    # step-by-step engine spends its time, bottom layer first
    "units", "prot", "errors", "stats", "trace",
    "hw.clock", "hw.commands", "hw.costs", "hw.cmdq", "hw.iotlb", "hw.iommu_hw", "hw.cpus",
    "io_pgtable.arm",
    "core.era", "core.gather", "core.domain", "core.iommu", "core.dma_iommu",
    "drivers.base", "drivers.arm_smmu_cmdq", "drivers.arm_smmu_v3", "drivers.intel_iommu",
    "drivers.amd_iommu", "drivers.virtio_iommu",
    "memo", "compact",
    "inputs.ops", "inputs.trace.record", "inputs.trace.parse", "inputs.trace.to_ops",
    "inputs.trace.fast", "inputs.trace.fast_ops", "inputs.trace.spill",
    "analysis.callers", "analysis.session",
))
"""Modules compiled. Not here: modules that read their own source (drivers.examples shows
a driver's code to students; drivers.user inspects user classes), and everything above the
engine (views, ui), where time goes to widgets and the browser."""

DIRECTIVES = {
    "language_level": 3,
    "binding": True,             # functions keep signatures, docstrings, pickling by name
    "annotation_typing": False,  # hints stay hints: a dict subclass is still a dict
}
CFLAGS = ["-g0"]                 # no debug info: a faster build, smaller files


def options() -> str:
    """What a build depends on besides its source: the ABI, the directives and flags (a
    change to any of them makes every build stale)."""
    return digest(json.dumps([EXT_SUFFIX, DIRECTIVES, CFLAGS], sort_keys=True).encode())


def source_of(name: str) -> Path:
    """The ``.py`` file of module ``name`` (``iommu_lab.hw.cmdq`` -> ``iommu_lab/hw/cmdq.py``)."""
    return SOURCE_ROOT.joinpath(*name.split(".")).with_suffix(".py")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def declarations_of(name: str) -> Path:
    """Module ``name``'s ``.pxd`` (Cython's augmenting declarations: C types for some of
    its classes in the compiled build only; the ``.py`` stays the source Python runs)."""
    return source_of(name).with_suffix(".pxd")


def cimported(name: str) -> list[str]:
    """The modules whose declarations ``name``'s ``.pxd`` takes (``from M cimport ...``),
    and theirs in turn, each once."""
    out: list[str] = []
    todo = [name]
    while todo:
        pxd = declarations_of(todo.pop())
        lines = pxd.read_text(encoding="utf-8").splitlines() if pxd.is_file() else []
        for line in lines:
            words = line.split()
            if len(words) > 2 and words[0] == "from" and words[2] == "cimport":
                if words[1] not in out and words[1] != name:
                    out.append(words[1])
                    todo.append(words[1])
    return out


def source_text(name: str) -> bytes:
    """What a build of ``name`` is compiled from: its ``.py``, its ``.pxd`` if any, and the
    ``.pxd`` of each module that one cimports (a change to any makes the build stale)."""
    text = source_of(name).read_bytes()
    for mod in [name, *cimported(name)]:
        pxd = declarations_of(mod)
        if pxd.is_file():
            text += b"\0" + mod.encode() + b".pxd\0" + pxd.read_bytes()
    return text


def pure() -> bool:
    """Is ``IOMMU_LAB_PURE`` set (every module runs as Python)?"""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def _manifest() -> dict:
    """The manifest as written (empty if missing or unreadable)."""
    try:
        data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_manifest(data: dict | None = None) -> dict[str, str]:
    """Module -> the digest of the source its build in :data:`DIR` was compiled from (only
    builds made with today's :func:`options`, for this interpreter's ABI)."""
    data = _manifest() if data is None else data
    if data.get("options") != options():
        return {}
    modules = data.get("modules")
    return {k: v for k, v in modules.items() if k in HOT} if isinstance(modules, dict) else {}


def built_file(name: str) -> Path:
    """Where the compiled ``name`` is (or would be)."""
    parts = name.split(".")
    return DIR.joinpath(*parts[:-1], parts[-1] + EXT_SUFFIX)


def fresh(name: str, built: dict[str, str]) -> bool:
    """Is there a build of ``name`` compiled from the text it has now (:func:`source_text`),
    and one of each module its ``.pxd`` cimports? (A build takes those modules' C types: it
    cannot run beside their Python, as when one of them was edited since.)"""
    return built_from_now(name, built) and all(built_from_now(m, built)
                                               for m in cimported(name))


def built_from_now(name: str, built: dict[str, str]) -> bool:
    """Is there a build of ``name`` compiled from the text it has now?"""
    want = built.get(name)
    if want is None or not built_file(name).is_file():
        return False
    try:
        return digest(source_text(name)) == want
    except OSError:
        return False


class NativeFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled build of a :data:`HOT` module, when it is fresh; else defers to
    the normal import of its ``.py``."""

    def __init__(self, built: dict[str, str]) -> None:
        self.built = built
        self.loaded: set[str] = set()       # modules imported from their build
        self.stale: set[str] = set()        # built, but the source has changed since

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.built:
            return None
        if not fresh(fullname, self.built):
            self.stale.add(fullname)
            return None
        where = str(built_file(fullname))
        loader = importlib.machinery.ExtensionFileLoader(fullname, where)
        spec = importlib.util.spec_from_file_location(fullname, where, loader=loader)
        if spec is not None:
            self.loaded.add(fullname)
        return spec


def finder() -> NativeFinder | None:
    """The finder :func:`install` put on ``sys.meta_path``, if any."""
    for f in sys.meta_path:
        if isinstance(f, NativeFinder):
            return f
    return None


def install() -> NativeFinder | None:
    """Put the finder first on ``sys.meta_path`` (once; the package's ``__init__`` calls
    this before importing anything else), unless ``IOMMU_LAB_PURE`` is set or nothing is
    built."""
    if pure():
        return None
    found = finder()
    if found is not None:
        return found
    built = read_manifest()
    if not built:
        return None
    f = NativeFinder(built)
    sys.meta_path.insert(0, f)
    return f


def is_compiled(module: ModuleType) -> bool:
    return str(getattr(module, "__file__", "")).endswith(EXT_SUFFIX)


def status() -> dict[str, str]:
    """Each :data:`HOT` module (imported if it was not): ``compiled``, ``python`` (not
    built, or ``IOMMU_LAB_PURE`` set) or ``stale`` (built, but its source has changed since:
    it runs as Python until the next build)."""
    f = finder()
    out = {}
    for name in HOT:
        mod = importlib.import_module(name)
        if is_compiled(mod):
            out[name] = "compiled"
        else:
            out[name] = "stale" if f is not None and name in f.stale else "python"
    return out


def summary() -> str:
    """One line for the bench: how many of the hot modules run compiled, and why not."""
    s = status()
    n = sum(v == "compiled" for v in s.values())
    if n == len(s):
        return f"engine compiled with Cython (iommu_lab.native): all {n} hot modules"
    python = ", ".join(k.removeprefix(PACKAGE + ".") for k, v in s.items() if v != "compiled")
    why = f"{PURE_ENV} is set" if pure() else "`python -m iommu_lab native build` compiles them"
    return f"engine compiled: {n} of {len(s)} hot modules (run as Python: {python}; {why})"


def outdated(built: dict[str, str]) -> list[str]:
    """The :data:`HOT` modules that ``built`` (a manifest) has no fresh build of."""
    return [n for n in HOT if not fresh(n, built)]


def build(jobs: int | None = None, force: bool = False, quiet: bool = True) -> list[str]:
    """Compile each :data:`HOT` module whose build is missing or older than its source;
    return their names. Raises ImportError without Cython, and the compiler's error if
    a build fails (what was built before stays usable: the manifest changes last)."""
    import Cython
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    data = _manifest()
    built = {} if force or data.get("cython") != Cython.__version__ else read_manifest(data)
    todo = outdated(built)
    if not todo:
        return []
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="iommu-lab-native-") as tmp:
        copies = {source_of(n) for n in todo} | {declarations_of(n) for n in HOT}
        # what each is built from, read before the copy (an edit in between leaves the
        # build stale); then the copy compiled, with every .pxd (one may cimport another's)
        texts = {name: source_text(name) for name in todo}
        for path in copies:
            if path.is_file():
                rel = path.relative_to(SOURCE_ROOT)
                for parent in reversed(rel.parents[:-1]):   # packages, for cimport
                    (Path(tmp) / parent).mkdir(parents=True, exist_ok=True)
                    (Path(tmp) / parent / "__init__.py").touch()
                (Path(tmp) / rel).write_bytes(path.read_bytes())
        cwd = os.getcwd()
        os.chdir(tmp)                       # tracebacks name iommu_lab/...py, as Python's
        try:
            exts = cythonize(
                [Extension(n, [str(source_of(n).relative_to(SOURCE_ROOT))],
                           extra_compile_args=CFLAGS) for n in todo],
                compiler_directives=DIRECTIVES, nthreads=jobs, quiet=quiet, force=True)
            dist = Distribution({"name": "iommu-lab-native", "ext_modules": exts})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib, cmd.build_temp, cmd.parallel = "lib", "tmp", jobs
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
        for name in todo:
            _put(Path(tmp) / "lib" / built_file(name).relative_to(DIR), built_file(name))
    built.update({n: digest(texts[n]) for n in todo})
    write_manifest(built)
    return todo


def _put(new: Path, dest: Path) -> None:
    """Move a build into place by renaming: a process (a Jupyter kernel) that has the old
    file loaded keeps it intact, where writing over it could crash that process."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(new, part)
    part.replace(dest)


def write_manifest(built: dict[str, str]) -> None:
    """Record ``built`` with the build options and the Cython version (a new one rebuilds
    every module), replacing the manifest in one rename."""
    import Cython

    DIR.mkdir(parents=True, exist_ok=True)
    tmp = MANIFEST.with_suffix(".tmp")
    tmp.write_text(json.dumps({"options": options(), "ext_suffix": EXT_SUFFIX,
                               "cython": Cython.__version__, "modules": built}, indent=1,
                              sort_keys=True), encoding="utf-8")
    tmp.replace(MANIFEST)


def clean() -> None:
    """Remove every build (everything runs as Python)."""
    shutil.rmtree(DIR, ignore_errors=True)


install()    # on import: the package's __init__ imports this module first
