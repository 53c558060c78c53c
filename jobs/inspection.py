"""Look inside input files before anything runs, so that a bad file is a 400, not a failed job.

The checks read headers and streams under explicit limits and never trust a size a file declares.
The web process runs them through `run_isolated`: in a subprocess (jobs/inspect_worker.py) with a
memory cap and a timeout, so a hostile file costs that process, not the web.
"""

import codecs
import csv
import io
import json
import logging
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import defusedxml.ElementTree as ElementTree
import numpy as np

from translators.occurrence_cleaning.scripts.occurrences import NameMapError, parse_name_map

log = logging.getLogger(__name__)

CSV_SNIFF_ROWS = 200
# A CSV line longer than this is refused before the csv module buffers it (its own field limit,
# 128 KiB, then says "does not parse" for shorter ones).
CSV_LINE_MAX = 1024**2
# lmpy's headers.json: site coordinates and species names, a few MB for the largest PAM allowed.
HEADERS_MAX_BYTES = 64 * 1024**2
# A name map is read whole (JSON must be): a million names is a few tens of MB.
NAME_MAP_MAX_BYTES = 256 * 1024**2
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF and BigTIFF
# GDAL as the inspection runs it: rasters by header only, no sidecar files looked for or written
# (.aux.xml, .ovr, world files), no network, one thread, a small block cache.
GDAL_OPTIONS = {
    "GDAL_PAM_ENABLED": "NO",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_GEOREF_SOURCES": "INTERNAL",
    "GDAL_HTTP_TIMEOUT": "1",
    "GDAL_HTTP_MAX_RETRY": "0",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".none",
    "GDAL_NUM_THREADS": "1",
    "GDAL_CACHEMAX": "16",
}
RASTER_DRIVERS = ["GTiff"]

# Which limits each kind of input (InputSpec.content) is held to.
LIMITS_BY_CONTENT = {
    "pam": ("pam_cells", "csv_rows", "zip_members", "zip_unpacked_bytes"),
    "tree": ("tree_tips",),
    "occurrences": ("csv_rows", "zip_members", "zip_unpacked_bytes"),
    "dwca": ("zip_members", "zip_unpacked_bytes"),
    "raster": ("raster_pixels", "raster_bands"),
    "shapefiles": ("zip_members", "zip_unpacked_bytes"),
    "name-map": ("csv_rows",),
}


class BadContent(ValueError):
    """The file is not what the input needs; the message says why, for the user."""


class Unreadable(BadContent):
    """Not a zip archive that can be read at all."""


@dataclass(frozen=True)
class Limits:
    """What an input may hold, and what inspecting it may cost (see settings.py)."""

    pam_cells: int
    tree_tips: int
    raster_pixels: int
    raster_bands: int
    csv_rows: int
    zip_members: int
    zip_unpacked_bytes: int
    inspection_memory_bytes: int
    inspection_seconds: int

    @classmethod
    def from_settings(cls, settings) -> "Limits":
        return cls(
            pam_cells=settings.MAX_PAM_CELLS,
            tree_tips=settings.MAX_TREE_TIPS,
            raster_pixels=settings.MAX_RASTER_PIXELS,
            raster_bands=settings.MAX_RASTER_BANDS,
            csv_rows=settings.MAX_CSV_ROWS,
            zip_members=settings.MAX_ZIP_MEMBERS,
            zip_unpacked_bytes=settings.MAX_ZIP_UNPACKED,
            inspection_memory_bytes=settings.INSPECT_MEMORY_BYTES,
            inspection_seconds=settings.INSPECT_SECONDS,
        )


# ---------------------------------------------------------------------------------------------
# Zip archives


