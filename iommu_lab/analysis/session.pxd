# Cython declarations for session.py, used by the compiled build only (iommu_lab.native):
# the session and its caller's state as extension types, so the per-op path (run -> _do ->
# the op memo) reads their fields as C struct members and makes its calls to itself, to
# the memo, to the gathers and to the flush-queue functions as C calls. session.py stays
# the source that Python runs; methods with closures stay Python methods.

cimport cython

from iommu_lab.core.dma_iommu cimport fq_advance, fq_check_timer
from iommu_lab.core.domain cimport IommuDomain
from iommu_lab.core.gather cimport IommuIotlbGather
from iommu_lab.memo cimport OpMemo

cdef class CallerState:
    cdef public IommuIotlbGather gather
    cdef public object pending_regions, unflushed


cdef class Session:
    cdef public IommuDomain dom
    cdef public object caller, compact, lenient, op_errors, handles, iovad
    cdef public list states
    cdef public Py_ssize_t compacted_items, items
    cdef public OpMemo memo
    cdef public bint _running

    cpdef _do(self, op)
    @cython.locals(state=CallerState)
    cpdef memo_caller(self, anchor)
    @cython.locals(state=CallerState)
    cpdef memo_set_caller(self, caller, anchor)
    @cython.locals(gather=IommuIotlbGather)
    cpdef memo_anchor(self)
    @cython.locals(state=CallerState)
    cpdef _end_stretch(self)
