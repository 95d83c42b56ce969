# Cython declarations for arm.py, used by the compiled build only (iommu_lab.native): the
# PTE slots an op memo key takes (one per replayed op) as an extension type, so its methods
# read its fields as C struct members. arm.py stays the source that Python runs.

cdef class LeafSlots:
    cdef public object pgtable, table, idx, n, leaf, ltype, iova, lvl, missing

    cpdef _ptes(self)
    cpdef empty(self)
    cpdef free_for_map(self)
    cpdef mapped(self)
    cpdef _values(self, paddr, prot)
    cpdef holds(self, paddr, prot)
    cpdef write(self, paddr, prot, tables=*)
    cpdef clear(self)
