"""Shared fixtures: a snapshot of everything an IOMMU API error must leave untouched; a
strategy registry restored after each test that registers strategies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


def _domain_state(dom: Any) -> tuple:
    """Page table leaves, counters, clock, IOTLB contents and trace length of ``dom``."""
    return (list(dom.pgtable.leaves()), dom.stats(), dom.clock.now,
            [(e.asid, e.iova, e.pgsize, e.paddr, e.stale_since)
             for e in dom.hw.iotlb.snapshot()],
            len(dom.trace))


@pytest.fixture
def domain_state() -> Callable[[Any], tuple]:
    """``domain_state(dom)``: compare before/after an error for exact equality."""
    return _domain_state


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """The test leaves the strategy registry as it found it (``pytestmark =
    pytest.mark.usefixtures("clean_registry")`` in modules that register strategies)."""
    from iommu_lab.drivers.registry import STRATEGIES

    before = dict(STRATEGIES)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(before)
