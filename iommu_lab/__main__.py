"""``python -m iommu_lab``."""

from .cli import main

raise SystemExit(main())
