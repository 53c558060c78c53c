"""Occurrence-cleaning helper run on workers: split, ensure-csv, gather."""

import csv
import io
import json
import math
import os
import random
import re
import shutil
import sys
import unicodedata

SLUG_CHARS = 80


def fail(message):
    print(f"occurrence-cleaning: {message}", file=sys.stderr)
    sys.exit(1)


def slug_of(name):
    """An ASCII file name stem for a species name: letters, digits and '_'."""
    text = unicodedata.normalize("NFKD", name.replace("\u00d7", "x"))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return text[:SLUG_CHARS].rstrip("_") or "species"


class SpeciesFiles:
    """Species name -> unique safe file; counts and bounds of the records written."""

    def __init__(self, out_dir, max_species):
        self.out_dir, self.max_species = out_dir, max_species
        self.slugs, self.taken, self.stats = {}, set(), {}

    def filename(self, name):
        slug = self.slugs.get(name)
        if slug is None:
            if len(self.slugs) >= self.max_species:
                fail(
                    f"more than {self.max_species} species after the record wranglers; "
                    "split the request (by taxon or region) into smaller ones"
                )
            base, number = slug_of(name), 1
            slug = base
            # Case-insensitive: the packaged deliverables may be unzipped on such a disk.
            while slug.lower() in self.taken:
                number += 1
                slug = f"{base}-{number}"
            self.slugs[name] = slug
            self.taken.add(slug.lower())
        return os.path.join(self.out_dir, slug + ".csv")

    def count(self, points):
        stats = self.stats.setdefault(
            points[0].species_name, [0, math.inf, math.inf, -math.inf, -math.inf]
        )
        for point in points:
            stats[0] += 1
            stats[1], stats[2] = min(stats[1], point.x), min(stats[2], point.y)
            stats[3], stats[4] = max(stats[3], point.x), max(stats[4], point.y)


class Reservoir:
    """A seeded uniform sample of at most `limit` items of a stream (Algorithm R); carried on
    from a saved sample and its `seen` count, it stays a uniform sample of the whole stream."""

    def __init__(self, limit, seed, items=(), seen=0):
        self.limit, self.rng = limit, random.Random(seed)  # noqa: S311 (a sample, no secret)
        self.items, self.seen = list(items), seen

    def add(self, item):
        self.seen += 1
        if len(self.items) < self.limit:
            self.items.append(item)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < self.limit:
                self.items[slot] = item


class Dropped:
    """Records dropped, counted exactly per step (a wrangler, or a missing name or coordinates)
    and per species; those with finite coordinates sampled for the report's map."""

    def __init__(self, limit, seed, saved=None):
        saved = saved or {}
        self.steps, self.species = dict(saved.get("steps", {})), dict(saved.get("species", {}))
        self.sample = Reservoir(limit, seed, saved.get("sample", ()), saved.get("mappable", 0))

    def add(self, step, species, x=math.nan, y=math.nan, count=1):
        self.steps[step] = self.steps.get(step, 0) + count
        self.species[species] = self.species.get(species, 0) + count
        if count == 1 and math.isfinite(x) and math.isfinite(y):
            self.sample.add([step, species, x, y])

    def removed(self, step, before, after, seen):
        """The points of `before` that a wrangler did not pass on in `after`; `seen` holds
        each one's (name, x, y) before the wrangler (lmpy's accepted-name wrangler sets an
        unmapped record's name to None before it drops it)."""
        passed = {id(point) for point in after}
        gone = [seen[i] for i, point in enumerate(before) if id(point) not in passed]
        if len(gone) != len(before) - len(after):
            # A wrangler that copies points (the coordinate converter) cannot be diffed: its
            # drops are counted, not placed.
            self.add(step, seen[0][0], count=len(before) - len(after))
            return
        for name, x, y in gone:
            self.add(step, name, x, y)

    def saved(self):
        return {
            "steps": self.steps,
            "species": self.species,
            "mappable": self.sample.seen,
            "sample": self.sample.items,
        }


