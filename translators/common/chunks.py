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


def tapering_sizes(total: int, largest: int, smallest: int, share: int) -> list[int]:
    """Split `total` into parts of `1/share` of what is left, between `smallest` and `largest`:
    large parts first, then smaller and smaller ones, so that slots that finish their last
    large part together also finish together (guided self-scheduling; `share` = 2 per slot)."""
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        size = min(largest, max(smallest, math.ceil(remaining / share)), remaining)
        sizes.append(size)
        remaining -= size
    return sizes
