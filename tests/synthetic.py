"""Seeded synthetic inputs shaped like the sample data: PAMs, trees, occurrences, a Darwin Core
Archive, GeoTIFF rasters and shapefiles. Small and fast, so that every clone tests the full path
without the sample data (which tests read only through LMWEB_SAMPLE_DATA: see `sample_data`)."""

from __future__ import annotations

import functools
import io
import os
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

GENERA = ("Synthia", "Fictaria", "Modelia")


def sample_data() -> Path:
    """The real sample data named by LMWEB_SAMPLE_DATA, or skip the test saying why."""
    folder = os.environ.get("LMWEB_SAMPLE_DATA")
    if not folder:
        pytest.skip("no sample data: set LMWEB_SAMPLE_DATA to the sample data folder to check it")
    path = Path(folder)
    if not path.is_dir():
        pytest.fail(f"LMWEB_SAMPLE_DATA={folder} is not a folder")
    return path


def species_names(count: int) -> list[str]:
    """Binomials with a space ("Synthia alba01"), as in the sample PAM; trees use underscores."""
    return [f"{GENERA[i % len(GENERA)]} species{i:02d}" for i in range(count)]


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Presence-absence matrices and trees

# The synthetic PAM's block of 1-degree cells, inside every example's grid and the rasters below.
PAM_ORIGIN = (-120.0, 30.0)  # lower left corner
PAM_SIDE = 12


def pam_matrix(*, species: int = 12, side: int = PAM_SIDE, origin=PAM_ORIGIN, seed: int = 1):
    """An lmpy Matrix: species ranges as noisy discs on side x side 1-degree cells, empty sites
    dropped. Site headers are [id, x, y] with x, y the cell centre and id the cell's index in a
    global 1-degree grid (-180 -90 180 90, rows from the north), as in the sample PAMs."""
    from lmpy import Matrix

    rng = np.random.default_rng(seed)
    names = species_names(species)
    xs, ys = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5)
    xs, ys = xs.ravel() + origin[0], ys.ravel() + origin[1]
    columns = []
    for _ in names:
        cx, cy = rng.uniform(xs.min(), xs.max()), rng.uniform(ys.min(), ys.max())
        radius = rng.uniform(1.5, side / 2.5)
        present = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        flip = rng.random(present.size) < 0.05
        columns.append(np.where(flip, ~present, present))
    data = np.column_stack(columns).astype(float)
    keep = data.sum(axis=1) > 0
    sites = [
        [int((90 - (y + 0.5)) * 360 + (x - 0.5 + 180)), float(x), float(y)]
        for x, y in zip(xs, ys, strict=True)
    ]
    rows = [site for site, kept in zip(sites, keep, strict=True) if kept]
    return Matrix(data[keep], headers={"0": rows, "1": names})


def pam_bytes(**kwargs) -> bytes:
    """The .lmm file of `pam_matrix(**kwargs)`: a zip with headers.json and data.npz."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pam.lmm"
        pam_matrix(**kwargs).write(str(path))
        return path.read_bytes()


def _ultrametric(names: list[str], seed: int) -> str:
    """A random binary ultrametric tree (coalescent merges), tips with underscores."""
    rnd = random.Random(seed)
    nodes = [(name.replace(" ", "_"), 0.0) for name in names]  # (newick text, height)
    height = 0.0
    while len(nodes) > 1:
        height += rnd.expovariate(len(nodes))
        a = nodes.pop(rnd.randrange(len(nodes)))
        b = nodes.pop(rnd.randrange(len(nodes)))
        nodes.append((f"({a[0]}:{height - a[1]:.6f},{b[0]}:{height - b[1]:.6f})", height))
    return nodes[0][0] + ";"


def newick(names: list[str], *, seed: int = 1) -> bytes:
    return (_ultrametric(names, seed) + "\n").encode()


def nexus(names: list[str], *, seed: int = 1) -> bytes:
    """The tree of `newick` in a NEXUS file with a TAXA block, as the sample's heuchera.nex."""
    labels = "".join(f"        {name.replace(' ', '_')}\n" for name in names)
    return (
        "#NEXUS\n\nBEGIN TAXA;\n"
        f"    DIMENSIONS NTAX={len(names)};\n    TAXLABELS\n{labels}    ;\nEND;\n\n"
        f"BEGIN TREES;\n    TREE tree1 = [&R] {_ultrametric(names, seed)}\nEND;\n"
    ).encode()


# ---------------------------------------------------------------------------------------------
# Occurrences