# What lmpy's AcceptedNameWrangler.write_map_to_file writes: a header line in its CSV form,
# and None (unresolved by resolve_names_gbif) as the text "None"; its JSON form holds null.
LMPY_CSV_HEADER = ("name", "accepted")
UNRESOLVED_TEXT = {"", "none", "null"}
MAX_NAME_CHARS = 1000


class NameMapError(ValueError):
    """The name map cannot be read; the message says where, for the user."""


def clean_name(name):
    """A species name as it is matched: outer whitespace gone, inner runs of it one space."""
    return " ".join(str(name).split())


def name_key(name):
    """The key a name is looked up by: lmpy capitalizes every species name it reads
    ("Old name_A" -> "Old name_a"), so keys must match the names as lmpy holds them."""
    return clean_name(name).capitalize()


def parse_name_map(text):
    """Original name -> accepted name, or None where the map says the name is unresolved.

    Reads lmpy's two forms: a JSON object (values a name or null, as resolve_names_gbif and
    out_map_filename write them) and CSV lines 'original,accepted' (its header line
    'Name,Accepted' skipped, an accepted name 'None' or empty meaning unresolved). A JSON file
    is told from a CSV one by its first character, as lmpy tries JSON first."""
    text = text.lstrip("\ufeff")
    if text.lstrip()[:1] in ("{", "["):
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise NameMapError(f"the JSON name map does not parse: {exc}") from None
        if not isinstance(loaded, dict):
            raise NameMapError(
                "the JSON name map must be an object of original name -> accepted name "
                "(or null for an unresolved name)"
            )
        pairs = []
        for original, accepted in loaded.items():
            if accepted is not None and not isinstance(accepted, str):
                shown = original if len(original) <= 80 else original[:80] + "..."
                raise NameMapError(
                    f"the JSON name map gives {shown!r} a {type(accepted).__name__}; "
                    "expected an accepted name (text) or null"
                )
            pairs.append((original, accepted))
    else:
        pairs, lmpy_form = [], False
        rows = csv.reader(io.StringIO(text, newline=""))
        try:
            for number, row in enumerate(rows, start=1):
                if not any(cell.strip() for cell in row):
                    continue
                if not pairs and tuple(c.strip().lower() for c in row) == LMPY_CSV_HEADER:
                    lmpy_form = True
                    continue
                if len(row) > 2 and lmpy_form:
                    # lmpy writes f"{name},{accepted}" unquoted: a name with a comma (an
                    # author's year) is all but the last field (accepted names hold none).
                    row = [",".join(row[:-1]), row[-1]]
                if len(row) != 2:
                    raise NameMapError(
                        f"name map line {number} has {len(row)} fields; expected "
                        "'original name,accepted name' (quote a name that holds a comma)"
                    )
                accepted = row[1]
                if clean_name(accepted).lower() in UNRESOLVED_TEXT:
                    accepted = None
                pairs.append((row[0], accepted))
        except csv.Error as exc:
            raise NameMapError(f"the CSV name map does not parse: {exc}") from None
    name_map = {}
    for original, accepted in pairs:
        key = name_key(original)
        if not key:
            continue
        if len(key) > MAX_NAME_CHARS:
            raise NameMapError(f"a name in the name map is longer than {MAX_NAME_CHARS} characters")
        name_map[key] = (clean_name(accepted) or None) if accepted is not None else None
    if not name_map:
        raise NameMapError("the name map holds no names")
    return name_map


