"""Content digests: how every stage knows whether its input changed.

Digests are hex SHA-256 strings, so a Prefect cache key, an MLflow tag and a
file name can all carry them unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["bytes_digest", "code_digest", "file_digest", "files_digest", "table_digest"]

_CHUNK = 1 << 20


def bytes_digest(data: bytes) -> str:
    """SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks so large slides do not fill memory."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def files_digest(digests: Iterable[str]) -> str:
    """One digest for a set of files (a DICOM series), independent of their order."""
    return bytes_digest("\n".join(sorted(digests)).encode())


def code_digest() -> str:
    """One digest of the ``clinical`` package's source files (path and content): which code made a model."""
    root = Path(__file__).resolve().parents[1]
    return files_digest(f"{p.relative_to(root).as_posix()}:{file_digest(p)}" for p in root.rglob("*.py"))


def table_digest(table: pd.DataFrame, *, columns: list[str], sort_by: str | list[str]) -> str:
    """Digest of the given columns of a table, independent of row order and of pandas' version.

    Values are serialised as canonical JSON (missing values as ``null``) rather
    than through ``pd.util.hash_pandas_object``, whose output is not promised
    to stay stable across pandas releases.
    """
    rows = table.sort_values(sort_by)[columns].astype(object).where(table[columns].notna(), None)
    payload = json.dumps({"columns": columns, "rows": rows.values.tolist()}, default=str, separators=(",", ":"))
    return bytes_digest(payload.encode())
