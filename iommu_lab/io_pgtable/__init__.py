"""io-pgtable (include/linux/io-pgtable.h): page-table formats the drivers share.

``arm`` is io-pgtable-arm.c (ARM LPAE long descriptors, stage 1 and 2); it is the only
format modelled, and the VT-d / AMD / virtio drivers store their leaves in it too.
"""

from .arm import ARM_64_LPAE_S1, ARM_64_LPAE_S2, FlushOps, IoPgtableArm, IoPgtableCfg, check_prot

__all__ = ["ARM_64_LPAE_S1", "ARM_64_LPAE_S2", "FlushOps", "IoPgtableArm", "IoPgtableCfg",
           "check_prot"]