def load_name_map(path):
    """The name map at `path` for lmpy: names the map leaves unresolved (null) are left out, so
    that they are unmapped: dropped, or kept under their own name when `unmapped` is keep."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        parsed = parse_name_map(text)
    except NameMapError as exc:
        fail(str(exc))
    return {original: accepted for original, accepted in parsed.items() if accepted}


def excluding(attribute, values):
    """Pass condition: no value of `attribute` (a list, or text split on ';') is in `values`."""
    bad = set(values)

    def passes(point):
        value = point.get_attribute(attribute)
        if value is None:
            return True
        items = value if isinstance(value, list) else str(value).split(";")
        return not any(str(item).strip() in bad for item in items)

    return passes


def build_wranglers(configs):
    from lmpy.data_wrangling.factory import WranglerFactory
    from lmpy.data_wrangling.occurrence.attribute_filter_wrangler import AttributeFilterWrangler

    factory, wranglers = WranglerFactory(), []
    for config in configs:
        kind = config["wrangler_type"]
        if kind == "AttributeFilterWrangler":
            # lmpy iterates the value itself: over the characters of a CSV text field.
            values = config["filter_func"]["for-each"]["values"]
            filter_func = excluding(config["attribute_name"], values)
            wranglers.append(AttributeFilterWrangler(config["attribute_name"], filter_func))
        elif kind == "AcceptedNameOccurrenceWrangler":
            config = dict(config, name_map=load_name_map(config["name_map"]))
            if config.pop("keep_unmapped", False):
                config["name_resolver"] = lambda names: {name: name for name in names}
            wranglers.extend(factory.get_wranglers([config]))
        else:
            wranglers.extend(factory.get_wranglers([config]))
    return wranglers


# Stands for a record's missing species name until the split counts and drops it (lmpy's Point
# refuses an empty name). Not a name anyone writes: NUL is refused in every input.
NAMELESS = "\x00"


def _named(name):
    return name if isinstance(name, str) and name.strip() else NAMELESS


def _number(value):
    """A coordinate as a float; NaN when it is missing or not a number (counted, not fatal)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def open_reader(source):
    from lmpy.point import PointCsvReader, PointDwcaReader

    class DwcaReader(PointDwcaReader):
        # lmpy lets a ValueError of an empty decimalLongitude or scientificName end the whole
        # read, and skips a record whose geoPoint is missing without counting it: missing
        # coordinates become NaN and a missing name NAMELESS, both counted by the split.
        def _get_species_name(self, point_dict):
            return _named(super()._get_species_name(point_dict))

        def _get_x_value(self, point_dict):
            return _number(super()._get_x_value(point_dict))

        def _get_y_value(self, point_dict):
            return _number(super()._get_y_value(point_dict))

    if source["format"] == "dwca":
        probe = DwcaReader(source["path"])
        probe.open()
        terms = set(probe.fields)
        probe.close()
        if "decimalLongitude" not in terms and "geoPoint" in terms:
            # iDigBio archives give coordinates only as geoPoint: {"lat": ..., "lon": ...}.
            return DwcaReader(source["path"], geopoint_term="geoPoint", x_term="lon", y_term="lat")
        return DwcaReader(source["path"])

    class CsvReader(PointCsvReader):
        def open(self):
            # lmpy sniffs the dialect from three lines: quotes doubled further down then split
            # fields, and a sniff that finds no delimiter raises. Read standard CSV, as the
            # submission checked it (a file it would not read as CSV never gets here).
            self.file = open(self.filename, encoding=self.encoding, newline="")  # noqa: SIM115 (closed by close())
            rows = csv.DictReader(self.file)
            # Column names as the submission checked them: "species_name, x, y" has an x.
            rows.fieldnames = [name.strip() for name in rows.fieldnames or []]
            species = self.species_field
            # lmpy skips a record without a name unseen: the split counts it instead.
            self.reader = (dict(row, **{species: _named(row.get(species))}) for row in rows)

    return CsvReader(
        source["path"],
        source["species_column"],
        source["x_column"],
        source["y_column"],
        encoding="utf-8-sig",
    )


