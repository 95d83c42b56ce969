"""Kernel errno-carrying exceptions (include/uapi/asm-generic/errno-base.h values)."""

from __future__ import annotations

import errno as _errno

EINVAL = _errno.EINVAL
EEXIST = _errno.EEXIST
ENOENT = _errno.ENOENT
ENOSPC = _errno.ENOSPC
ERANGE = _errno.ERANGE
ENODEV = _errno.ENODEV
EOPNOTSUPP = _errno.EOPNOTSUPP


class IommuError(OSError):
    """An IOMMU API failure: ``.errno`` is the kernel errno, the message names the bad value.

    Mirrors the negative errno the kernel returns (``-EINVAL``, ``-EEXIST``...). Raising
    one never leaves a domain half-changed: the callers check or unwind first.
    """

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)

    def __str__(self) -> str:  # "[EINVAL] iova 0x1001 is not aligned..."
        return f"[{_errno.errorcode.get(self.errno, self.errno)}] {self.strerror}"


def einval(message: str) -> IommuError:
    """Build an ``-EINVAL`` error."""
    return IommuError(EINVAL, message)
