# Cython declarations for cmdq.py, used by the compiled build only (iommu_lab.native): the
# command queue as an extension type, so its methods read and write its fields as C struct
# members (a replayed op's memo_apply touches a dozen) and call each other (and
# stats.note_replay) as C calls. cmdq.py stays the source that Python runs; the fields
# stay Python objects (plain ints, lists, dicts), so they hold exactly what they hold there.

from iommu_lab.stats cimport note_replay


cdef class CommandQueue:
    cdef public object clock, stats, costs, entries, style, doorbell_reg, cons_reg, capacity
    cdef public object effect, prod, published, hw_free, paused, kind_cost, trace, lane
    cdef public object inv_since_sync, inv_all_since_sync, req_since_sync, unobserved
    cdef public object _lazy_n, _trim_at, _head
    cdef public list _runs, _replays
    cdef public dict _tally, _replayed

    cpdef submit(self, batch)
    cpdef write_batch(self, batch)
    cpdef publish(self, upto=*, written=*)
    cpdef make_room(self, n)
    cpdef _count(self, cmd, kind, n)
    cpdef _finish_of(self, pos)
    cpdef _run_at(self, pos)
    cpdef _schedule_until(self, pos)
    cpdef settle(self, t)
    cpdef _prune(self)
    cpdef _drop_overwritten(self)
    cpdef _materialize(self)
    cpdef _trim_replays(self)
    cpdef memo_key(self)
    cpdef memo_apply(self, delta, t0, iova)