def occurrence_rows(counts: dict[str, int], *, seed: int = 1, box=(-125, 25, -70, 50)):
    """(species, x, y) records: each species a cloud of distinct points around its own centre
    inside `box` (min_x, min_y, max_x, max_y), coordinates with 4 decimals."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, count in counts.items():
        cx = rng.uniform(box[0] + 5, box[2] - 5)
        cy = rng.uniform(box[1] + 5, box[3] - 5)
        seen: set[tuple[float, float]] = set()
        while len(seen) < count:
            x = round(float(np.clip(cx + rng.normal(0, 2.5), box[0], box[2])), 4)
            y = round(float(np.clip(cy + rng.normal(0, 2.0), box[1], box[3])), 4)
            seen.add((x, y))
        rows += [(name, x, y) for x, y in sorted(seen)]
    return rows


def occurrences_csv(rows, *, columns=("species_name", "x", "y")) -> bytes:
    lines = [",".join(columns)] + [f"{name},{x},{y}" for name, x, y in rows]
    return ("\n".join(lines) + "\n").encode()


def dwca(rows) -> bytes:
    """A Darwin Core Archive: meta.xml describing an occurrence core (id, scientificName,
    decimalLongitude, decimalLatitude) and occurrence.txt with a header line."""
    terms = ("scientificName", "decimalLongitude", "decimalLatitude", "basisOfRecord")
    fields = "".join(
        f'    <field index="{i}" term="http://rs.tdwg.org/dwc/terms/{t}"/>\n'
        for i, t in enumerate(terms, start=1)
    )
    meta = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<archive xmlns="http://rs.tdwg.org/dwc/text/">\n'
        '  <core encoding="UTF-8" fieldsTerminatedBy="," linesTerminatedBy="\\n" '
        'fieldsEnclosedBy="" ignoreHeaderLines="1" '
        'rowType="http://rs.tdwg.org/dwc/terms/Occurrence">\n'
        "    <files><location>occurrence.txt</location></files>\n"
        '    <id index="0"/>\n'
        f"{fields}  </core>\n</archive>\n"
    )
    lines = ["id," + ",".join(terms)] + [
        f"occ-{i},{name},{x},{y},PreservedSpecimen" for i, (name, x, y) in enumerate(rows, 1)
    ]
    return zip_bytes({"meta.xml": meta.encode(), "occurrence.txt": "\n".join(lines).encode()})


def name_map(pairs: dict[str, str]) -> bytes:
    """Two-column lines "original, accepted", as the sample's wranglers/name_map.txt."""
    return "".join(f"{old}, {new}\n" for old, new in pairs.items()).encode()


# ---------------------------------------------------------------------------------------------
# Rasters and shapefiles (GDAL/OGR, EPSG:4326)


def geotiff(path: Path, array: np.ndarray, *, origin=(-130.0, 55.0), cell=0.1, nodata=None):
    """Write `array` (rows from the north) as a DEFLATE GeoTIFF in EPSG:4326 whose top left
    corner is `origin`; the GDAL type follows the array's dtype."""
    from osgeo import gdal, gdal_array, osr

    gdal.UseExceptions()
    kind = gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype)
    rows, cols = array.shape
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), cols, rows, 1, kind, options=["COMPRESS=DEFLATE"]
    )
    dataset.SetGeoTransform((origin[0], cell, 0.0, origin[1], 0.0, -cell))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    dataset.SetProjection(srs.ExportToWkt())
    band = dataset.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    band.WriteArray(array)
    dataset.FlushCache()
    dataset = None
    return path


def ecoregions(path: Path, *, box=(-130, 20, -60, 55), cell=0.1, regions=12, seed=1) -> Path:
    """A categorical Int16 raster like the sample's ecoregions.tif: class values from 10000,
    regions as the Voronoi cells of seeded centres, -9999 nodata in one corner (the sea)."""
    rng = np.random.default_rng(seed)
    cols, rows = round((box[2] - box[0]) / cell), round((box[3] - box[1]) / cell)
    xs = box[0] + (np.arange(cols) + 0.5) * cell
    ys = box[3] - (np.arange(rows) + 0.5) * cell
    gx, gy = np.meshgrid(xs, ys)
    centres = np.column_stack(
        [rng.uniform(box[0], box[2], regions), rng.uniform(box[1], box[3], regions)]
    )
    distance = (gx[..., None] - centres[:, 0]) ** 2 + (gy[..., None] - centres[:, 1]) ** 2
    values = (10000 + np.argmin(distance, axis=2) * 7).astype(np.int16)
    values[(gx > box[2] - 3) & (gy < box[1] + 3)] = -9999
    return geotiff(path, values, origin=(box[0], box[3]), cell=cell, nodata=-9999)


