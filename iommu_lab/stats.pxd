# Cython declarations for stats.py, used by the compiled build only (iommu_lab.native): the
# count of a replayed plan's counter changes as a C function, which the command queue (its
# tally) and the domain's counters call on every replayed op. stats.py stays the source
# that Python runs.

cpdef note_replay(counts, replayed, delta)
