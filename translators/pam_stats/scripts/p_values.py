"""pam-stats' p-values from its chunks' counts, as calculate_p_values computes them.

Usage: p_values.py CONFIG.json

CONFIG: {"randomizations": N, "method": "fdr"|"bonferroni"|"raw", "alpha": A,
         "matrices": [{"counts": [COUNTS.lmm, ...], "p_values": OUT.lmm,
                       "significance": SIG.lmm or null, "csv": true|false}, ...],
         "random_diversity": {"parts": [CHUNK.csv, ...], "output": OUT.csv} (optional)}

For each matrix: the chunks' counts (chunk_stats.py) added up are calculate_p_values' running
count over all N randomized PAMs; the p-values are that count / N with the observed headers
(PermutationTests.get_p_values), the significance matrix is get_significant_values with the
method and alpha (as `calculate_p_values -m METHOD --alpha A -s SIG`), and with "csv" each
written matrix is also converted as convert_lmm_to_csv does. The chunks' random diversity
values (chunk_stats.py) are put together in one CSV, in randomization order.
"""

import csv
import json
import sys
from copy import deepcopy

import numpy as np
from lmpy.matrix import Matrix
from lmpy.statistics.significance import SignificanceMethod, get_significant_values
from lmpy.tools.convert_lmm_to_csv import convert_lmm_to_csv

METHODS = {
    "raw": SignificanceMethod.RAW,
    "fdr": SignificanceMethod.FDR,
    "bonferroni": SignificanceMethod.BONFERRONI,
}


def p_values(count_files, randomizations):
    """The p-values matrix of the chunks' counts over `randomizations` randomized PAMs."""
    chunks = [Matrix.load(path) for path in count_files]
    total = np.sum([np.asarray(chunk) for chunk in chunks], axis=0)
    return Matrix(total / randomizations, headers=deepcopy(chunks[0].get_headers()))


def write(matrix, path, csv):
    matrix.write(path)
    if csv:
        # As the convert_lmm_to_csv tool: the written file, loaded again.
        convert_lmm_to_csv(Matrix.load(path), path.removesuffix(".lmm") + ".csv")


def gather(parts, output):
    """The chunks' CSVs of random diversity values as one, sorted by randomization number."""
    header, rows = None, []
    for part in parts:
        with open(part, newline="") as handle:
            reader = csv.reader(handle)
            first = next(reader)
            if header is not None and first != header:
                raise ValueError(f"{part}: columns {first} differ from {header}")
            header = first
            rows.extend(reader)
    rows.sort(key=lambda row: int(row[0]))
    with open(output, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ["randomization"])
        writer.writerows(rows)


def main(args):
    if len(args) != 1:
        sys.exit(__doc__)
    with open(args[0]) as handle:
        config = json.load(handle)
    for entry in config["matrices"]:
        values = p_values(entry["counts"], config["randomizations"])
        write(values, entry["p_values"], entry["csv"])
        if entry["significance"]:
            significance = get_significant_values(
                values, alpha=config["alpha"], correction_method=METHODS[config["method"]]
            )
            write(significance, entry["significance"], entry["csv"])
    if config.get("random_diversity"):
        gather(config["random_diversity"]["parts"], config["random_diversity"]["output"])


if __name__ == "__main__":
    main(sys.argv[1:])