def _declared_members(path: Path) -> int:
    """The member count the end record claims, read before zipfile builds an object per member
    (a central directory can list millions). 0 when there is no end record."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        tail_size = min(size, 22 + 65535)
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) < at + 12:
            return 0
        entries = int.from_bytes(tail[at + 10 : at + 12], "little")
        if entries == 0xFFFF and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
            handle.seek(int.from_bytes(tail[at - 12 : at - 4], "little"))
            record = handle.read(40)
            if record[:4] == b"PK\x06\x06" and len(record) == 40:
                entries = int.from_bytes(record[32:40], "little")
        return entries


def check_zip_members(path: Path, *, limits: Limits) -> list[zipfile.ZipInfo]:
    """Refuse archives that would write outside their folder, links, and bombs."""
    if _declared_members(path) > limits.zip_members:
        raise BadContent(f"the archive holds more than {limits.zip_members} members")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise Unreadable(f"not a readable zip archive ({exc})") from None
    if len(members) > limits.zip_members:
        raise BadContent(f"the archive holds more than {limits.zip_members} members")
    unpacked = 0
    for member in members:
        name = member.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or (parts and ":" in parts[0]):
            raise BadContent(f"the archive member {name!r} has an absolute path")
        if ".." in parts:
            raise BadContent(f"the archive member {name!r} climbs out of its folder ('..')")
        if "\x00" in name:
            raise BadContent("an archive member name holds a NUL byte")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise BadContent(f"the archive member {name!r} is a symbolic link")
        unpacked += member.file_size
    if unpacked > limits.zip_unpacked_bytes:
        raise BadContent(f"the archive would unpack to more than {limits.zip_unpacked_bytes} bytes")
    return members


def zip_kind(path: Path, *, limits: Limits) -> dict:
    """What a zip upload holds by its member names ("lmm", "dwca", "shapefiles", "zip"), or
    "unreadable"; BadContent for members that climb out, links and bombs."""
    try:
        members = check_zip_members(path, limits=limits)
    except Unreadable:
        return {"kind": "unreadable"}
    names = {PurePosixPath(info.filename) for info in members}
    base_names = {name.name.lower() for name in names}
    if {"headers.json", "data.npz"} <= base_names:
        return {"kind": "lmm"}
    if "meta.xml" in base_names:
        return {"kind": "dwca"}
    if ".shp" in {name.suffix.lower() for name in names}:
        return {"kind": "shapefiles"}
    return {"kind": "zip"}


class _Capped(io.RawIOBase):
    """A read-only stream that refuses to give more than `cap` bytes of `source`: a member's
    real size, not the one its archive declares."""

    def __init__(self, source, cap: int, what: str):
        self.source, self.cap, self.what, self.count = source, cap, what, 0

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.source.close()
        super().close()

    def readinto(self, buffer) -> int:
        data = self.source.read(min(len(buffer), self.cap + 1 - self.count))
        self.count += len(data)
        if self.count > self.cap:
            raise BadContent(f"{self.what} unpacks to more than {self.cap} bytes")
        buffer[: len(data)] = data
        return len(data)


def _member_stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> _Capped:
    if info.file_size > cap:
        raise BadContent(f"{info.filename} unpacks to more than {cap} bytes")
    return _Capped(archive.open(info), cap, info.filename)


def _read_exactly(stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _drain(stream) -> int:
    """Read `stream` to its end; its length."""
    while stream.read(1024**2):
        pass
    return stream.count


# ---------------------------------------------------------------------------------------------
# Matrices (PAMs)


def check_pam(path: Path, *, limits: Limits) -> dict:
    """An lmpy matrix: headers.json and data.npz holding a 2-D numeric array the headers fit.

    The cell count comes from the array's .npy header, read from the member stream: the
    array itself is never loaded."""
    if path.suffix == ".csv":
        return _check_csv_matrix(path, limits=limits)
    members = {info.filename: info for info in check_zip_members(path, limits=limits)}
    for name in ("headers.json", "data.npz"):
        if name not in members:
            raise BadContent(f"not an lmpy matrix: it has no {name}")
    # A data.npz no larger than the largest allowed matrix of float64 would be, stored.
    npz_cap = min(limits.zip_unpacked_bytes, limits.pam_cells * 8 + 1024**2)
    try:
        with zipfile.ZipFile(path) as archive:
            with _member_stream(archive, members["headers.json"], HEADERS_MAX_BYTES) as stream:
                headers = json.loads(stream.read())
            with tempfile.TemporaryFile() as npz:
                with _member_stream(archive, members["data.npz"], npz_cap) as stream:
                    while chunk := stream.read(1024**2):
                        npz.write(chunk)
                npz.seek(0)
                shape, dtype, data_bytes = _npy_header(npz)
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
    ) as exc:
        if isinstance(exc, BadContent):
            raise
        raise BadContent(f"not an lmpy matrix ({type(exc).__name__}: {exc})") from None
    if len(shape) != 2 or 0 in shape:
        raise BadContent(f"a PAM must be a non-empty 2-D matrix; this one has shape {shape}")
    if not np.issubdtype(dtype, np.number) and dtype != np.dtype(bool):
        raise BadContent(f"a PAM must hold numbers, not {dtype}")
    cells = math.prod(shape)
    if cells > limits.pam_cells:
        raise BadContent(
            f"the PAM has {cells} cells ({shape[0]} sites x {shape[1]} species), over the limit "
            f"of {limits.pam_cells} cells"
        )
    if data_bytes < cells * dtype.itemsize:
        raise BadContent("not an lmpy matrix: data.npz holds less data than its shape says")
    # lmpy writes {"headers": {"0": ..., "1": ...}, "metadata": ...}; older files the axes alone.
    axes = headers.get("headers", headers) if isinstance(headers, dict) else None
    for axis in (0, 1):
        labels = axes.get(str(axis)) if isinstance(axes, dict) else None
        if labels is not None and (not isinstance(labels, list) or len(labels) != shape[axis]):
            count = len(labels) if isinstance(labels, list) else "no list of"
            raise BadContent(f"axis {axis} has {shape[axis]} entries but {count} headers")
    return {"cells": cells, "shape": list(shape)}


def _npy_header(npz) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data length of the array numpy.load would read from this .npz (its first
    member), from the .npy header alone."""
    with zipfile.ZipFile(npz) as inner:
        infos = inner.infolist()
        if not infos:
            raise BadContent("not an lmpy matrix: data.npz holds no array")
        first = infos[0]
        with inner.open(first) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise BadContent(f"not an lmpy matrix: .npy format {version} is not supported")
            header_size = stream.tell()
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise BadContent(f"not an lmpy matrix: shape {shape}")
    return tuple(shape), dtype, first.file_size - header_size


