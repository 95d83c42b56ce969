# Cython declarations for arm.py, used by the compiled build only (iommu_lab.native): the
# page table and the PTE slots an op memo key takes (one per replayed op) as extension
# types, so their methods read their fields as C struct members (still Python objects; the
# tables and caches typed as dicts, so looking one up is a C call) and the slots' calls to
# the page table are C calls. arm.py stays the source that Python runs.

cimport cython


cdef class IoPgtableArm:
    cdef public object cfg, granule, pg_shift, bpl, levels, start_level, pgd_bits
    cdef public object pgsize_bitmap, leaf_sizes, generation
    cdef public object _levels, _level_of, _leaf_types, _mask, _nbits, _pshift, _shift
    cdef public dict tables, _prot_cache, _slot_geometry

    cpdef prot_to_pte(self, prot)
    cpdef _table_for(self, iova, lvl)
    cpdef _free_subtables(self, lvl, iova)
    @cython.locals(by_size=dict)
    cpdef leaf_slots(self, iova, size, bitmap, for_map=*)
    cpdef tables_missing(self, iova, lvl)


cdef class LeafSlots:
    cdef public IoPgtableArm pgtable
    cdef public object table, idx, n, leaf, ltype, iova, lvl, missing, steps

    cpdef _ptes(self)
    cpdef empty(self)
    cpdef free_for_map(self)
    cpdef mapped(self)
    cpdef _values(self, paddr, prot)
    cpdef holds(self, paddr, prot)
    cpdef write(self, paddr, prot, tables=*)
    cpdef clear(self)
