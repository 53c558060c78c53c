"""Recognise what an uploaded file is from its content (its name is only a hint)."""

from pathlib import Path

from django.conf import settings

from . import inspection
from .models import Dataset

Format = Dataset.Format

# The stored file's extension matters: lmpy picks a tree's schema from it.
EXTENSIONS = {
    Format.LMM: ".lmm",
    Format.CSV: ".csv",
    Format.NEXUS: ".nex",
    Format.NEWICK: ".tre",
    Format.GEOTIFF: ".tif",
    Format.SHAPEFILE_ZIP: ".zip",
    Format.DWCA: ".zip",
    Format.ZIP: ".zip",
    Format.JSON: ".json",
    Format.TEXT: ".txt",
    Format.UNKNOWN: ".bin",
}

MEDIA_TYPES = {
    ".csv": "text/csv",
    ".txt": "text/plain",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".html": "text/html",
    ".tif": "image/tiff",
    ".zip": "application/zip",
    ".lmm": "application/vnd.lmpy.matrix+zip",
    ".nex": "text/plain",
    ".tre": "text/plain",
    ".log": "text/plain",
    ".stdout": "text/plain",
    ".stderr": "text/plain",
}


def media_type(path: str | Path) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


ZIP_KINDS = {
    "lmm": Format.LMM,
    "dwca": Format.DWCA,
    "shapefiles": Format.SHAPEFILE_ZIP,
    "zip": Format.ZIP,
    "unreadable": Format.UNKNOWN,
}


def _zip_format(path: Path) -> str:
    # A central directory can list millions of members: it is read in the inspection subprocess,
    # which also refuses members that climb out, links and bombs (BadContent).
    limits = inspection.Limits.from_settings(settings)
    [outcome] = inspection.run_isolated([inspection.Check("zip", str(path), {})], limits)
    if outcome.error:
        raise inspection.BadContent(outcome.error)
    return ZIP_KINDS[outcome.facts["kind"]]


def _text_format(head: bytes, suffix: str) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut in the middle of a multi-byte character at the end of the sample is fine.
        if exc.start < len(head) - 4:
            return Format.UNKNOWN
        text = head[: exc.start].decode("utf-8")
    text = text.lstrip("\ufeff").lstrip()
    if "\x00" in text:
        return Format.UNKNOWN
    if text[:6].upper() == "#NEXUS":
        return Format.NEXUS
    if text.startswith("(") and suffix not in {".csv", ".txt"}:
        return Format.NEWICK
    if text.startswith(("{", "[")) and suffix in {".json", ".geojson", ""}:
        return Format.JSON
    first_line = text.splitlines()[0] if text else ""
    if suffix in {".csv", ".tsv"} or ("," in first_line or "\t" in first_line):
        return Format.CSV
    return Format.TEXT


def detect(path: Path, original_name: str) -> str:
    """The format of the file at `path`; `original_name` only breaks ties.

    Raises inspection.BadContent for a zip archive that must not be stored."""
    suffix = Path(original_name).suffix.lower()
    with path.open("rb") as handle:
        head = handle.read(65536)
    if not head:
        return Format.UNKNOWN
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_format(path)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return Format.GEOTIFF
    return _text_format(head, suffix)