def _check_csv_matrix(path: Path, *, limits: Limits) -> dict:
    width, sites, cells = 0, 0, 0
    for number, row in _csv_stream(path, limits=limits):
        if number == 1:
            width = len(row)
            if width < 4:
                break
            continue
        if len(row) != width:
            raise BadContent(f"row {number} has {len(row)} fields, the header {width}")
        try:
            [float(value) for value in row[1:]]
        except ValueError:
            raise BadContent(f"row {number} holds a value that is not a number") from None
        sites += 1
        cells += width - 3
        if cells > limits.pam_cells:
            raise BadContent(
                f"the PAM has more than {limits.pam_cells} cells (row {number}, "
                f"{width - 3} species)"
            )
    if width < 4 or sites < 1:
        raise BadContent("a CSV PAM needs a header row and site rows of id, x, y, species...")
    return {"cells": cells, "shape": [sites, width - 3]}


# ---------------------------------------------------------------------------------------------
# CSV


def _csv_lines(path: Path) -> Iterator[str]:
    """The file's lines as text, checked as UTF-8 without NULs, none longer than CSV_LINE_MAX."""
    offset = 0
    with path.open("rb") as handle:
        while line := handle.readline(CSV_LINE_MAX + 1):
            if len(line) > CSV_LINE_MAX:
                raise BadContent(f"the CSV has a line longer than {CSV_LINE_MAX} bytes")
            if b"\x00" in line:
                raise BadContent("the CSV holds NUL bytes")
            try:
                # UTF-8 never holds a newline byte inside a character: lines decode alone.
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadContent(f"the CSV is not UTF-8 text (byte {offset + exc.start})") from None
            if offset == 0:
                text = text.removeprefix(codecs.BOM_UTF8.decode())
            offset += len(line)
            yield text


