"""Invalidation and completion commands with their real names, opcodes and fields.

Opcodes: SMMUv3 ``CMDQ_OP_*`` (arm-smmu-v3.h), VT-d ``QI_*_TYPE`` (intel/iommu.h),
AMD ``CMD_*`` (amd_iommu_types.h), virtio-iommu ``VIRTIO_IOMMU_T_*``; SMMUv2 has register
offsets instead (arm-smmu.h). See hardware-invalidation.md §1.2, §2, §3.3, §4.1, §5.
"""

from __future__ import annotations

from typing import NamedTuple

INV = "inv"            # address-range or per-page invalidation
INV_ALL = "inv_all"    # whole-domain / ASID / VMID invalidation
SYNC = "sync"          # completion: CMD_SYNC, invalidation wait, COMPLETION_WAIT, TLBSYNC
ATC_INV = "atc_inv"    # device-TLB (PCIe ATS) invalidation: CMD_ATC_INV, QI_DIOTLB, INV_IOTLB_PAGES
REQUEST = "request"    # virtio-iommu MAP request (not an invalidation)
MAP_SIDE = "map"       # Command.reason: invalidation issued on *map* (caching mode, NpCache)
KINDS = (INV, INV_ALL, SYNC, ATC_INV, REQUEST)
STAY_PUT = frozenset({INV_ALL, SYNC})   # kinds with no address to move (whole context, wait)

_tuple_new = tuple.__new__

# name -> (opcode or register offset, kind)
OPCODES: dict[str, tuple[int, str]] = {
    # ARM SMMUv3 command queue (arm-smmu-v3.h @v6.18.2; v4.14 subset)
    "CMD_TLBI_NH_ASID": (0x11, INV_ALL),
    "CMD_TLBI_NH_VA": (0x12, INV),
    "CMD_TLBI_S12_VMALL": (0x28, INV_ALL),
    "CMD_TLBI_S2_IPA": (0x2A, INV),
    "CMD_ATC_INV": (0x40, ATC_INV),
    "CMD_SYNC": (0x46, SYNC),
    # ARM SMMUv2 context-bank registers (arm-smmu.h): value is the register offset
    "TLBIVA": (0x600, INV),
    "TLBIASID": (0x610, INV_ALL),
    "TLBIVAL": (0x620, INV),
    "TLBSYNC": (0x7F0, SYNC),
    # Intel VT-d queued invalidation descriptors (QI_*_TYPE)
    "QI_IOTLB_PSI": (0x2, INV),
    "QI_IOTLB_DSI": (0x2, INV_ALL),
    "QI_DIOTLB": (0x3, ATC_INV),
    "QI_IWD": (0x5, SYNC),
    # AMD-Vi command buffer (CMD_*)
    "INVALIDATE_IOMMU_PAGES": (0x03, INV),
    "INVALIDATE_IOMMU_PAGES_ALL": (0x03, INV_ALL),
    "INVALIDATE_IOTLB_PAGES": (0x04, ATC_INV),
    "COMPLETION_WAIT": (0x01, SYNC),
    # virtio-iommu requests (VIRTIO_IOMMU_T_*)
    "VIRTIO_IOMMU_T_MAP": (0x03, REQUEST),
    "VIRTIO_IOMMU_T_UNMAP": (0x04, INV),
}


class Command(NamedTuple):
    """One command (or the template of a run of commands stepping through addresses).

    ``iova``/``size`` is what *one* command invalidates (``size == 0`` with kind
    ``inv_all``: the whole domain); ``step`` is the address increment between the
    commands of a run. ``fields`` holds the encoded fields a reviewer would check
    (``Leaf``, ``NUM``, ``SCALE``, ``TG``, ``TTL``, ``AM``, ``IH``, ``S``, ``PDE``...).
    ``reason`` marks invalidations issued on map (:data:`MAP_SIDE`), which the hardware
    needs only if it caches non-present entries.

    An immutable record like the queue's other snapshots (a named tuple: a strict unmap
    builds one per TLBI, and a tuple is built several times faster than a frozen
    dataclass).
    """

    name: str
    asid: int = 0
    iova: int = 0
    size: int = 0
    step: int = 0
    fields: tuple[tuple[str, int], ...] = ()
    reason: str = ""

    @property
    def opcode(self) -> int:
        """The opcode (or SMMUv2 register offset)."""
        return OPCODES[self.name][0]

    @property
    def kind(self) -> str:
        """``inv`` | ``inv_all`` | ``sync`` | ``request`` | ``atc_inv``."""
        return OPCODES[self.name][1]

    def at(self, k: int) -> Command:
        """Command number ``k`` of a run built from this template."""
        if k == 0 or not self.step:
            return self
        return Command(self.name, self.asid, self.iova + k * self.step, self.size, 0, self.fields,
                       self.reason)

    def shifted(self, diova: int) -> Command:
        """The same command ``diova`` bytes further on (whole-context ones stay put)."""
        if self.kind in STAY_PUT or not diova:
            return self
        return self.moved(diova)

    def moved(self, diova: int) -> Command:
        """:meth:`shifted` for a command known to carry an address: the op memo checked
        its kind when it recorded it, and replays it once per op (built as a bare tuple,
        which skips the named tuple's argument handling)."""
        name, asid, iova, size, step, fields, reason = self
        for k, _ in fields:
            if k == "ADDR":     # a loop, not a generator: compiled, a generator is costly
                out = []
                for pair in fields:
                    out.append((pair[0], pair[1] + diova) if pair[0] == "ADDR" else pair)
                fields = tuple(out)
                break
        return _tuple_new(Command, (name, asid, iova + diova, size, step, fields, reason))

    def describe(self) -> str:
        """Short text as a reviewer would write it: ``CMD_TLBI_NH_VA asid=1 addr=0x1000 Leaf=1``."""
        parts = [self.name]
        tagged = any(k in ("ASID", "VMID") for k, _ in self.fields)
        if self.kind in (INV, INV_ALL, ATC_INV) and not tagged:
            parts.append(f"domain={self.asid}")
        if self.kind in (INV, ATC_INV) and self.size:
            parts.append(f"addr={self.iova:#x}")
        parts += [f"{k}={v:#x}" if k == "ADDR" else f"{k}={v}" for k, v in self.fields]
        return " ".join(parts)

