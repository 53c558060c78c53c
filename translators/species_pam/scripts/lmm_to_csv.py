"""Write a 2-D lmpy matrix as CSV with proper quoting (lmpy leaves header cells unquoted).

Arguments: matrix, CSV to write, then names for the row-header columns (e.g. site_id x y).
"""

import csv
import io
import json
import sys
import zipfile

import numpy as np


def text(value):
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def rows(matrix_path, labels):
    """The CSV rows of a matrix: a header row, then each row's headers and values."""
    with zipfile.ZipFile(matrix_path) as archive:
        headers = json.loads(archive.read("headers.json"))["headers"]
        arrays = np.load(io.BytesIO(archive.read("data.npz")), allow_pickle=False)
        data = arrays[arrays.files[0]]
    row_headers = headers.get("0") or [[] for _ in range(data.shape[0])]
    yield [*labels, *headers.get("1", [])]
    for header, values in zip(row_headers, data, strict=True):
        cells = header if isinstance(header, list) else [header]
        yield [*cells, *(text(v) for v in values)]


def main(matrix_path, csv_path, *labels):
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows(matrix_path, labels))


if __name__ == "__main__":
    main(*sys.argv[1:])
