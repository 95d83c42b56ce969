"""Show the outcome of a call that may be refused, as one line of text.

Notebooks use it instead of try/except blocks (a raised error would stop JupyterLab's
"Run All" at that cell): ``views.attempt(il.iommu_map, dom, 0x1001, 0x1000, 0x1000, 1)``
→ ``"refused: [EINVAL] iova 0x1001 is not aligned ..."``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import IommuError


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """``"ok: <result>"`` or ``"refused: <error>"`` (IommuError / ValueError only)."""
    try:
        result = fn(*args, **kwargs)
    except (IommuError, ValueError) as exc:
        return f"refused: {exc}"
    return "ok" if result is None else f"ok: {result!r}"
