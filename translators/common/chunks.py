"""Splitting a count of work items into rules."""

from __future__ import annotations

import math


def near_equal_sizes(total: int, size: int) -> list[int]:
    """Split `total` into the fewest near-equal parts of at most `size`."""
    if total <= 0:
        return []
    count = math.ceil(total / size)
    base, extra = divmod(total, count)
    return [base + 1 if i < extra else base for i in range(count)]