def split(config_path):
    """Group all records by species into one CSV each, after the record-level wranglers."""
    from lmpy.data_preparation.occurrence_splitter import (
        OccurrenceSplitter,
        get_writer_key_from_fields_func,
    )

    class Splitter(OccurrenceSplitter):
        def open_writer(self, writer_key):
            # lmpy 3.1.21 names flush_writers without calling it: every file stays open.
            if len(self.writers) >= self.max_writers:
                self.flush_writers()
            super().open_writer(writer_key)

    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    out_dir = config["out_dir"]
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    files = SpeciesFiles(out_dir, config["max_species"])
    wranglers = build_wranglers(config["wranglers"])
    # The records dropped, for the report (older split configurations have no "dropped").
    keep = config.get("dropped")
    dropped = Dropped(keep["limit"], keep["seed"]) if keep else None
    sources = []
    with Splitter(get_writer_key_from_fields_func("species_name"), files.filename) as splitter:
        for source in config["sources"]:
            reader = open_reader(source)
            read = kept = not_finite = nameless = 0
            reader.open()
            try:
                for points in reader:
                    read += len(points)
                    for point in points:
                        name = point.species_name
                        # lmpy capitalized the name as read: "  acer" from "  Acer".
                        point.species_name = "" if name == NAMELESS else name_key(name)
                    named = [point for point in points if point.species_name]
                    nameless += len(points) - len(named)
                    if dropped is not None:
                        for point in points:
                            if not point.species_name:
                                dropped.add("name", "", point.x, point.y)
                    points = named
                    for index, wrangler in enumerate(wranglers):
                        if points:
                            before = points
                            if dropped is not None:
                                seen = [(p.species_name, p.x, p.y) for p in points]
                            points = wrangler.wrangle_points(points)
                            if dropped is not None and len(points) < len(before):
                                dropped.removed(f"record-{index}", before, points, seen)
                    # Wranglers change species_name, x and y, but lmpy writes the attributes.
                    for point in points:
                        point.attributes.update(
                            species_name=point.species_name, x=point.x, y=point.y
                        )
                    finite = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
                    not_finite += len(points) - len(finite)
                    if dropped is not None and len(finite) < len(points):
                        for point in points:
                            if not (math.isfinite(point.x) and math.isfinite(point.y)):
                                dropped.add("coordinates", point.species_name)
                    if finite:
                        splitter.write_points(finite)
                        files.count(finite)
                        kept += len(finite)
            except KeyError as exc:
                fail(f"{source['path']} has no column {exc}")
            reader.close()
            sources.append(
                {
                    "input": source["path"],
                    "format": source["format"],
                    "records_read": read,
                    "records_kept": kept,
                    "records_without_finite_coordinates": not_finite,
                    "records_without_name": nameless,
                }
            )
    if not files.slugs:
        fail(
            "no records left after reading the inputs and applying the record wranglers "
            "(check the column names, the coordinates and the filters)"
        )
    species = []
    for name, slug in files.slugs.items():
        records, min_x, min_y, max_x, max_y = files.stats[name]
        species.append(
            {
                "slug": slug,
                "name": name,
                "records": records,
                "bounds": [min_x, min_y, max_x, max_y],
            }
        )
    species.sort(key=lambda item: item["slug"])
    reports = [{"name": w.name, **w.get_report()} for w in wranglers]
    write_json(config["manifest"], {"species": species, "sources": sources, "wranglers": reports})
    if dropped is not None:
        write_json(keep["path"], dropped.saved(), compact=True)


def list_names(config_path):
    """The distinct species names of every input that the name map does not already settle
    (names it leaves unresolved count as settled, as lmpy resolves only names it lacks)."""
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    known = set()
    if config.get("name_map"):
        with open(config["name_map"], encoding="utf-8") as handle:
            try:
                known = set(parse_name_map(handle.read()))
            except NameMapError as exc:
                fail(str(exc))
    names = set()
    for source in config["sources"]:
        reader = open_reader(source)
        reader.open()
        try:
            for points in reader:
                for point in points:
                    name = name_key(point.species_name.replace(NAMELESS, ""))
                    if name and name not in known:
                        names.add(name)
                if len(names) > config["max_names"]:
                    fail(
                        f"more than {config['max_names']} distinct names to resolve; give a "
                        "name map for most of them, or split the request"
                    )
        except KeyError as exc:
            fail(f"{source['path']} has no column {exc}")
        reader.close()
    write_json(config["out"], sorted(names))


