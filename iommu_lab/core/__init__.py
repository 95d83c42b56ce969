"""Layer 2, the kernel mirror's core: drivers/iommu/iommu.c, include/linux/iommu.h, dma-iommu.c."""
