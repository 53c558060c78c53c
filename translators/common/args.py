"""Numbers as command-line text that lmpy's argparse reads as the number meant."""

from __future__ import annotations

from decimal import Decimal


def number_arg(value: float) -> str:
    """Positional decimal text: argparse takes `-1e-05` for an option, `-0.00001` for a number."""
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
