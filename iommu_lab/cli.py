"""Command line: ``python -m iommu_lab strategies | compare | replay | bench | scaling | key | native``.

Bad arguments print one line (``iommu_lab: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, NoReturn

from .errors import IommuError

TABLE_COLUMNS = ["strategy", "caller", "inv_cmds", "inv_all_cmds", "sync_cmds", "doorbells",
                 "cmdq_full_stalls", "wasted_inv_cmds", "needless_sync_cmds", "cpu_ms",
                 "iommu_ms", "end_ms", "op_errors"]
# shown only when a run uses them (several CPUs, ATS): name -> value meaning "unused"
OPTIONAL_COLUMNS = {"cpus": 1, "unmaps_per_s": None, "lock_wait_ms": 0, "spin_ms": None,
                    "atc_inv_cmds": 0, "atc_stale_hits": 0, "iommus": 1}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"iommu_lab: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers") from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of processes")
    return n


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param {text!r} is not NAME=VALUE")
    name, value = text.split("=", 1)
    for conv in (int, float):
        try:
            return name, conv(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands strategies, compare, replay, bench)."""
    p = _Parser(prog="python -m iommu_lab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    sub.add_parser("strategies", help="list every driver strategy")
    c = sub.add_parser("compare", help="run a workload under strategies x callers")
    c.add_argument("--workload", default="kvm-teardown", choices=["kvm-teardown"])
    c.add_argument("--guest-mem", default="16G")
    c.add_argument("--page-size", default="4K")
    c.add_argument("--contiguity", type=float, default=0.0)
    c.add_argument("--seed", type=int, default=0)
    _common(c)
    r = sub.add_parser("replay", help="replay an ftrace / trace-cmd iommu trace")
    r.add_argument("trace")
    r.add_argument("--lenient", action="store_true", help="skip malformed lines (reported)")
    r.add_argument("--per-cpu", action="store_true",
                   help="replay each traced CPU on its own simulated CPU, concurrently")
    _common(r)
    b = sub.add_parser("bench", help="print the speed and scale figures (DESIGN §8)")
    b.add_argument("--quick", action="store_true",
                   help="1 GiB instead of 16 GiB; smaller engine runs (100k-event replay)")
    sc = sub.add_parser("scaling", help="teardown throughput and lock wait against CPUs; "
                        "the cost of ATS (issue 11)")
    sc.add_argument("--size", default="1G", help="guest memory torn down (default 1G)")
    sc.add_argument("--cpus", type=_int_list, default=None,
                    help="comma-separated CPU counts (default 1,2,4,8,16,32,64)")
    sc.add_argument("--strategies", type=_csv_list, default=None, help="comma-separated")
    sc.add_argument("--no-ats", action="store_true", help="skip the ATS cost table")
    sc.add_argument("--param", type=_param, action="append", default=[],
                    help="domain parameter NAME=VALUE (repeatable), e.g. hw_sync_ns=50")
    k = sub.add_parser("key", help="instructor key: every exercise's answer for each seed")
    k.add_argument("--seeds", required=True,
                   help='comma-separated seeds: student numbers or IDs, e.g. 0,1,s1234567')
    k.add_argument("--notebooks", type=_csv_list, default=None,
                   help="comma-separated notebooks, e.g. 02,03 (default: all)")
    k.add_argument("--csv", default=None, help="also write the key to this CSV file")
    n = sub.add_parser("native", help="the engine's hot modules compiled with Cython: build "
                       "what changed, list which run compiled, or remove the builds")
    n.add_argument("action", choices=("build", "status", "clean"))
    n.add_argument("--force", action="store_true", help="build: rebuild every module")
    n.add_argument("--optional", action="store_true",
                   help="build: if Cython or the C compiler is missing or fails, say so and "
                        "exit 0 (the engine then runs as Python)")
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategies", type=_csv_list, default=None, help="comma-separated")
    p.add_argument("--callers", type=_csv_list, default=None, help="comma-separated")
    p.add_argument("--param", type=_param, action="append", default=[],
                   help="domain parameter or cost NAME=VALUE (repeatable), e.g. "
                        "iotlb_entries=256 or hw_sync_ns=50")
    p.add_argument("--csv", default=None, help="also write the full table to this CSV file")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=_positive, default=1,
                       help="run the (strategy, caller) pairs in N local processes")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run the pairs on a dask.distributed cluster, e.g. "
                            "tcp://scheduler:8786 (needs pip install -e '.[cluster]')")


