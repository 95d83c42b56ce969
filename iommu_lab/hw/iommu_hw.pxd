# Cython declarations for iommu_hw.py, used by the compiled build only (iommu_lab.native):
# the IOMMU as an extension type, so a translation and the op memo's cache check (one per
# replayed op) read its fields as C struct members and make its calls to itself as C calls.
# iommu_hw.py stays the source that Python runs.

cdef class IommuHw:
    cdef public object clock, stats, costs, iotlb, atc, queues

    cpdef execute(self, cmd, k0, k1)
    cpdef _execute(self, cmd, k0, k1)
    cpdef would_change(self, asid, fp, shift=*)
    cpdef caches_empty(self)
    cpdef translate(self, asid, iova, write, walker, pgsizes, levels, table_gen=*)
    cpdef _miss(self, asid, iova, write, walker, levels, table_gen)
    cpdef _fill_atc(self, asid, iova, pgsize, paddr, writable, checked=*)
    cpdef _on_hit(self, entry, iova, write, walker, table_gen, count=*)
    cpdef _walk_cost(self, asid, found, levels)
