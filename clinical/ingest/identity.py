"""Pseudonyms: keyed hashes of patient IDs and study/series UIDs, and where the key lives.

A plain hash of a patient ID can be reversed by hashing every plausible ID, so
keys are HMAC-SHA256 with a secret key that never leaves the site. The same
key must be used for every ingest of one project (and to hash the IDs of a
labels file), otherwise the same patient gets two keys.

Where the key comes from, first match wins:

1. the ``key`` argument;
2. the environment variable ``CLINICAL_PSEUDONYM_KEY``;
3. the file ``pseudonym.key`` in the private configuration folder
   (``$CLINICAL_CONFIG_DIR``, else ``~/.config/clinical``), generated once
   with 32 random bytes and permissions 0600; a new key is announced with a WARNING
   saying where it is and that it must be backed up.

The key is never logged, written to the cohort or put in a message. A cohort records
the key's :func:`key_fingerprint` in ``cohort.json``; :func:`check_cohort_key` refuses to
ingest into it with another key (every patient key would change and earlier splits break).

Sources are named by keyed pseudonyms too (:func:`source_pseudonym`): file and folder names
of real exports carry names, MRNs and dates. The map back to the real relative paths is one
private file per cohort, beside the key: ``CONFIG_DIR/cohorts/<cohort_id>.paths.parquet``
(:func:`private_paths_file`, mode 0600, folder 0700), where ``cohort_id`` is a random id kept
in ``cohort.json``. It lives outside the cohort folder because the cohort folder is what
travels (copied to a training machine, its manifest logged to MLflow): copying or uploading
a cohort can never carry it. It is never logged; :func:`source_paths` reads it for the local
operator (``clinical rejections COHORT``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from clinical.errors import ConfigurationError

__all__ = [
    "CONFIG_DIR_ENV",
    "KEY_ENV",
    "KEY_FILE_NAME",
    "check_cohort_key",
    "cohort_identity",
    "config_dir",
    "key_fingerprint",
    "keyed_hash",
    "load_key",
    "private_paths_file",
    "read_source_map",
    "source_paths",
    "source_pseudonym",
    "write_source_map",
]

logger = logging.getLogger(__name__)

KEY_ENV = "CLINICAL_PSEUDONYM_KEY"
CONFIG_DIR_ENV = "CLINICAL_CONFIG_DIR"
KEY_FILE_NAME = "pseudonym.key"

#: Hex characters kept from the HMAC: 80 bits, collision-free for any realistic cohort.
KEY_HEX_LENGTH = 20


def config_dir() -> Path:
    """The private configuration folder: ``$CLINICAL_CONFIG_DIR`` or ``~/.config/clinical``."""
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".config" / "clinical"


def load_key(key: str | bytes | None = None) -> bytes:
    """Return the pseudonym key as bytes (argument, else environment, else the key file).

    Raises
    ------
    ConfigurationError
        When the given key or the key file is empty.
    """
    if key is None:
        key = os.environ.get(KEY_ENV) or None
    if key is None:
        return _key_from_file(config_dir() / KEY_FILE_NAME)
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not raw:
        raise ConfigurationError(
            f"The pseudonym key is empty. Pass a non-empty key, set {KEY_ENV}, or unset it to use the key file."
        )
    return raw


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key``, as the first 20 hex characters.

    Values are stripped first: DICOM pads odd-length strings with a space, and
    a labels file typed by hand has no padding.
    """
    # surrogateescape: a folder name that is not UTF-8 hashes as its bytes (valid UTF-8 is unchanged)
    return hmac.new(key, value.strip().encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:KEY_HEX_LENGTH]


def key_fingerprint(key: bytes) -> str:
    """A digest that changes when the key changes and reveals nothing about it (for cache invalidation)."""
    return hmac.new(key, b"clinical-key-fingerprint", hashlib.sha256).hexdigest()[:16]


