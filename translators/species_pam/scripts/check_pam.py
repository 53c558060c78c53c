"""Summarize the PAM, and stop with a readable message when no species is present anywhere.

Arguments: species manifest (key -> name), PAM of every grid cell, purged PAM, summary to write.
species_not_in_pam lists modelled species present in no cell: outside the grid, or below
min_coverage in every cell.
"""

import json
import sys
import zipfile


def headers(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("headers.json"))["headers"]


def summarize(modelled, all_sites, pam):
    """The summary of a PAM from the headers of both matrices and the sorted modelled names."""
    present = set(pam.get("1") or [])
    return {
        "grid_cells": len(all_sites.get("0") or []),
        "species_modelled": len(modelled),
        "sites": len(pam.get("0") or []),
        "species": len(present),
        "species_not_in_pam": [name for name in modelled if name not in present],
    }


def main(manifest_path, all_sites_path, pam_path, summary_path):
    with open(manifest_path, encoding="utf-8") as handle:
        modelled = sorted(json.load(handle).values())
    summary = summarize(modelled, headers(all_sites_path), headers(pam_path))
    with open(summary_path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "species_not_in_pam"}))
    if not summary["species"] or not summary["sites"]:
        print(
            "check_pam: no species is present in any grid cell. Check that the grid covers the "
            "occurrences in the ecoregions raster's projection, or lower min_coverage.",
            file=sys.stderr,
        )
        sys.exit(3)


if __name__ == "__main__":
    main(*sys.argv[1:5])
