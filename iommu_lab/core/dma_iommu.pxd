# Cython declarations for dma_iommu.py, used by the compiled build only (iommu_lab.native):
# the flush queue as an extension type, so a lazy op's memo key, its replay (an entry
# queued) and the per-op timer checks read the queue's fields as C struct members and
# call its methods as C calls; the flush-queue functions hold the domain and its queue
# typed. Every field stays a Python object. dma_iommu.py stays the source Python runs.

cimport cython

from iommu_lab.core.domain cimport IommuDomain

cdef class FlushQueue:
    cdef public object size, timeout_ns, ncpus, fq_flush_start_cnt, fq_flush_finish_cnt
    cdef public object timer_deadline, current
    cdef public list rings
    cdef public dict index

    cpdef _reindex(self)
    cpdef _add(self, entry)
    cpdef push(self, ring, entry)
    cpdef pop(self, ring)
    cpdef memo_key(self, iova, size)
    cpdef overlaps(self, iova, size)
    cpdef memo_mark(self)
    cpdef memo_apply(self, delta, t0, anchor)


@cython.locals(fq=FlushQueue)
cpdef queue_iova(IommuDomain domain, iova, size)
@cython.locals(fq=FlushQueue)
cpdef fq_ring_free(IommuDomain domain, ring=*)
@cython.locals(fq=FlushQueue)
cpdef fq_flush_iotlb(IommuDomain domain)
@cython.locals(fq=FlushQueue)
cpdef fq_check_timer(IommuDomain domain)
@cython.locals(fq=FlushQueue)
cpdef fq_flush_timeout(IommuDomain domain)
@cython.locals(fq=FlushQueue)
cpdef fq_advance(IommuDomain domain, ns)
