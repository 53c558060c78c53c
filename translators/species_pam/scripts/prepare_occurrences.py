"""Gather occurrence CSVs into one file for split_occurrence_data, one block per species.

Names are kept exactly (surrounding spaces removed). Each species gets a key that is also its
file name (see species_key); rows carry a plain ordinal as species_name, because lmpy
capitalizes that column. Points outside the ecoregions raster and repeated localities of a
species are dropped; a JSON report says how many and why.
"""

import csv
import json
import math
import resource
import sys

from osgeo import gdal, osr

# Besides one file per species, split_occurrence_data needs a few of its own.
OPEN_FILE_MARGIN = 64


def species_key(name):
    parts = []
    for char in name:
        if char.isascii() and char.isalnum():
            parts.append(char)
        elif char == " ":
            parts.append("_")
        else:
            parts.extend(f"-{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(parts)


def fail(message):
    print(f"prepare_occurrences: {message}", file=sys.stderr)
    sys.exit(2)


def raster_test(path, epsg):
    """A function telling whether create_rare_species_model can index a point (its arithmetic)."""
    gdal.UseExceptions()
    dataset = gdal.Open(path)
    code = osr.SpatialReference(wkt=dataset.GetProjection()).GetAttrValue("AUTHORITY", 1)
    if code is None or not code.isdigit():
        fail(f"the ecoregions raster has no EPSG code ({path}); lmpy needs one")
    if int(code) != epsg:
        fail(f"the ecoregions raster is in EPSG:{code} but grid.epsg is {epsg}: use one projection")
    min_x, cell_size, _, max_y, _, _ = dataset.GetGeoTransform()
    columns, rows = dataset.RasterXSize, dataset.RasterYSize

    def inside(x, y):
        column = int((x - min_x) / cell_size)
        row = int((max_y - y) / cell_size)
        return 0 <= column < columns and 0 <= row < rows

    return inside


def main(config_path):
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    inside = raster_test(config["ecoregions"], config["epsg"])
    wanted = [config[k] for k in ("species_column", "x_column", "y_column")]
    localities = {}
    dropped = dict.fromkeys(
        [
            "row too short",
            "no species name",
            "coordinates not numbers",
            "outside the ecoregions raster",
            "repeated locality",
        ],
        0,
    )
    files = []
    for path in config["inputs"]:
        records = 0
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in wanted if name not in header]
            if missing:
                fail(f"{path} has no column {missing[0]!r} (it has: {', '.join(header[:20])})")
            positions = [header.index(name) for name in wanted]
            for row in reader:
                records += 1
                if len(row) <= max(positions):
                    dropped["row too short"] += 1
                    continue
                name, x, y = (row[p] for p in positions)
                name = name.strip()
                if not name:
                    dropped["no species name"] += 1
                    continue
                try:
                    x, y = float(x), float(y)
                except ValueError:
                    dropped["coordinates not numbers"] += 1
                    continue
                if not (math.isfinite(x) and math.isfinite(y)):
                    dropped["coordinates not numbers"] += 1
                    continue
                if not inside(x, y):
                    dropped["outside the ecoregions raster"] += 1
                    continue
                points = localities.setdefault(name, {})
                if (x, y) in points:
                    dropped["repeated locality"] += 1
                else:
                    points[(x, y)] = None
        files.append({"file": path, "records": records})

    minimum = config["min_points"]
    keys, too_long = {}, []
    for name in localities:
        key = species_key(name)
        if len(key) > config["key_max"]:
            too_long.append(name)
        else:
            keys[name] = key
    kept = sorted((n for n in keys if len(localities[n]) >= minimum), key=keys.get)
    report = {
        "files": files,
        "records": sum(f["records"] for f in files),
        "dropped": dropped,
        "min_points": minimum,
        "species": {n: len(localities[n]) for n in sorted(localities)},
        "species_modelled": len(kept),
        "species_below_min_points": sorted(n for n in keys if len(localities[n]) < minimum),
        "species_names_too_long": sorted(too_long),
    }
    with open(config["report"], "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    print(
        f"{report['records']} records, {len(localities)} species, {len(kept)} with at least "
        f"{minimum} distinct localities; dropped: {dropped}"
    )
    if not kept:
        fail(
            f"no species has at least {minimum} distinct localities inside the ecoregions "
            f"raster (see {config['report']})"
        )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and len(kept) + OPEN_FILE_MARGIN > hard:
        fail(f"{len(kept)} species need more open files than this worker allows ({hard})")

    with open(config["output"], "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["species_name", "x", "y", "species_key"])
        for number, name in enumerate(sorted(keys, key=keys.get), start=1):
            for x, y in localities[name]:
                writer.writerow([f"S{number:07d}", repr(x), repr(y), keys[name]])


if __name__ == "__main__":
    main(sys.argv[1])
