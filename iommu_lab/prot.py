"""IOMMU_* protection flags (include/linux/iommu.h, unchanged v3.16 .. v6.18)."""

from __future__ import annotations

from enum import IntFlag


class Prot(IntFlag):
    """Mapping permissions, bit-for-bit the kernel's ``IOMMU_*`` values."""

    IOMMU_READ = 1 << 0
    IOMMU_WRITE = 1 << 1
    IOMMU_CACHE = 1 << 2
    IOMMU_NOEXEC = 1 << 3
    IOMMU_MMIO = 1 << 4
    IOMMU_PRIV = 1 << 5


IOMMU_READ = Prot.IOMMU_READ
IOMMU_WRITE = Prot.IOMMU_WRITE
IOMMU_CACHE = Prot.IOMMU_CACHE
IOMMU_NOEXEC = Prot.IOMMU_NOEXEC
IOMMU_MMIO = Prot.IOMMU_MMIO
IOMMU_PRIV = Prot.IOMMU_PRIV
PROT_ALL = int(Prot.IOMMU_READ | Prot.IOMMU_WRITE | Prot.IOMMU_CACHE | Prot.IOMMU_NOEXEC
               | Prot.IOMMU_MMIO | Prot.IOMMU_PRIV)
