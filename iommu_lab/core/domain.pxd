# Cython declarations for domain.py, used by the compiled build only (iommu_lab.native):
# the domain as an extension type, so the op memo and the session (which hold it typed)
# read its parts (the clock, the CPUs, the page table, the 2017 API's pending range...)
# as C struct members, and the clock's and CPUs' fields through them. Every field stays a
# Python object. domain.py stays the source that Python runs.

from iommu_lab.core.gather cimport IommuIotlbGather
from iommu_lab.hw.clock cimport Clock
from iommu_lab.hw.cpus cimport Cpus
from iommu_lab.hw.iommu_hw cimport IommuHw
from iommu_lab.io_pgtable.arm cimport IoPgtableArm

cdef class IommuDomain:
    cdef public object strategy, dtype, api, core, asid, pgsize_bitmap, stats, costs
    cdef public object trace, ops, driver, dma_ops, fq, iovad, fail_map_after
    cdef public IommuIotlbGather rfc_gather
    cdef public object compact, memo
    cdef public IoPgtableArm pgtable
    cdef public Clock clock
    cdef public Cpus cpus
    cdef public IommuHw hw
    cdef public list iommus, notes
