"""Splitting a count of work items into rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def near_equal_sizes(total: int, size: int) -> list[int]:
    """Split `total` into the fewest near-equal parts of at most `size`."""
    if total <= 0:
        return []
    count = math.ceil(total / size)
    base, extra = divmod(total, count)
    return [base + 1 if i < extra else base for i in range(count)]


def groups(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` in order, in consecutive groups of `size` (the last one may be smaller)."""
    return [items[start : start + size] for start in range(0, len(items), size)]