def source_pseudonym(key: bytes, name: str) -> str:
    """The keyed pseudonym of a source-relative file name: ``src-`` and 16 hex characters.

    The name's bytes as the file system holds them (``os.fsencode``) are hashed unstripped,
    so names in any encoding and names differing only in spaces get distinct pseudonyms.
    """
    digest = hmac.new(key, b"source:" + os.fsencode(name), hashlib.sha256).hexdigest()[:16]
    return f"src-{digest}"


def check_cohort_key(recorded: str | None, key: bytes) -> None:
    """Refuse a key other than the one a cohort was made with (``recorded``: its fingerprint, None for a new cohort).

    Raises
    ------
    ConfigurationError
        Naming both fingerprints (never the keys) and how to fix it.
    """
    current = key_fingerprint(key)
    if recorded is not None and recorded != current:
        raise ConfigurationError(
            f"This cohort was made with the pseudonym key of fingerprint {recorded}, but this ingest uses the key "
            f"of fingerprint {current}: every patient key would change and earlier splits would break. "
            f"Use the cohort's key (the key argument, {KEY_ENV}, or {KEY_FILE_NAME} in the private configuration "
            "folder), or ingest into a new cohort folder."
        )


def private_paths_file(cohort_id: str) -> Path:
    """The private map pseudonym → real relative path of the cohort ``cohort_id`` (see the module docstring)."""
    return config_dir() / "cohorts" / f"{cohort_id}.paths.parquet"


def write_source_map(cohort_id: str, names: Mapping[str, str]) -> None:
    """Merge ``names`` (pseudonym → source-relative name) into the cohort's private map, mode 0600.

    Names are stored as the file system's bytes (``os.fsencode``), so any encoding survives.
    """
    import pandas as pd

    path = private_paths_file(cohort_id)
    merged = {**read_source_map(cohort_id), **names}
    table = pd.DataFrame({"pseudonym": list(merged), "path": [os.fsencode(n) for n in merged.values()]})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            table.to_parquet(handle, index=False)
        os.replace(tmp, path)
    except OSError as error:
        raise ConfigurationError(
            f"The private map of source paths cannot be written in {path.parent} ({type(error).__name__}). "
            f"Set {CONFIG_DIR_ENV} to a private folder this user can write (it also holds {KEY_FILE_NAME})."
        ) from error


def read_source_map(cohort_id: str) -> dict[str, str]:
    """The cohort's private map pseudonym → source-relative name; empty when this machine has none."""
    import pandas as pd

    path = private_paths_file(cohort_id)
    if not path.is_file():
        return {}
    table = pd.read_parquet(path)
    return {p: os.fsdecode(bytes(n)) for p, n in zip(table["pseudonym"], table["path"], strict=True)}


def cohort_identity(cohort: Path) -> tuple[str | None, str | None]:
    """``(cohort_id, key_fingerprint)`` recorded in ``COHORT/cohort.json``; None for what is not recorded."""
    meta = cohort / "cohort.json"
    if not meta.is_file():
        return None, None
    recorded = json.loads(meta.read_text())
    return recorded.get("cohort_id"), recorded.get("key_fingerprint")


def source_paths(cohort: str | Path) -> dict[str, str]:
    """Pseudonym → source-relative path of a cohort's inputs, from its private map on this machine.

    What the ``source`` column of the manifest and the ``file`` column of the rejections hold are
    pseudonyms; this turns them back into the files for the local operator. Empty when the map
    is not on this machine (a cohort copied elsewhere travels without it).
    """
    cohort_id, _ = cohort_identity(Path(cohort))
    return read_source_map(cohort_id) if cohort_id else {}


def _key_from_file(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it between our check and open
            return _key_from_file(path)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        logger.warning(
            "Created a NEW pseudonym key: %s. Back it up now and keep it private: it decides every patient key, "
            "and without it later ingests cannot join these cohorts (they refuse another key).", path,
        )
    raw = path.read_text().strip().encode()
    if not raw:
        raise ConfigurationError(f"The pseudonym key file {path} is empty. Delete it to generate a new key.")
    return raw