def _csv_stream(path: Path, *, limits: Limits) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) of each row, counting rows as they stream past the limit."""
    number = 0
    try:
        for number, row in enumerate(csv.reader(_csv_lines(path)), start=1):
            if number > limits.csv_rows:
                raise BadContent(f"the CSV has more than {limits.csv_rows} rows")
            yield number, row
    except csv.Error as exc:
        raise BadContent(f"the CSV does not parse: {exc}") from None


def _coordinate(value: str, column: str, number: int, low: float, high: float) -> None:
    try:
        number_value = float(value)
    except ValueError:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise BadContent(f"row {number}: {column!r} is not a number ({shown!r})") from None
    if not math.isfinite(number_value):
        raise BadContent(f"row {number}: {column!r} is not a finite number ({value!r})")
    if not low <= number_value <= high:
        raise BadContent(
            f"row {number}: {column!r} is {value}, outside {low:g} to {high:g} (degrees; "
            "records in another projection need a coordinate_conversion step, or `epsg`)"
        )


def check_occurrences(
    path: Path, columns: dict[str, str], *, limits: Limits, attributes=(), geographic=True
) -> dict:
    """A CSV whose header names the requested columns (outer spaces aside), at least one
    record, and every record's x and y a finite number (longitude and latitude in range when
    `geographic`). Facts: rows, and which of `attributes` are columns."""
    if path.suffix == ".zip":
        return check_dwca(path, limits=limits, attributes=attributes)
    positions: dict[str, int] = {}
    ranges = {"x_column": (-180.0, 180.0), "y_column": (-90.0, 90.0)}
    if not geographic:
        ranges = {key: (-math.inf, math.inf) for key in ranges}
    header: list[str] = []
    number = rows = 0
    for number, row in _csv_stream(path, limits=limits):
        if number == 1:
            # The workers read the column names with outer spaces removed.
            header = [name.strip() for name in row]
            missing = [f"{key}={name!r}" for key, name in columns.items() if name not in header]
            if missing:
                shown = ", ".join(header[:20])
                raise BadContent(f"the CSV has no column {', '.join(missing)} (it has: {shown})")
            positions = {key: header.index(name) for key, name in columns.items()}
            checking = "x_column" in positions and "y_column" in positions
            at_x, at_y = positions.get("x_column", 0), positions.get("y_column", 0)
            (low_x, high_x), (low_y, high_y) = ranges["x_column"], ranges["y_column"]
            continue
        if len(row) <= 1 and not "".join(row).strip():
            continue  # a blank line: the tools skip it
        rows += 1
        if not checking:
            continue
        # The common case in one step (a million rows in ~2 s here); the slow path words it.
        try:
            x, y = float(row[at_x]), float(row[at_y])
            if low_x <= x <= high_x and low_y <= y <= high_y:
                continue
        except (ValueError, IndexError):
            pass
        for key, (low, high) in ranges.items():
            if positions[key] >= len(row):
                raise BadContent(
                    f"row {number} has {len(row)} fields, too few for {columns[key]!r}"
                )
            _coordinate(row[positions[key]], columns[key], number, low, high)
    if number == 0:
        raise BadContent("the CSV is empty")
    if rows == 0:
        raise BadContent("the CSV has a header but no records")
    return {"rows": rows, "attributes": sorted(set(attributes) & set(header))}


def check_name_map(path: Path, *, limits: Limits) -> dict:
    """A name map in one of lmpy's forms, read exactly as the workers read it."""
    with path.open("rb") as handle:
        data = handle.read(NAME_MAP_MAX_BYTES + 1)
    if len(data) > NAME_MAP_MAX_BYTES:
        raise BadContent(f"the name map is larger than {NAME_MAP_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadContent(f"the name map is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise BadContent("the name map holds NUL bytes")
    try:
        name_map = parse_name_map(text)
    except NameMapError as exc:
        raise BadContent(str(exc)) from None
    if len(name_map) > limits.csv_rows:
        raise BadContent(f"the name map has more than {limits.csv_rows} names")
    unresolved = sum(1 for accepted in name_map.values() if accepted is None)
    return {"names": len(name_map), "unresolved": unresolved}


# The Darwin Core text namespace, as lmpy's DwCA reader looks for its elements.
DWC_TEXT = "{http://rs.tdwg.org/dwc/text/}"
OCCURRENCE_ROW_TYPE = "http://rs.tdwg.org/dwc/terms/Occurrence"
META_MAX_BYTES = 4 * 1024**2


def _dwca_core(meta: bytes) -> tuple[dict, dict[str, dict]]:
    """The occurrence core of a meta.xml as lmpy reads it (the core, or iDigBio's occurrence
    extension): its attributes and its fields by term name."""
    try:
        root = ElementTree.fromstring(meta)
    except Exception as exc:  # defusedxml's refusals and expat's errors alike
        raise BadContent(f"meta.xml does not parse as XML: {str(exc)[:200]}") from None
    core = root.find(f"{DWC_TEXT}core")
    if core is None:
        for extension in root.findall(f"{DWC_TEXT}extension"):
            if "rowType" not in extension.attrib:
                raise BadContent("meta.xml has an extension without a rowType")
            if extension.attrib["rowType"] == OCCURRENCE_ROW_TYPE:
                core = extension
                break
    if core is None:
        raise BadContent(
            "meta.xml has no core (and no occurrence extension): not an occurrence archive"
        )
    files = core.find(f"{DWC_TEXT}files")
    locations = files.findall(f"{DWC_TEXT}location") if files is not None else []
    if not locations or not (locations[0].text or "").strip():
        raise BadContent("meta.xml's core names no data file (files/location)")
    fields: dict[str, dict] = {}
    for element in core.findall(f"{DWC_TEXT}field"):
        term = element.attrib.get("term")
        if not term:
            raise BadContent("meta.xml has a core field without a term")
        index = element.attrib.get("index")
        if index is not None and not index.strip().isdigit():
            raise BadContent(f"meta.xml gives the field {term} the index {index!r}")
        fields[term.split("/")[-1] if term.find("/") > 0 else term] = dict(element.attrib)
    for element in core.findall(f"{DWC_TEXT}id"):
        fields["id"] = dict(element.attrib)
    attributes = dict(core.attrib)
    attributes["location"] = locations[0].text
    return attributes, fields


def check_dwca(path: Path, *, limits: Limits, attributes=()) -> dict:
    """A Darwin Core Archive the tools can read: meta.xml at its root describing an occurrence
    core with scientificName and coordinates (decimalLongitude and decimalLatitude, or
    iDigBio's geoPoint), its data file present, in its declared encoding, with records."""
    members = check_zip_members(path, limits=limits)
    by_name = {m.filename: m for m in members}
    if "meta.xml" not in by_name:
        if any(PurePosixPath(m.filename).name.lower() == "meta.xml" for m in members):
            raise BadContent(
                "not a Darwin Core Archive the tools read: meta.xml is not at its root"
            )
        raise BadContent("not a Darwin Core Archive: no meta.xml")
    try:
        with zipfile.ZipFile(path) as archive:
            with _member_stream(archive, by_name["meta.xml"], META_MAX_BYTES) as stream:
                meta = stream.read()
            core, fields = _dwca_core(meta)
            lacking = [term for term in ("scientificName",) if term not in fields]
            if not {"decimalLongitude", "decimalLatitude"} <= set(fields) and (
                "geoPoint" not in fields
            ):
                lacking.append("decimalLongitude and decimalLatitude (or geoPoint)")
            if lacking:
                raise BadContent(f"the archive's core has no {' and no '.join(lacking)} field")
            location = core["location"].strip()
            if location not in by_name:
                raise BadContent(f"the archive lacks its core data file {location!r}")
            encoding = core.get("encoding", "UTF-8")
            try:
                decoder = codecs.getincrementaldecoder(encoding)()
            except LookupError:
                raise BadContent(f"meta.xml names an unknown encoding {encoding!r}") from None
            skip = core.get("ignoreHeaderLines", "0").strip()
            if not skip.isdigit():
                raise BadContent(f"meta.xml's ignoreHeaderLines is {skip!r}, not a count")
            lines = 0
            budget = limits.zip_unpacked_bytes
            with _member_stream(archive, by_name[location], budget) as stream:
                try:
                    while chunk := stream.read(1024**2):
                        lines += decoder.decode(chunk).count("\n")
                    tail = decoder.decode(b"", final=True)
                except UnicodeDecodeError as exc:
                    raise BadContent(
                        f"the core data file {location!r} is not {encoding} text ({exc.reason})"
                    ) from None
                lines += 1 if tail.strip() else 0
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise BadContent(f"a member does not unpack ({type(exc).__name__}: {exc})") from None
    records = lines - int(skip)
    if records < 1:
        raise BadContent(f"the core data file {location!r} holds no records")
    return {
        "members": len(members),
        "records": records,
        "attributes": sorted(set(attributes) & set(fields)),
    }


# ---------------------------------------------------------------------------------------------
# Trees

_TREE_SPECIAL = re.compile(rb"[',\[]")


def _tip_bound(path: Path, stop: int) -> int:
    """Commas outside quoted labels and [comments], plus one: a tree's tips (each comma parts
    two siblings), or all its trees' tips, without parsing. Stops counting past `stop`."""
    commas, closing = 0, None
    with path.open("rb") as handle:
        while chunk := handle.read(1024**2):
            at = 0
            while at < len(chunk):
                if closing is not None:
                    end = chunk.find(closing, at)
                    if end < 0:
                        break
                    closing, at = None, end + 1
                    continue
                match = _TREE_SPECIAL.search(chunk, at)
                if match is None:
                    break
                at = match.end()
                if match[0] == b",":
                    commas += 1
                    if commas >= stop:
                        return commas + 1
                else:
                    closing = b"'" if match[0] == b"'" else b"]"
    return commas + 1


def check_tree(path: Path, *, limits: Limits) -> dict:
    import dendropy  # a second or so to import; only the inspection subprocess needs it

    schema = {".nex": "nexus", ".tre": "newick"}.get(path.suffix, "newick")
    # A nexus file's translate table lists each tip once more, with commas.
    bound = limits.tree_tips * (2 if schema == "nexus" else 1) + 1
    if _tip_bound(path, stop=bound) > bound:
        raise BadContent(f"the tree has more than {limits.tree_tips} tips")
    try:
        tree = dendropy.Tree.get(path=str(path), schema=schema)
    except Exception as exc:  # dendropy raises many kinds of errors for bad input
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadContent(f"the tree does not parse as {schema}: {message[:300]}") from None
    tips = tree.leaf_nodes()
    if len(tips) > limits.tree_tips:
        raise BadContent(f"the tree has {len(tips)} tips, over the limit of {limits.tree_tips}")
    if len(tips) < 2:
        raise BadContent("the tree has fewer than two tips")
    if any(node.taxon is None for node in tips):
        raise BadContent("the tree has unlabelled tips")
    return {"tips": len(tips)}


# ---------------------------------------------------------------------------------------------
# Rasters and shapefiles


def check_raster(path: Path, *, limits: Limits) -> dict:
    """A GeoTIFF by its magic, opened by GDAL's GTiff driver alone, sized from its header."""
    from osgeo import gdal  # GDAL is loaded by the inspection subprocess only

    name = str(path)
    # A /vsi path would reach the network or another archive; a relative or prefixed one
    # ("GTIFF_DIR:", "<VRTDataset") another driver's syntax.
    if not name.startswith("/") or name.startswith("/vsi") or "\n" in name:
        raise BadContent("refusing to open a raster by that name")
    with path.open("rb") as handle:
        if handle.read(4) not in TIFF_MAGIC:
            raise BadContent("not a TIFF file (by its first bytes)")
    gdal.UseExceptions()
    try:
        dataset = gdal.OpenEx(
            name,
            gdal.OF_RASTER | gdal.OF_READONLY,
            allowed_drivers=RASTER_DRIVERS,
            sibling_files=[],
        )
    except RuntimeError as exc:
        raise BadContent(f"GDAL cannot open the raster: {str(exc)[:300]}") from None
    if dataset is None or dataset.RasterCount < 1:
        raise BadContent("GDAL cannot read a raster band from the file")
    width, height, bands = dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount
    pixels = width * height
    if pixels > limits.raster_pixels:
        raise BadContent(
            f"the raster has {pixels} pixels ({width} x {height}), over the limit of "
            f"{limits.raster_pixels}"
        )
    if bands > limits.raster_bands:
        raise BadContent(f"the raster has {bands} bands, over the limit of {limits.raster_bands}")
    return {"pixels": pixels, "bands": bands}


SHAPE_TYPES = {0, 1, 3, 5, 8, 11, 13, 15, 18, 21, 23, 25, 28, 31}
DBF_VERSIONS = {0x02, 0x03, 0x04, 0x05, 0x30, 0x31, 0x32, 0x43, 0x63, 0x83, 0x8B, 0x8E, 0xCB, 0xF5}


def _check_shape_header(name: str, stream: _Capped, index: bool) -> None:
    """.shp and .shx: file code 9994 (big-endian), version 1000, a known shape type, and the
    file length in the header equal to the member's real length."""
    header = _read_exactly(stream, 100)
    if len(header) < 100 or int.from_bytes(header[0:4], "big") != 9994:
        raise BadContent(f"{name} is not a shapefile (no file code 9994)")
    if int.from_bytes(header[28:32], "little") != 1000:
        raise BadContent(f"{name} is not a shapefile (version is not 1000)")
    if int.from_bytes(header[32:36], "little") not in SHAPE_TYPES:
        raise BadContent(f"{name} has an unknown shape type")
    declared = int.from_bytes(header[24:28], "big") * 2
    size = _drain(stream)
    if declared != size:
        raise BadContent(f"{name} is {size} bytes long but its header says {declared}")
    if index and (size - 100) % 8:
        raise BadContent(f"{name} is not a shapefile index (records of 8 bytes)")


def _check_dbf_header(name: str, stream: _Capped) -> None:
    """A dBASE table: a known version byte, field descriptors that add up to the record length,
    and header plus records as long as the member really is."""
    head = _read_exactly(stream, 32)
    if len(head) < 32 or head[0] not in DBF_VERSIONS:
        raise BadContent(f"{name} is not a dBASE table (version byte)")
    records = int.from_bytes(head[4:8], "little")
    header_size = int.from_bytes(head[8:10], "little")
    record_size = int.from_bytes(head[10:12], "little")
    if header_size < 33 or record_size < 1:
        raise BadContent(f"{name} is not a dBASE table (header or record length)")
    rest = _read_exactly(stream, header_size - 32)
    width, at = 1, 0  # one deletion-flag byte starts each record
    while at < len(rest) and rest[at] != 0x0D:
        if at + 32 > len(rest):
            raise BadContent(f"{name} is not a dBASE table (field descriptors)")
        width += rest[at + 16]
        at += 32
    if at >= len(rest) or width != record_size:
        raise BadContent(f"{name} is not a dBASE table (fields do not make up a record)")
    size = _drain(stream)
    expected = header_size + records * record_size
    # Writers end the table with an optional end-of-file byte (0x1A).
    if size not in (expected, expected + 1):
        raise BadContent(f"{name} is {size} bytes long but its header says {expected}")


def _is_resource_fork(name: PurePosixPath) -> bool:
    # macOS zips carry "__MACOSX/._a.shp" resource forks; the hypotheses rule skips them too.
    return "__MACOSX" in name.parts or name.name.startswith("._")


def check_shapefiles(path: Path, *, limits: Limits) -> dict:
    """Every .shp has its .shx and .dbf; each is what its name says, by content."""
    members = check_zip_members(path, limits=limits)
    by_name = {
        PurePosixPath(m.filename).as_posix().lower(): m
        for m in members
        if not _is_resource_fork(PurePosixPath(m.filename)) and not m.is_dir()
    }
    shapes = [name for name in by_name if name.endswith(".shp")]
    if not shapes:
        raise BadContent("the zip holds no shapefile (.shp)")
    for shape in shapes:
        stem = shape[: -len(".shp")]
        lacking = [ext for ext in (".shx", ".dbf") if stem + ext not in by_name]
        if lacking:
            raise BadContent(f"{shape} lacks its {' and '.join(lacking)} file")
    budget = limits.zip_unpacked_bytes
    try:
        with zipfile.ZipFile(path) as archive:
            for name, info in sorted(by_name.items()):
                suffix = PurePosixPath(name).suffix
                if suffix not in {".shp", ".shx", ".dbf"}:
                    continue
                with _member_stream(archive, info, budget) as stream:
                    if suffix == ".dbf":
                        _check_dbf_header(info.filename, stream)
                    else:
                        _check_shape_header(info.filename, stream, index=suffix == ".shx")
                    budget -= stream.count
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise BadContent(f"a member does not unpack ({type(exc).__name__}: {exc})") from None
    return {"shapefiles": len(shapes)}


# ---------------------------------------------------------------------------------------------
# Running the checks


def _columns(params: dict) -> dict[str, str]:
    return {
        key: value
        for key, value in params.items()
        if key in {"species_column", "x_column", "y_column"} and isinstance(value, str)
    }


def _wranglers(params: dict) -> list[dict]:
    wranglers = params.get("wranglers")
    return [w for w in wranglers if isinstance(w, dict)] if isinstance(wranglers, list) else []


def filtered_attributes(params: dict) -> list[str]:
    """The record attributes a request's attribute_filter steps look at."""
    return [
        w["attribute"]
        for w in _wranglers(params)
        if w.get("type") == "attribute_filter" and isinstance(w.get("attribute"), str)
    ]


def _geographic(params: dict) -> bool:
    """Whether the request reads x and y as longitude and latitude (EPSG:4326)."""
    if any(w.get("type") == "coordinate_conversion" for w in _wranglers(params)):
        return False
    return params.get("epsg", 4326) == 4326


def _check_occurrences(path: Path, params: dict, limits: Limits) -> dict:
    return check_occurrences(
        path,
        _columns(params),
        limits=limits,
        attributes=filtered_attributes(params),
        geographic=_geographic(params),
    )


CHECKS = {
    "pam": lambda path, params, limits: check_pam(path, limits=limits),
    "tree": lambda path, params, limits: check_tree(path, limits=limits),
    "occurrences": _check_occurrences,
    "dwca": lambda path, params, limits: check_dwca(path, limits=limits),
    "raster": lambda path, params, limits: check_raster(path, limits=limits),
    "shapefiles": lambda path, params, limits: check_shapefiles(path, limits=limits),
    "name-map": lambda path, params, limits: check_name_map(path, limits=limits),
    "zip": lambda path, params, limits: zip_kind(path, limits=limits),
}


@dataclass(frozen=True)
class Check:
    """One file to look at: `content` is an InputSpec.content or "zip" (an upload's members)."""

    content: str
    path: str
    params: dict


@dataclass(frozen=True)
class Outcome:
    """What a check found (`facts`, e.g. a PAM's cells) or why the file is refused (`error`)."""

    facts: dict
    error: str = ""


def run_check(check: Check, limits: Limits) -> Outcome:
    """Run one check here, in this process; the inspection subprocess calls this."""
    try:
        facts = CHECKS[check.content](Path(check.path), check.params, limits)
    except BadContent as exc:
        return Outcome(facts={}, error=str(exc)[:1000])
    except MemoryError:
        return Outcome(facts={}, error=_memory_message(limits))
    except RecursionError:
        return Outcome(facts={}, error="the file is nested too deeply to inspect")
    except Exception as exc:
        # A library's own error on a malformed file, or our bug: refused, and logged with the
        # traceback by the web process (it reads the subprocess's stderr).
        log.exception("inspection of %s (%s) failed", check.path, check.content)
        return Outcome(facts={}, error=f"the file could not be inspected ({type(exc).__name__})")
    return Outcome(facts=facts or {})


def _memory_message(limits: Limits) -> str:
    mib = limits.inspection_memory_bytes // 1024**2
    return f"inspecting the file needs more than the {mib} MiB allowed"


def _child_env(limits: Limits) -> dict[str, str]:
    """The subprocess's whole environment: no secrets (SECRET_KEY, DATABASE_URL...) pass."""
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",  # each thread would reserve address space under the cap
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": tempfile.gettempdir(),
        **GDAL_OPTIONS,
    }
    for name in ("GDAL_DATA", "PROJ_DATA", "PROJ_LIB"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def run_isolated(checks: list[Check], limits: Limits) -> list[Outcome | None]:
    """Run `checks` in one inspection subprocess: capped at `limits.inspection_memory_bytes`,
    killed after `limits.inspection_seconds` for all of them together.

    One outcome a check, in order; None for checks not reached because the time ran out (the
    one running then is refused, named as too slow to inspect)."""
    if not checks:
        return []
    request = json.dumps(
        {"limits": asdict(limits), "checks": [asdict(check) for check in checks]}
    ).encode()
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "jobs.inspect_worker"]
    with tempfile.TemporaryFile() as errors:
        try:
            finished = subprocess.run(
                command,
                input=request,
                stdout=subprocess.PIPE,
                stderr=errors,
                cwd=root,
                env=_child_env(limits),
                timeout=limits.inspection_seconds,
                check=False,
            )
            output, code, timed_out = finished.stdout, finished.returncode, False
        except subprocess.TimeoutExpired as exc:
            output, code, timed_out = exc.stdout or b"", None, True
        errors.seek(max(0, errors.seek(0, os.SEEK_END) - 4000))
        stderr = errors.read().decode(errors="replace")
    if stderr.strip():
        # Tracebacks of checks that failed unexpectedly (refused as "could not be inspected").
        log.warning("inspection subprocess stderr: %s", stderr[-2000:])
    outcomes: list[Outcome | None] = []
    for line in output.decode(errors="replace").splitlines()[: len(checks)]:
        try:
            answer = json.loads(line)
            outcomes.append(Outcome(facts=answer.get("facts", {}), error=answer.get("error", "")))
        except (ValueError, AttributeError):
            break
    if len(outcomes) < len(checks):
        # The check that was running when the subprocess died or ran out of time.
        culprit = checks[len(outcomes)]
        if timed_out:
            error = f"inspecting the file took longer than {limits.inspection_seconds} s"
        elif (code is not None and code < 0) or "MemoryError" in stderr:
            error = f"{_memory_message(limits)}, or it crashed the inspection"
        else:
            error = "the file could not be inspected"
        log.warning(
            "inspection of %s (%s) failed: %s; exit %s; stderr: %s",
            culprit.path,
            culprit.content,
            error,
            code,
            stderr[-2000:],
        )
        outcomes.append(Outcome(facts={}, error=error))
        outcomes.extend([None] * (len(checks) - len(outcomes)))
    return outcomes
