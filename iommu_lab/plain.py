"""What a dataclass would give the plain classes that the compiled build makes extension
types (:mod:`iommu_lab.native`: a ``.pxd`` beside their module), from their field names: a
dataclass's generated methods cannot be compiled into one."""

from __future__ import annotations

from typing import Any


def field_values(obj: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    """``obj``'s fields ``names``, in order."""
    return tuple(getattr(obj, name) for name in names)


def field_repr(obj: Any, names: tuple[str, ...]) -> str:
    """``Class(name=value, ...)``, as a dataclass prints itself."""
    return f"{type(obj).__name__}(" + ", ".join(
        f"{name}={value!r}" for name, value in zip(names, field_values(obj, names))) + ")"


def fields_equal(a: Any, b: Any, names: tuple[str, ...]) -> bool:
    """Are ``a`` and ``b`` of one class, with equal fields (a dataclass's ``==``)?"""
    return type(a) is type(b) and field_values(a, names) == field_values(b, names)