def format_table(df: Any) -> str:
    """The compare/replay DataFrame as a readable fixed-width table."""
    out = df.copy()
    for col in ("cpu_ns", "iommu_ns", "end_ns", "lock_wait_ns", "spin_ns"):
        if col in out.columns:
            out[col.replace("_ns", "_ms")] = out[col] / 1e6
    cols = [c for c in TABLE_COLUMNS if c in out.columns] + _used_optional(out)
    return out[cols].to_string(index=False, float_format=lambda v: f"{v:,.3f}",
                               formatters={c: "{:,}".format for c in cols[2:9] + [
                                   c for c in ("unmaps_per_s", "atc_inv_cmds") if c in cols]})


def _used_optional(out: Any) -> list[str]:
    """The optional columns this table needs: per-CPU figures when a run had several CPUs,
    the others when any row differs from their "unused" value."""
    several = "cpus" in out.columns and bool((out["cpus"] > 1).any())
    return [c for c, unused in OPTIONAL_COLUMNS.items() if c in out.columns and (
        several if unused is None else bool((out[c] != unused).any()))]


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """``--param`` values as domain parameters; a cost name (``hw_sync_ns=50``) goes into
    ``costs``."""
    cost_names = _cost_names()
    out: dict[str, Any] = {}
    for name, value in args.param:
        if name in cost_names:
            out.setdefault("costs", {})[name] = value
        else:
            out[name] = value
    return out


def _cost_names() -> set[str]:
    """The named costs (``hw.costs.Costs`` fields) a ``--param`` may set."""
    from dataclasses import fields

    from .hw.costs import Costs

    return {f.name for f in fields(Costs)}


def cmd_strategies(args: argparse.Namespace) -> int:
    from . import strategies

    df = strategies()
    print(df[["name", "hardware", "kernel", "summary", "source"]].to_string(index=False))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .analysis.compare import compare
    from .inputs.workloads import kvm_teardown

    _check_names(args)
    w = kvm_teardown(args.guest_mem, args.page_size, args.contiguity, args.seed)
    print(w.describe())
    with _executor(args) as pool:
        df = compare(w, args.strategies, args.callers, _params(args), executor=pool,
                     progress=args.progress)
    _emit(df, args)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .analysis.replay import replay

    _check_names(args)
    if not Path(args.trace).is_file():
        raise FileNotFoundError(f"no such trace file: {args.trace}")
    with _executor(args) as pool:
        df = replay(str(Path(args.trace).resolve()), args.strategies, args.callers,
                    _params(args), strict=not args.lenient, progress=args.progress,
                    executor=pool, per_cpu=args.per_cpu)
    for line, reason in df.attrs.get("skips", []):
        print(f"skipped line {line}: {reason}", file=sys.stderr)
    print(df.attrs.get("note", ""))
    _emit(df, args)
    return 0


@contextmanager
def _executor(args: argparse.Namespace) -> Iterator[Any]:
    """Where the pairs run: here (None), ``--jobs N`` local processes, or the dask cluster
    at ``--scheduler`` (its ``Client.get_executor()``); rows are the same either way."""
    if args.scheduler:
        try:
            from dask.distributed import Client
        except ImportError:
            raise IommuError(22, "--scheduler needs dask.distributed: "
                             "pip install -e '.[cluster]'") from None
        try:
            client = Client(args.scheduler, timeout="10s")
        except (OSError, ValueError, TimeoutError) as exc:
            raise IommuError(22, f"--scheduler {args.scheduler}: cannot connect "
                             f"({exc})") from None
        with client:
            yield client.get_executor()
    elif args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            yield pool
    else:
        yield None


def _check_names(args: argparse.Namespace) -> None:
    from .analysis.callers import get_caller
    from .drivers.registry import STRATEGIES, get_strategy, known_params

    for name in args.strategies or []:
        get_strategy(name)
    for name in args.callers or []:
        get_caller(name)
    allowed = set().union(*(known_params(s) for s in STRATEGIES.values()))
    allowed |= _cost_names()
    for name, _ in args.param:
        if name not in allowed:
            raise IommuError(22, f"unknown parameter {name!r}; known: {', '.join(sorted(allowed))}")


