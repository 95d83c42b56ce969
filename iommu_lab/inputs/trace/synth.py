"""Write ``iommu:*`` trace lines the way the kernel prints them, and make synthetic traces.

The formats are the ``TP_printk`` strings of ``include/trace/events/iommu.h``
(kernel-api-history §6.1): three generations for ``map``/``unmap`` (v3.16 hex sizes,
v4.0..v5.16 decimal sizes with ``unmapped_size=``, v5.17+ ``iova=A - B`` range form) and one
for ``io_page_fault``. The line prefix is ftrace's (``kernel/trace/trace_output.c``) or
``trace-cmd report``'s. Used for the bundled examples, the tests and the import benchmark;
every synthetic trace says so in its first line.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator

GENERATIONS = ("v3.16", "v4.0", "v5.17")
"""Format generations of the map/unmap tracepoints, oldest first (kernel-api-history §6.1)."""

PREFIX_STYLES = ("ftrace", "ftrace-noflags", "trace-cmd", "none", "bare")
"""Line layouts: ``trace`` with irq flags, without them, ``trace-cmd report``, context-info off
(event name only), and the bare ``IOMMU:`` payload."""

_SIZES = (4096, 4096, 4096, 4096, 4096, 4096, 8192, 8192, 16384, 65536, 65536, 2097152)
_NOISE = (
    "sched_switch: prev_comm={task} prev_pid={pid} prev_prio=120 prev_state=S ==> "
    "next_comm=swapper/{cpu} next_pid=0 next_prio=120",
    "sched_wakeup: comm={task} pid={pid} prio=120 target_cpu={cpu:03d}",
    "irq_handler_entry: irq=42 name=eth0-TxRx-{cpu}",
    "irq_handler_exit: irq=42 ret=handled",
)
_TASKS = ("irq/42-eth0-TxR", "ksoftirqd/0", "iperf3", "kworker/u16:3", "nvme-wq")


def format_payload(event: str, iova: int, *, paddr: int = 0, size: int = 0,
                   unmapped_size: int | None = None, flags: int = 0, device: str = "",
                   driver: str = "", generation: str = "v5.17") -> str:
    """The ``IOMMU:...`` text ``TP_printk`` produces (include/trace/events/iommu.h).

    ``generation`` picks the map/unmap format; ``io_page_fault`` has one format in all
    versions (``"IOMMU:%s %s iova=0x%016llx flags=0x%04x"``, driver then device).
    """
    if event == "io_page_fault":
        return f"IOMMU:{driver} {device} iova=0x{iova:016x} flags=0x{flags:04x}"
    if generation not in GENERATIONS:
        raise ValueError(f"unknown generation {generation!r}; expected one of {GENERATIONS}")
    if generation == "v5.17":
        where = f"iova=0x{iova:016x} - 0x{iova + size:016x}"
    else:
        where = f"iova=0x{iova:016x}"
    sz = f"0x{size:x}" if generation == "v3.16" else str(size)
    if event == "map":
        return f"IOMMU: {where} paddr=0x{paddr:016x} size={sz}"
    if event != "unmap":
        raise ValueError(f"unknown event {event!r}")
    if generation == "v3.16":
        return f"IOMMU: {where} size={sz}"
    done = size if unmapped_size is None else unmapped_size
    return f"IOMMU: {where} size={sz} unmapped_size={done}"


def format_line(event: str, payload: str, *, style: str = "ftrace", task: str = "iperf3",
                pid: int = 1234, cpu: int = 0, timestamp: float = 0.0,
                irq_flags: str = "d..1.") -> str:
    """One trace line around ``payload`` in the given prefix ``style`` (no newline).

    ``ftrace`` follows ``print_trace_fmt()`` (kernel/trace/trace_output.c): comm right-aligned
    in 16 columns, ``-%-7d`` pid, ``[%03d]`` cpu, irq flags, ``%5lu.%06lu`` timestamp.
    """
    if style == "bare":
        return payload
    if style == "none":
        return f"{event}: {payload}"
    head = f"{task:>16}-{pid:<7} [{cpu:03d}]"
    if style == "ftrace":
        return f"{head} {irq_flags} {timestamp:12.6f}: {event}: {payload}"
    if style == "ftrace-noflags":
        return f"{head} {timestamp:12.6f}: {event}: {payload}"
    if style == "trace-cmd":
        return f"{task:>16}-{pid:<5} [{cpu:03d}] {timestamp:.6f}: {event + ':':<20} {payload}"
    raise ValueError(f"unknown prefix style {style!r}; expected one of {PREFIX_STYLES}")


def _event_line(event: str, iova: int, paddr: int, size: int, generation: str, style: str,
                ctx: dict) -> str:
    """A map/unmap line; v3.16 shows the post-loop values its kernel traced (§6.2)."""
    if generation == "v3.16":
        # v3.16 traced after the loop: map with advanced iova/paddr and size 0, unmap with the
        # advanced iova and the requested size (kernel-api-history §6.2).
        if event == "map":
            payload = format_payload("map", iova + size, paddr=paddr + size, size=0,
                                     generation=generation)
        else:
            payload = format_payload("unmap", iova + size, size=size, generation=generation)
    else:
        payload = format_payload(event, iova, paddr=paddr, size=size, generation=generation)
    return format_line(event, payload, style=style, **ctx)


def _noise_line(rng: random.Random, style: str, ctx: dict) -> str:
    """A line of some other event (sched/irq), or a header-style line for bare traces."""
    text = rng.choice(_NOISE).format(task=ctx["task"], pid=ctx["pid"], cpu=ctx["cpu"])
    if style == "bare":
        return "IOMMU: device=0000:03:00.0" if rng.random() < 0.5 else ""
    name, _, rest = text.partition(": ")
    return format_line(name, rest, style=style, **ctx)


class _DmaAllocator:
    """Top-down IOVA allocator below 4 GiB, like the DMA API's (drivers/iommu/dma-iommu.c)."""

    TOP = 0x1_0000_0000
    FLOOR = 0x1000_0000

    def __init__(self) -> None:
        self.next = self.TOP

    def alloc(self, size: int) -> int:
        """Size-aligned IOVA just below the previous one; wraps to the top when low."""
        align = min(size, 1 << 21)
        iova = (self.next - size) & ~(align - 1)
        if iova < self.FLOOR:
            iova = (self.TOP - size) & ~(align - 1)
        self.next = iova
        return iova