def resolve_names(config_path):
    """Ask the name service (GBIF's species match API) for each name, as lmpy's
    resolve_names_gbif does: an accepted or synonym match gives its canonicalName, anything
    else null. Writes the user's map with the answers added, in lmpy's JSON form."""
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    with open(config["names"], encoding="utf-8") as handle:
        names = json.load(handle)
    resolved = {}
    if config.get("name_map"):
        with open(config["name_map"], encoding="utf-8") as handle:
            resolved.update(parse_name_map(handle.read()))
    base = config["api_url"].rstrip("/")
    for name in names:
        query = urllib.parse.urlencode({"name": name, "verbose": "true"})
        url = f"{base}/species/match?{query}"
        for attempt in range(config["attempts"]):
            try:
                with urllib.request.urlopen(url, timeout=config["timeout"]) as response:
                    answer = json.loads(response.read(1024**2))
                break
            except (OSError, ValueError) as exc:
                if attempt + 1 == config["attempts"]:
                    fail(f"the name service at {base} did not answer for {name!r}: {exc}")
                time.sleep(config["wait"] * 10 * (attempt + 1))
        status = answer.get("status") if isinstance(answer, dict) else None
        accepted = answer.get("canonicalName") if isinstance(answer, dict) else None
        if isinstance(status, str) and status.lower() in ("accepted", "synonym"):
            resolved[name] = clean_name(accepted) if isinstance(accepted, str) else None
        else:
            resolved[name] = None
        time.sleep(config["wait"])
    with open(config["out"], "w", encoding="utf-8") as handle:
        json.dump(resolved, handle, indent=4, ensure_ascii=False)
        handle.write("\n")


def ensure_csv(source, target):
    """lmpy writes no file when every record is filtered out: write the header alone."""
    if os.path.exists(target):
        return
    with open(source, encoding="utf-8", newline="") as handle:
        header = handle.readline()
    with open(target, "w", encoding="utf-8", newline="") as handle:
        handle.write(header)


def gather(config_path):
    """Manifest, species list, summary report and the heatmap's configuration."""
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    with open(config["split_manifest"], encoding="utf-8") as handle:
        split_manifest = json.load(handle)
    split_species = {item["slug"]: item for item in split_manifest["species"]}
    manifest, kept, clean_records = {}, [], 0
    for entry in config["species"]:
        found = split_species.get(entry["slug"])
        if found is None:
            fail(f"species file {entry['slug']} is not in the split manifest")
        with open(entry["report"], encoding="utf-8") as handle:
            report = json.load(handle)
        manifest[entry["slug"]] = {
            "name": found["name"],
            "file": os.path.relpath(entry["csv"], os.path.dirname(config["manifest"])),
            "records_after_split": found["records"],
            "records_after_cleaning": report["output_records"],
        }
        if report["output_records"] > 0:
            kept.append((found, entry["csv"]))
            clean_records += report["output_records"]
    write_json(config["manifest"], manifest)
    with open(config["species_list"], "w", encoding="utf-8") as handle:
        names = sorted(found["name"] for found, _ in kept)
        handle.writelines(" ".join(name.splitlines()) + "\n" for name in names)
    write_json(
        config["report"],
        {
            "sources": split_manifest["sources"],
            "record_wranglers": split_manifest["wranglers"],
            "species_wranglers": config["species_wranglers"],
            "species_after_split": len(manifest),
            "records_after_split": sum(item["records"] for item in split_species.values()),
            "species_after_cleaning": len(kept),
            "records_after_cleaning": clean_records,
        },
    )
    if config.get("report_points"):
        report_points(config, split_manifest, manifest)
    fallback = config["species"][0]["csv"]
    settings = config["heatmap"]
    write_json(settings["config"], heatmap_config(settings, kept, clean_records, fallback))


def replay(points, wranglers):
    """(kept, [(wrangler number, point)] dropped) of one species' split records (x, y) under
    the species wranglers, as lmpy's MinimumPointsWrangler and UniqueLocalitiesFilter treat a
    species file: one group, localities compared as floats."""
    gone = []
    for number, wrangler in enumerate(wranglers):
        if wrangler["type"] == "minimum_points":
            if len(points) < wrangler["minimum_count"]:
                gone += [(number, point) for point in points]
                points = []
        elif wrangler["type"] == "unique_localities":
            seen, unique = set(), []
            for point in points:
                if point in seen:
                    gone.append((number, point))
                else:
                    seen.add(point)
                    unique.append(point)
            points = unique
        else:
            raise ValueError(f"no replay for the species wrangler {wrangler['type']!r}")
    return points, gone


