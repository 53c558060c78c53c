"""The request documents and small inputs that tests send again and again."""

import io
import zipfile

import numpy as np

TREE = b"((sp_a:1,sp_b:1):1);\n"


def selftest(tasks: int = 2, seconds: float = 1, **params: object) -> dict:
    """A selftest job request: `tasks` rules that each sleep `seconds` (and take `memory_mb`)."""
    return {"workflow": "selftest", "params": {"tasks": tasks, "seconds": seconds, **params}}


def lmm_bytes() -> bytes:
    """A tiny but real lmpy matrix: a zip with headers.json and data.npz."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("headers.json", '{"0": [[0, 0.5, 0.5]], "1": ["sp_a", "sp_b"]}')
        npz = io.BytesIO()
        np.savez_compressed(npz, data=np.array([[1, 0]]))
        archive.writestr("data.npz", npz.getvalue())
    return buffer.getvalue()
