# Cython declarations for gather.py, used by the compiled build only (iommu_lab.native):
# the gather as an extension type, so the op memo's key (which reads the caller's gather
# and the 2017 API's pending range for every op) and a replay's restore read and write
# its fields as C struct members and make C calls. Every field stays a Python object.
# gather.py stays the source that Python runs.

cdef class IommuIotlbGather:
    cdef public object start, end, pgsize, queued
    cdef public list freelist

    cpdef memo_state(self, anchor)
    cpdef memo_anchor(self)
    cpdef memo_restore(self, state, anchor)