def read_points(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return [(float(row["x"]), float(row["y"])) for row in csv.DictReader(handle)]


def report_points(config, split_manifest, manifest):
    """What the report draws, in one small file: records read, dropped per step and per
    species (exact), and seeded samples of the kept and of the dropped records' coordinates.
    lmpy's wrangle_occurrences reports no per-wrangler counts: the species wranglers are
    replayed on the split files, and a species whose replay disagrees with lmpy's count is
    counted as dropped by the species wranglers together, and not placed on the map."""
    settings = config["report_points"]
    saved = None
    if settings.get("split_dropped"):
        with open(settings["split_dropped"], encoding="utf-8") as handle:
            saved = json.load(handle)
    dropped = Dropped(settings["limit"], settings["seed"], saved)
    kept = Reservoir(settings["limit"], settings["seed"] + 1)
    by_slug = {item["slug"]: item for item in split_manifest["species"]}
    for entry in config["species"]:
        name = by_slug[entry["slug"]]["name"]
        points = read_points(entry["split"])
        survivors, gone = replay(points, config["species_wranglers"])
        if len(survivors) != manifest[entry["slug"]]["records_after_cleaning"]:
            survivors = read_points(entry["csv"])
            dropped.add("species-wranglers", name, count=len(points) - len(survivors))
        else:
            for number, (x, y) in gone:
                dropped.add(f"species-{number}", name, x, y)
        for x, y in survivors:
            kept.add([x, y])
    species = {item["name"]: [item["records_after_cleaning"], 0] for item in manifest.values()}
    for name, count in dropped.species.items():
        species.setdefault(name, [0, 0])[1] += count
    write_json(
        settings["path"],
        {
            "records_read": sum(source["records_read"] for source in split_manifest["sources"]),
            "records_after_split": sum(item["records"] for item in split_manifest["species"]),
            "split_dropped_known": saved is not None,
            "steps": dropped.steps,
            "species": species,
            "kept": {"records": kept.seen, "sample": kept.items},
            "dropped": {
                "records": sum(dropped.steps.values()),
                "mappable": dropped.sample.seen,
                "sample": dropped.sample.items,
            },
            "limit": settings["limit"],
        },
        compact=True,
    )


def heatmap_config(settings, kept, clean_records, fallback):
    """create_point_heatmap arguments: the surviving records' extent in `cells` cells."""
    cells = settings["cells"]
    if kept:
        bounds = [found["bounds"] for found, _ in kept]
        min_x, min_y = min(b[0] for b in bounds), min(b[1] for b in bounds)
        max_x, max_y = max(b[2] for b in bounds), max(b[3] for b in bounds)
        span = max(max_x - min_x, max_y - min_y)
        resolution = span / cells if span > 0 else 1.0
        # One cell of margin keeps edge records off the frame.
        extent = [min_x - resolution, min_y - resolution, max_x + resolution, max_y + resolution]
        csvs = [[path, "species_name", "x", "y"] for _, path in kept]
        title = f"{clean_records} records of {len(kept)} species after cleaning"
    else:
        # Nothing to map: an empty world map (the files hold headers only).
        extent, resolution = [-180.0, -90.0, 180.0, 90.0], 360.0 / cells
        csvs = [[fallback, "species_name", "x", "y"]]
        title = "No records left after cleaning"
    min_x, min_y, max_x, max_y = extent
    return {
        "csv": csvs,
        "plot_filename": settings["image"],
        "min_x": min_x,
        "min_y": min_y,
        "max_x": max_x,
        "max_y": max_y,
        "resolution": resolution,
        "title": title,
    }


def write_json(path, value, compact=False):
    with open(path, "w", encoding="utf-8") as handle:
        # Compact: the report's samples hold up to 100,000 points each.
        indent, separators = (None, (",", ":")) if compact else (2, None)
        json.dump(value, handle, indent=indent, separators=separators, ensure_ascii=False)
        handle.write("\n")


if __name__ == "__main__":
    commands = {
        "split": split,
        "names": list_names,
        "resolve": resolve_names,
        "ensure-csv": ensure_csv,
        "gather": gather,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        fail(f"usage: {sys.argv[0]} {{{','.join(commands)}}} ARGS...")
    commands[sys.argv[1]](*sys.argv[2:])