def _emit(df: Any, args: argparse.Namespace) -> None:
    print(format_table(df))
    if args.csv:
        flat = df.drop(columns=["commands"], errors="ignore")
        flat.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")


def cmd_bench(args: argparse.Namespace) -> int:
    from .analysis.bench import run_bench

    for line in run_bench(quick=args.quick):
        print(line, flush=True)
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    """``scaling``: one row per (strategy, cpus) as each run finishes, then the ATS table."""
    from .analysis import scaling

    cpus = args.cpus or list(scaling.SCALING_CPUS)
    strategies = args.strategies or list(scaling.SCALING_STRATEGIES)
    _check_names(argparse.Namespace(strategies=strategies, callers=None, param=args.param))
    params = _params(args)
    scaling.check_cpus(cpus)
    print(f"{args.size} teardown, 4K pages, one iommu_unmap per page (unmap-each); the unmap "
          "phase spread over N CPUs", flush=True)
    print(f"{'strategy':14s} {'cpus':>4s} {'unmaps/s':>11s} {'speedup':>7s} "
          f"{'lock wait ms':>12s} {'spin ms':>9s} {'stalls':>6s} {'doorbells':>9s}", flush=True)
    for r in scaling.scaling_rows(args.size, strategies, cpus, params):
        print(f"{r['strategy']:14s} {r['cpus']:4d} {r['unmaps_per_s']:11,} {r['speedup']:7.2f} "
              f"{r['lock_wait_ms']:12.3f} {r['spin_ms']:9.3f} {r['cmdq_full_stalls']:6,} "
              f"{r['doorbells']:9,}", flush=True)
    if not args.no_ats:
        print("\nATS (a device TLB per endpoint), same teardown on 1 CPU:")
        ats = [s for s in strategies if s in scaling.ATS_STRATEGIES] or scaling.ATS_STRATEGIES
        print(scaling.ats_cost(args.size, ats, params=params).to_string(index=False),
              flush=True)
    return 0


def cmd_native(args: argparse.Namespace) -> int:
    """``native``: build (only modules whose source changed), status, or clean."""
    from . import native

    if args.action == "clean":
        native.clean()
        print(f"removed {native.DIR}")
        return 0
    if args.action == "status":
        for name, state in native.status().items():
            print(f"{state:8s} {name}")
        print(native.summary())
        return 0
    try:
        done = native.build(force=args.force)
    except Exception as exc:    # no Cython, no compiler, a compile error
        if not args.optional:
            raise
        print(f"iommu_lab native: nothing compiled ({type(exc).__name__}: {exc}); the "
              "engine runs as Python", file=sys.stderr)
        return 0
    print(f"iommu_lab native: {len(done)} modules compiled into {native.DIR}" if done
          else "iommu_lab native: every build is up to date")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """``key``: the answer of every exercise for each seed (a seed is kept as typed, so
    ``0`` here is the notebook's ``SEED = 0`` and ``s1234567`` its ``SEED = "s1234567"``)."""
    from .exercises import answer_key

    seeds = args.seeds.split(",")
    for i, seed in enumerate(seeds, 1):
        if not seed.strip():
            print(f"iommu_lab: error: --seeds: seed {i} of {len(seeds)} is empty "
                  f"(got {args.seeds!r})", file=sys.stderr)
            return 2
    try:
        df = answer_key(seeds, args.notebooks)
    except ValueError as exc:
        print(f"iommu_lab: error: {exc}", file=sys.stderr)
        return 2
    print(df.to_string(index=False))
    if args.csv:
        try:
            df.to_csv(args.csv, index=False)
        except OSError as exc:
            print(f"iommu_lab: error: cannot write {args.csv}: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.csv}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler = {"strategies": cmd_strategies, "compare": cmd_compare, "replay": cmd_replay,
               "bench": cmd_bench, "scaling": cmd_scaling, "key": cmd_key,
               "native": cmd_native}[args.cmd]
    try:
        return handler(args)
    except (IommuError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"iommu_lab: error: {exc}", file=sys.stderr)
        return 2
