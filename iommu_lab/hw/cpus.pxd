# Cython declarations for cpus.py, used by the compiled build only (iommu_lab.native):
# the CPUs as an extension type, so the per-op checks of a replay (one CPU? a stream
# running? its locks free?) read C struct members. cpus.py stays the source Python runs.

from iommu_lab.hw.clock cimport Clock

cdef class Cpus:
    cdef public Clock clock
    cdef public object stats, n, cacheline_ns, lines, current, _error, _main, running
    cdef public list locks, _cpus
