# Cython declarations for memo.py, used by the compiled build only (iommu_lab.native): the
# op memo and its plans as extension types, so their fields are C struct members (a
# plan's read-only) and the memo's calls to its own methods are C calls (~10 per replayed
# op, each ~500 instructions through Python's generic attribute and call machinery).
# memo.py stays the source that Python runs; a method with a closure (a lambda) stays a
# Python method (Cython's cpdef has none).

cimport cython

from iommu_lab.analysis.session cimport Session
from iommu_lab.core.dma_iommu cimport FlushQueue
from iommu_lab.core.domain cimport IommuDomain
from iommu_lab.hw.cmdq cimport CommandQueue
from iommu_lab.hw.iommu_hw cimport IommuHw
from iommu_lab.io_pgtable.arm cimport IoPgtableArm, LeafSlots

cdef class Plan:
    cdef readonly object dt, stats, queues, locks, dropped, generation, iova, footprints
    cdef readonly object caller, fq, confirmed, ready


cdef class OpMemo:
    cdef public Session session
    cdef public IommuDomain dom
    cdef public object pairs, _known
    cdef public list queues
    cdef public dict plans
    cdef public Py_ssize_t hits, misses, end_hits, end_misses
    cdef public bint active, ends_active

    @cython.locals(slots=LeafSlots)
    cpdef do(self, op, handler)
    cpdef stretch(self, end)
    @cython.locals(slots=LeafSlots, pt=IoPgtableArm)
    cpdef key(self, op)
    @cython.locals(fq=FlushQueue)
    cpdef _context(self, iova, size)
    cpdef forget(self)
    @cython.locals(q=CommandQueue)
    cpdef _commands_written(self)
    cpdef _ready(self)
    cpdef _compute_ready(self)
    @cython.locals(hw=IommuHw)
    cpdef _caches_empty(self)
    @cython.locals(hw=IommuHw)
    cpdef _touches(self, Plan plan, anchor)
    @cython.locals(q=CommandQueue, fq=FlushQueue)
    cpdef _apply(self, Plan plan, anchor)