def environment(path: Path, *, box=(0, 0, 10, 10), cell=1.0, seed=1) -> Path:
    """A Float64 environment layer like the sample's lmpy_layers/env_*.tif: a smooth gradient
    with seeded noise."""
    rng = np.random.default_rng(seed)
    cols, rows = round((box[2] - box[0]) / cell), round((box[3] - box[1]) / cell)
    gx, gy = np.meshgrid(np.arange(cols), np.arange(rows))
    values = (gx * 1.5 + gy * 0.5 + rng.normal(0, 0.3, (rows, cols))).astype(np.float64)
    return geotiff(path, values, origin=(box[0], box[3]), cell=cell)


def shapefile(folder: Path, name: str, features: list[tuple[str, dict]], fields: dict) -> Path:
    """Write polygons (WKT, {field: value}) as folder/name.shp with .shx, .dbf and .prj in
    EPSG:4326; `fields` maps each field name to int, float or str."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    folder.mkdir(parents=True, exist_ok=True)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    source = ogr.GetDriverByName("ESRI Shapefile").CreateDataSource(str(folder / f"{name}.shp"))
    layer = source.CreateLayer(name, srs, ogr.wkbPolygon)
    kinds = {int: ogr.OFTInteger, float: ogr.OFTReal, str: ogr.OFTString}
    for field, kind in fields.items():
        layer.CreateField(ogr.FieldDefn(field, kinds[kind]))
    for wkt, values in features:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        for field, value in values.items():
            feature.SetField(field, value)
        layer.CreateFeature(feature)
    source = None
    for extra in folder.glob(f"{name}.cpg"):
        extra.unlink()
    return folder / f"{name}.shp"


def _box(x0, y0, x1, y1) -> str:
    return f"POLYGON (({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def hypotheses(folder: Path, *, origin=PAM_ORIGIN, side=PAM_SIDE) -> Path:
    """Three two-sided biogeographic hypotheses over the PAM's block, as the sample's
    heuchera/hypotheses: polygons with an integer field hypSide (0 or 1) splitting the sites
    west/east, south/north and along a diagonal."""
    x0, y0 = origin
    x1, y1 = x0 + side, y0 + side
    xm, ym = x0 + side * 0.4, y0 + side * 0.6
    fields = {"hypSide": int}
    shapefile(
        folder,
        "West_East",
        [(_box(x0 - 1, y0 - 1, xm, y1 + 1), {"hypSide": 0}),
         (_box(xm, y0 - 1, x1 + 1, y1 + 1), {"hypSide": 1})],
        fields,
    )  # fmt: skip
    shapefile(
        folder,
        "South_North",
        [(_box(x0 - 1, y0 - 1, x1 + 1, ym), {"hypSide": 0}),
         (_box(x0 - 1, ym, x1 + 1, y1 + 1), {"hypSide": 1})],
        fields,
    )  # fmt: skip
    a, b = (x0 - 1, y0 - 1), (x1 + 1, y1 + 1)
    shapefile(
        folder,
        "Diagonal",
        [(f"POLYGON (({a[0]} {a[1]},{b[0]} {a[1]},{b[0]} {b[1]},{a[0]} {a[1]}))", {"hypSide": 0}),
         (f"POLYGON (({a[0]} {a[1]},{b[0]} {b[1]},{a[0]} {b[1]},{a[0]} {a[1]}))", {"hypSide": 1})],
        fields,
    )  # fmt: skip
    return folder


def folder_zip(folder: Path) -> bytes:
    """A folder's files zipped flat, as a user uploads a folder of shapefiles."""
    return zip_bytes({p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()})


def bg_hypothesis(folder: Path, name: str = "bg_hyp_1") -> dict[str, bytes]:
    """One polygon with an FID field, like the sample's lmpy_layers/bg_hyp_1: its .shp, .shx,
    .dbf and .prj bytes by extension."""
    shapefile(folder, name, [(_box(2, 2, 6, 7), {"FID": 0})], {"FID": int})
    return {ext: (folder / f"{name}.{ext}").read_bytes() for ext in ("shp", "shx", "dbf", "prj")}


# ---------------------------------------------------------------------------------------------
# Each workflow's example, on synthetic files shaped like its sample data


