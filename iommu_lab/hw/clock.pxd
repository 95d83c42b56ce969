# Cython declarations for clock.py, used by the compiled build only (iommu_lab.native):
# the clock as an extension type, so code that holds it typed (the domain's ``clock``)
# reads and moves ``now`` as a C struct member. ``now`` stays a Python int. clock.py
# stays the source that Python runs.

cdef class Clock:
    cdef public object now, stats, on_spin

    cpdef busy(self, ns)
    cpdef wait_until(self, t, label=*)
    cpdef spin(self, ns, why=*, label=*)
    cpdef idle_until(self, t)
