"""What the kernel's iommu tracepoints would have printed for a simulated run.

Runs a workload under one (strategy, caller) and writes every ``iommu_map`` /
``iommu_unmap`` / ``iommu_unmap_fast`` call and every device fault as the ftrace text of
``include/trace/events/iommu.h`` (``map``, ``unmap``, ``io_page_fault``), in the chosen format
generation, with simulated timestamps. Syncs, flushes and stale hits print nothing, exactly as
on a real kernel (kernel-api-history §6.2): a trace made here has a *known* caller, which is
what :func:`~iommu_lab.analysis.infer.infer_callers` is tested against.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import einval
from ..inputs.ops import Op
from ..inputs.trace.synth import GENERATIONS, format_line, format_payload
from .session import Session

MAP_CALLS = frozenset({"iommu_map"})
UNMAP_CALLS = frozenset({"iommu_unmap", "iommu_unmap_fast"})
DEVICE_OPS = frozenset({"dma_read", "dma_write"})
FAULT = "fault"
FAULT_WRITE = 0x1   # IOMMU_FAULT_WRITE, include/linux/iommu.h


def kernel_trace_lines(workload: Iterable[Op], strategy: str, caller: str, *,
                       generation: str = "v5.17", style: str = "ftrace",
                       task: str = "qemu-kvm", pid: int = 4242, cpu: int = 0,
                       start_s: float = 100.0, device: str = "0000:03:00.0",
                       driver: str = "vfio-pci",
                       params: dict[str, Any] | None = None) -> list[str]:
    """The trace lines (each ending in ``\\n``) of ``workload`` run under
    (``strategy``, ``caller``); the first line says it is simulated.

    Every call is stepped (no compact runs), so keep workloads to a few thousand calls.
    ``generation`` picks the ``TP_printk`` format (v3.16 prints its post-loop values,
    kernel-api-history §6.2); ``style`` the line prefix (see ``synth.PREFIX_STYLES``).
    """
    if generation not in GENERATIONS:
        raise einval(f"unknown generation {generation!r}; expected one of "
                     f"{', '.join(GENERATIONS)}")
    session = Session(strategy, caller, params, compact=False)
    session.run(list(workload))
    trace = session.dom.trace
    if trace.dropped:
        raise einval(f"the run made more than {trace.limit:,} trace records ({trace.dropped:,} "
                     "dropped); use a smaller workload for an exported trace")
    ctx = {"style": style, "task": task, "pid": pid, "cpu": cpu}
    out = [f"# simulated by iommu-lab: {getattr(workload, 'name', 'ops')} under {strategy} x "
           f"{caller}, {generation} format; not captured from a real machine\n"]
    for ev in trace.events:
        ts = start_s + ev.t0 / 1e9
        if ev.op in MAP_CALLS:
            line = _map_or_unmap("map", ev.iova, _paddr(ev.detail), ev.size, generation,
                                 ts, ctx)
        elif ev.op in UNMAP_CALLS:
            line = _map_or_unmap("unmap", ev.iova, 0, ev.size, generation, ts, ctx)
        elif ev.op in DEVICE_OPS and ev.detail == FAULT:
            flags = FAULT_WRITE if ev.op == "dma_write" else 0
            payload = format_payload("io_page_fault", ev.iova, flags=flags, device=device,
                                     driver=driver)
            line = format_line("io_page_fault", payload, timestamp=ts,
                               **{**ctx, "task": "irq/42-iommu"})
        else:
            continue
        out.append(line + "\n")
    return out


def _paddr(detail: str) -> int:
    """The physical address an ``iommu_map`` trace record names (``"-> 0x..."``)."""
    _, _, text = detail.partition("-> ")
    return int(text.split()[0], 16) if text else 0


def _map_or_unmap(event: str, iova: int, paddr: int, size: int, generation: str, ts: float,
                  ctx: dict[str, Any]) -> str:
    """One map/unmap line; v3.16 printed the values its loop had advanced (§6.2)."""
    if generation == GENERATIONS[0]:
        iova, paddr = iova + size, paddr + size if paddr else 0
        size = 0 if event == "map" else size
    payload = format_payload(event, iova, paddr=paddr, size=size, generation=generation)
    return format_line(event, payload, timestamp=ts, **ctx)