def example_files(workflow: str, folder: Path) -> dict[str, tuple[str, bytes]]:
    """Synthetic stand-ins for `translators.get(workflow).example_data`, placeholder id ->
    (file name, content), fitting the example request's params as given."""
    folder.mkdir(parents=True, exist_ok=True)
    if workflow in ("pam-stats", "mcpa"):
        matrix = pam_matrix()
        names = matrix.get_headers()["1"]
        files = {
            "pam": ("pam.lmm", pam_bytes()),
            "tree": ("tree.nex", nexus(names)),
        }
        if workflow == "mcpa":
            files["environment"] = ("ecoregions.tif", ecoregions(folder / "eco.tif").read_bytes())
            files["hypotheses"] = ("hypotheses.zip", folder_zip(hypotheses(folder / "hyp")))
    elif workflow == "species-pam":
        # Three species above the example's min_points (300 distinct localities), two below.
        counts = dict(zip(species_names(5), (340, 320, 310, 40, 12), strict=True))
        files = {
            "occurrences": ("occurrences.csv", occurrences_csv(occurrence_rows(counts))),
            "ecoregions": ("ecoregions.tif", ecoregions(folder / "eco.tif").read_bytes()),
        }
    elif workflow == "occurrence-cleaning":
        names = species_names(6)
        csv_rows = occurrence_rows(dict(zip(names[:4], (30, 20, 14, 5), strict=True)), seed=2)
        # Some records south of the example's bounding box, and names the map accepts.
        csv_rows += [(names[0], -100.0, -10.0 - i) for i in range(5)]
        csv_rows += [(f"{names[1]} var. old", -101.5 + i / 10, 40.0) for i in range(3)]
        dwca_rows = occurrence_rows(dict(zip(names[4:], (25, 13), strict=True)), seed=3)
        files = {
            "occurrences": ("occurrences.csv", occurrences_csv(csv_rows)),
            "dwca": ("occurrences_dwca.zip", dwca(dwca_rows)),
            "name_map": ("name_map.txt", name_map({f"{names[1]} var. old": names[1]})),
        }
    else:
        raise KeyError(f"no synthetic example for {workflow}")
    return files


def example_uploads(workflow: str, folder: Path) -> dict[str, tuple[str, bytes]]:
    """`example_files` keyed by the example's placeholder ids, in example_data's order."""
    import translators

    placeholders = list(translators.get(workflow).example_data)
    files = list(example_files(workflow, folder).values())
    assert len(placeholders) == len(files), workflow
    return dict(zip(placeholders, files, strict=True))


# ---------------------------------------------------------------------------------------------
# The same as bytes, made once per session (for module-level test parameters)


@functools.cache
def _made(kind: str) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if kind == "bg_hyp_1":
            return bg_hypothesis(folder)
        if kind == "env":
            return {"tif": environment(folder / "env.tif").read_bytes()}
        return {"tif": ecoregions(folder / "eco.tif").read_bytes()}


def bg_hypothesis_bytes() -> dict[str, bytes]:
    """`bg_hypothesis`'s files: extension -> bytes."""
    return dict(_made("bg_hyp_1"))


def environment_bytes() -> bytes:
    """`environment`'s default GeoTIFF: 10 x 10 Float64 pixels."""
    return _made("env")["tif"]


def ecoregions_bytes() -> bytes:
    """`ecoregions`'s default GeoTIFF: covers species-pam's example grid."""
    return _made("eco")["tif"]


# ---------------------------------------------------------------------------------------------
# A continental PAM: thousands of species on a fine grid (bench B10)

# Australia's box on a 0.5-degree grid: 84 x 68 = 5,712 cells.
CONTINENT_ORIGIN = (112.0, -44.0)  # lower left corner
CONTINENT_CELL = 0.5


