"""One species-name scheme: a reversible ASCII file key for any species name, and its inverse."""

from __future__ import annotations

import re

KEY = re.compile(r"^(?:[A-Za-z0-9_]|-[0-9a-f]{2})+$")


def species_key(name: str) -> str:
    """The file key of a species name: ASCII letters and digits stay, a space becomes `_`, any
    other character becomes `-` and two hex digits per UTF-8 byte. Reversible (see species_name).
    """
    parts = []
    for char in name:
        if char.isascii() and char.isalnum():
            parts.append(char)
        elif char == " ":
            parts.append("_")
        else:
            parts.extend(f"-{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(parts)


def species_name(key: str) -> str:
    """The species name a key stands for; ValueError if `key` is not a key species_key makes."""
    if not KEY.match(key):
        raise ValueError(f"not a species key: {key!r}")
    data = bytearray()
    position = 0
    while position < len(key):
        char = key[position]
        if char == "-":
            data.append(int(key[position + 1 : position + 3], 16))
            position += 3
        else:
            data.extend(b" " if char == "_" else char.encode("ascii"))
            position += 1
    try:
        name = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"not a species key: {key!r}") from None
    if species_key(name) != key:
        # Only the one spelling species_key writes: two files can never stand for one name.
        raise ValueError(f"not a species key: {key!r}")
    return name
