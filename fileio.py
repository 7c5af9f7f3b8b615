"""File helpers shared by every script: result files appear whole or not at all, JSON without NumPy
types or NaN, and the sha256 that ties a result to the exact data file that made it."""
import contextlib
import hashlib
import json
import os

import numpy as np


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary name beside `path` (same extension, so savefig/np.save keep the format) and
    rename it to `path` only when the block ends without an error; a failed write leaves no file."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def jsonable(x):
    """numpy -> Python, NaN -> None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else float(x)
    return x


def write_json(path, obj):
    with replacing(path) as tmp, open(tmp, "w") as f:
        json.dump(jsonable(obj), f, indent=2)


def write_text(path, text):
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):  # stream: a scene can be several GB
            h.update(block)
    return h.hexdigest()
