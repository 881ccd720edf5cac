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
   with 32 random bytes and permissions 0600.

The key is never logged, written to the cohort or put in a message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from clinical.errors import ConfigurationError

__all__ = ["CONFIG_DIR_ENV", "KEY_ENV", "KEY_FILE_NAME", "config_dir", "key_fingerprint", "keyed_hash", "load_key"]

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
    return hmac.new(key, value.strip().encode(), hashlib.sha256).hexdigest()[:KEY_HEX_LENGTH]


def key_fingerprint(key: bytes) -> str:
    """A digest that changes when the key changes and reveals nothing about it (for cache invalidation)."""
    return hmac.new(key, b"clinical-key-fingerprint", hashlib.sha256).hexdigest()[:16]


def _key_from_file(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it between our check and open
            return _key_from_file(path)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        logger.info("Generated a new pseudonym key file in %s (keep it: it decides every patient key).", path.parent)
    raw = path.read_text().strip().encode()
    if not raw:
        raise ConfigurationError(f"The pseudonym key file {path} is empty. Delete it to generate a new key.")
    return raw