def continental_pam(
    path: Path,
    *,
    species: int,
    columns: int,
    rows: int,
    density: float = 0.02,
    seed: int = 1,
    origin=CONTINENT_ORIGIN,
    cell: float = CONTINENT_CELL,
) -> list[str]:
    """Write a columns x rows grid PAM of `species` species to `path` (.lmm); return the names.

    Ranges are discs of log-normal area (mean about `density` of the grid) at uniform centres;
    every species holds its centre's cell and every site holds at least one species, so no row
    or column is empty. Site ids index a global grid of `cell` degrees (rows from the north).
    Vectorized in blocks of species: 7,033 x 5,712 takes a few seconds."""
    from lmpy import Matrix

    rng = np.random.default_rng(seed)
    names = species_names(species)
    xs, ys = np.meshgrid(np.arange(columns) + 0.5, np.arange(rows) + 0.5)
    xs, ys = xs.ravel(), ys.ravel()  # in cells from the origin
    sites = xs.size
    areas = rng.lognormal(mean=0.0, sigma=1.0, size=species)
    areas *= density * sites / areas.mean()
    radii = np.sqrt(areas / np.pi)
    centres = rng.integers(0, sites, size=species)
    data = np.zeros((sites, species), dtype=bool)
    block = 512
    for start in range(0, species, block):
        end = min(start + block, species)
        cx, cy = xs[centres[start:end]], ys[centres[start:end]]
        far = (xs[:, None] - cx) ** 2 + (ys[:, None] - cy) ** 2
        data[:, start:end] = far <= radii[start:end] ** 2
    data[centres, np.arange(species)] = True
    empty = np.flatnonzero(~data.any(axis=1))
    data[empty, rng.integers(0, species, size=empty.size)] = True
    per_row = round(360 / cell)
    lon = origin[0] + xs * cell
    lat = origin[1] + ys * cell
    ids = ((90 - lat) // cell) * per_row + (lon + 180) // cell
    headers = [[int(i), float(x), float(y)] for i, x, y in zip(ids, lon, lat, strict=True)]
    Matrix(data.astype(float), headers={"0": headers, "1": names}).write(str(path))
    return names


# Names as researchers have them (issue 15)

# scientificName as archives give it: accents, hybrids written "x" and with the multiplication
# sign, authors (one with a
# comma), quotes, extra whitespace, nothing at all; (name, x, y) with one missing longitude.
ODD_NAME_RECORDS = [
    ("Acer rubrum L.", "-80.5", "35.25"),
    ("Acer rubrum L.", "-81.5", "36.25"),
    ("ACER RUBRUM", "-82.5", "37.25"),
    ("Acér saccharinum", "-83.5", "38.25"),
    ("Acer x freemanii", "-84.5", "39.25"),
    ("Acer \u00d7freemanii", "-85.5", "40.25"),
    ('Acer "quoted" negundo', "-86.5", "41.25"),
    ("  Acer   platanoides  ", "-87.5", "42.25"),
    ("  Acer   platanoides  ", "-88.5", "43.25"),
    ("Quercus alba L., 1753", "-89.5", "44.25"),
    ("", "-90.5", "45.25"),
    ("Acer rubrum L.", "", "46.25"),
]


def odd_names_dwca(records=ODD_NAME_RECORDS) -> bytes:
    """A Darwin Core Archive whose core is quoted CSV (fieldsEnclosedBy '"'), so that names may
    hold commas and quotes; terms scientificName, decimalLongitude, decimalLatitude, country."""
    import csv

    terms = ("scientificName", "decimalLongitude", "decimalLatitude", "country")
    fields = "".join(
        f'    <field index="{i}" term="http://rs.tdwg.org/dwc/terms/{t}"/>\n'
        for i, t in enumerate(terms, start=1)
    )
    meta = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<archive xmlns="http://rs.tdwg.org/dwc/text/">\n'
        '  <core encoding="UTF-8" fieldsTerminatedBy="," linesTerminatedBy="\\n" '
        'fieldsEnclosedBy="&quot;" ignoreHeaderLines="1" '
        'rowType="http://rs.tdwg.org/dwc/terms/Occurrence">\n'
        "    <files><location>occurrence.txt</location></files>\n"
        '    <id index="0"/>\n'
        f"{fields}  </core>\n</archive>\n"
    )
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", *terms])
    for number, (name, x, y) in enumerate(records, start=1):
        writer.writerow([f"occ-{number}", name, x, y, "US"])
    return zip_bytes({"meta.xml": meta.encode(), "occurrence.txt": text.getvalue().encode()})


def lmpy_name_map(name_map: dict, form: str) -> bytes:
    """`name_map` as lmpy's accepted-name wrangler writes it (out_map_filename), in its JSON
    (null for an unresolved name) or CSV form ("Name,Accepted" header, "None")."""
    from lmpy.data_wrangling.occurrence.accepted_name_wrangler import (
        AcceptedNameOccurrenceWrangler,
    )

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"map.{form}"
        wrangler = AcceptedNameOccurrenceWrangler(name_map=dict(name_map))
        wrangler.write_map_to_file(str(path), form)
        return path.read_bytes()


# The map researchers bring for ODD_NAME_RECORDS: keys as they spell the names, null where a
# resolver found nothing.
ODD_NAMES_MAP = {
    "Acer rubrum L.": "Acer rubrum",
    "Acér saccharinum": "Acer saccharinum",
    "Acer x freemanii": "Acer \u00d7freemanii",
    'Acer "quoted" negundo': "Acer negundo",
    "Acer platanoides": None,
    "Quercus alba L., 1753": "Quercus alba",
}