def make_synthetic_trace(n_lines: int, generation: str = "v5.17", seed: int = 0,
                         noise: float = 0.1, *, style: str = "ftrace",
                         fault_rate: float = 0.001, live: int = 256) -> Iterator[str]:
    """Yield ``n_lines`` lines (each ending in ``\\n``) of a deterministic synthetic trace.

    Imitates a NIC/storage DMA API workload: top-down 4 KiB..2 MiB IOVA allocations below
    4 GiB mapped, kept for up to ``live`` buffers, then unmapped oldest first, plus a fraction
    ``noise`` of other events and rare ``io_page_fault`` lines on just-unmapped IOVAs. The
    first line is a comment saying the trace is synthetic. Same seed, same lines.
    """
    if generation not in GENERATIONS:
        raise ValueError(f"unknown generation {generation!r}; expected one of {GENERATIONS}")
    if style not in PREFIX_STYLES:
        raise ValueError(f"unknown prefix style {style!r}; expected one of {PREFIX_STYLES}")
    if n_lines <= 0:
        return
    yield (f"# synthetic trace made by iommu-lab (make_synthetic_trace seed={seed}); imitates "
           f"the {generation} iommu:map/unmap format; not captured from a real machine\n")
    rng = random.Random(seed)
    alloc = _DmaAllocator()
    mapped: deque[tuple[int, int, int]] = deque()
    ts = 1000.0 + rng.randrange(1000)
    last_unmapped = 0
    for _ in range(n_lines - 1):
        ts += rng.randrange(1, 40) * 1e-6
        ctx = {"task": rng.choice(_TASKS), "pid": 400 + rng.randrange(8), "cpu": rng.randrange(4),
               "timestamp": ts}
        r = rng.random()
        if r < noise:
            yield _noise_line(rng, style, ctx) + "\n"
        elif r < noise + fault_rate and last_unmapped:
            payload = format_payload("io_page_fault", last_unmapped, flags=rng.choice((0, 1)),
                                     driver="ixgbe", device="0000:03:00.0")
            yield format_line("io_page_fault", payload, style=style, **ctx) + "\n"
        elif mapped and (len(mapped) >= live or rng.random() < 0.45):
            iova, paddr, size = mapped.popleft()
            last_unmapped = iova
            yield _event_line("unmap", iova, paddr, size, generation, style, ctx) + "\n"
        else:
            size = rng.choice(_SIZES)
            iova = alloc.alloc(size)
            paddr = rng.randrange(0x8_0000, 0x80_0000) * 4096 & ~(size - 1)
            mapped.append((iova, paddr, size))
            yield _event_line("map", iova, paddr, size, generation, style, ctx) + "\n"
