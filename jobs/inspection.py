"""Look inside input files before anything runs, so that a bad file is a 400, not a failed job."""

import csv
import io
import json
import stat
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

# A zip may not unpack into more than this, nor hold more members (zip bombs).
ZIP_MAX_UNPACKED = 8 * 1024**3
ZIP_MAX_MEMBERS = 100_000
CSV_SNIFF_ROWS = 200


class BadContent(ValueError):
    """The file is not what the input needs; the message says why, for the user."""


def check_zip_members(path: Path) -> list[zipfile.ZipInfo]:
    """Refuse archives that would write outside their folder, links, and bombs."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadContent(f"not a readable zip archive ({exc})") from None
    if len(members) > ZIP_MAX_MEMBERS:
        raise BadContent(f"the archive holds more than {ZIP_MAX_MEMBERS} members")
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
    if unpacked > ZIP_MAX_UNPACKED:
        raise BadContent(f"the archive would unpack to more than {ZIP_MAX_UNPACKED} bytes")
    return members


def check_pam(path: Path) -> None:
    """An lmpy matrix: headers.json and data.npz holding a 2-D array that the headers fit."""
    if path.suffix == ".csv":
        _check_csv_matrix(path)
        return
    check_zip_members(path)
    try:
        with zipfile.ZipFile(path) as archive:
            headers = json.loads(archive.read("headers.json"))
            with archive.open("data.npz") as handle:
                npz = np.load(io.BytesIO(handle.read()), allow_pickle=False)
                data = npz[npz.files[0]]
    except KeyError as exc:
        raise BadContent(f"not an lmpy matrix: {exc.args[0]} is missing") from None
    except (ValueError, OSError, IndexError, zipfile.BadZipFile) as exc:
        raise BadContent(f"not an lmpy matrix ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2 or 0 in data.shape:
        raise BadContent(f"a PAM must be a non-empty 2-D matrix; this one has shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) and data.dtype != bool:
        raise BadContent(f"a PAM must hold numbers, not {data.dtype}")
    for axis in (0, 1):
        labels = headers.get(str(axis)) if isinstance(headers, dict) else None
        if labels is not None and len(labels) != data.shape[axis]:
            raise BadContent(
                f"axis {axis} has {data.shape[axis]} entries but {len(labels)} headers"
            )


def _check_csv_matrix(path: Path) -> None:
    rows = _csv_rows(path, limit=None)
    if len(rows) < 2 or len(rows[0]) < 4:
        raise BadContent("a CSV PAM needs a header row and site rows of id, x, y, species...")
    width = len(rows[0])
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise BadContent(f"row {number} has {len(row)} fields, the header {width}")
        try:
            [float(value) for value in row[1:]]
        except ValueError:
            raise BadContent(f"row {number} holds a value that is not a number") from None


def check_tree(path: Path) -> None:
    import dendropy

    schema = {".nex": "nexus", ".tre": "newick"}.get(path.suffix, "newick")
    try:
        tree = dendropy.Tree.get(path=str(path), schema=schema)
    except Exception as exc:  # dendropy raises many kinds of errors for bad input
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadContent(f"the tree does not parse as {schema}: {message[:300]}") from None
    tips = tree.leaf_nodes()
    if len(tips) < 2:
        raise BadContent("the tree has fewer than two tips")
    if any(node.taxon is None for node in tips):
        raise BadContent("the tree has unlabelled tips")


def _csv_rows(path: Path, limit: int | None) -> list[list[str]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadContent(f"the CSV is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise BadContent("the CSV holds NUL bytes")
    reader = csv.reader(io.StringIO(text))
    rows = []
    try:
        for row in reader:
            rows.append(row)
            if limit is not None and len(rows) > limit:
                break
    except csv.Error as exc:
        raise BadContent(f"the CSV does not parse: {exc}") from None
    return rows


def check_occurrences(path: Path, columns: dict[str, str]) -> None:
    """A CSV with a header naming the requested columns and at least one record."""
    if path.suffix == ".zip":
        check_dwca(path)
        return
    rows = _csv_rows(path, limit=CSV_SNIFF_ROWS)
    if not rows:
        raise BadContent("the CSV is empty")
    header = [name.strip() for name in rows[0]]
    missing = [f"{field}={name!r}" for field, name in columns.items() if name not in header]
    if missing:
        shown = ", ".join(header[:20])
        raise BadContent(f"the CSV has no column {', '.join(missing)} (it has: {shown})")
    if len(rows) < 2:
        raise BadContent("the CSV has a header but no records")
    positions = {field: header.index(name) for field, name in columns.items()}
    for number, row in enumerate(rows[1:], start=2):
        for field in ("x_column", "y_column"):
            if field in positions:
                try:
                    float(row[positions[field]])
                except (ValueError, IndexError):
                    raise BadContent(f"row {number}: {columns[field]!r} is not a number") from None


def check_dwca(path: Path) -> None:
    members = check_zip_members(path)
    if not any(PurePosixPath(m.filename).name.lower() == "meta.xml" for m in members):
        raise BadContent("not a Darwin Core Archive: no meta.xml")


def check_shapefiles(path: Path) -> None:
    members = check_zip_members(path)
    names = {PurePosixPath(m.filename).as_posix().lower() for m in members}
    shapes = [name for name in names if name.endswith(".shp")]
    if not shapes:
        raise BadContent("the zip holds no shapefile (.shp)")
    for shape in shapes:
        stem = shape[: -len(".shp")]
        lacking = [ext for ext in (".shx", ".dbf") if stem + ext not in names]
        if lacking:
            raise BadContent(f"{shape} lacks its {' and '.join(lacking)} file")


def check_raster(path: Path) -> None:
    from osgeo import gdal

    gdal.UseExceptions()
    try:
        dataset = gdal.Open(str(path))
    except RuntimeError as exc:
        raise BadContent(f"GDAL cannot open the raster: {str(exc)[:300]}") from None
    if dataset is None or dataset.RasterCount < 1:
        raise BadContent("GDAL cannot read a raster band from the file")


def check_name_map(path: Path) -> None:
    rows = _csv_rows(path, limit=CSV_SNIFF_ROWS)
    if not rows:
        raise BadContent("the name map is empty")


CHECKS = {
    "pam": lambda path, params: check_pam(path),
    "tree": lambda path, params: check_tree(path),
    "occurrences": lambda path, params: check_occurrences(path, _columns(params)),
    "dwca": lambda path, params: check_dwca(path),
    "raster": lambda path, params: check_raster(path),
    "shapefiles": lambda path, params: check_shapefiles(path),
    "name-map": lambda path, params: check_name_map(path),
}


def _columns(params: dict) -> dict[str, str]:
    return {
        key: value
        for key, value in params.items()
        if key in {"species_column", "x_column", "y_column"} and isinstance(value, str)
    }


def inspect(content: str, path: Path, params: dict) -> None:
    """Raise BadContent if the file at `path` does not hold `content` (see InputSpec.content)."""
    check = CHECKS.get(content)
    if check is not None:
        check(path, params)
