"""Where the PACS is and how to reach it: a URL for the address, the environment or a file for credentials.

URLs (no credentials in them; they are shown in messages and logs):

* ``dicomweb+http://host:port/dicom-web`` (or ``dicomweb+https://``, or plain ``http(s)://``):
  QIDO-RS to find studies, WADO-RS to retrieve them.
* ``dimse://AET@host:port?calling=OURAET&retrieve=get|move&move_port=11113``: C-FIND to find,
  C-GET (default) or C-MOVE to retrieve. For C-MOVE the PACS must know ``OURAET`` as a
  modality whose port is ``move_port``, where a Storage SCP of ours listens during the pull.

Common query options: ``timeout`` (seconds per request), ``retries`` (attempts after the
first on transient errors) and ``backoff`` (seconds before the first retry, doubled each time).

Credentials (HTTP basic authentication for DICOMweb), first match wins: the arguments of
:meth:`PacsConfig.from_url`; the environment variables ``CLINICAL_PACS_USER`` and
``CLINICAL_PACS_PASSWORD``; the file ``pacs.json`` (``{"username": ..., "password": ...}``)
in the private configuration folder (see :func:`clinical.ingest.identity.config_dir`).
They are never part of ``repr``, logs or messages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from clinical.errors import ConfigurationError
from clinical.ingest.identity import config_dir

__all__ = ["PACS_FILE_NAME", "PASSWORD_ENV", "USER_ENV", "PacsConfig"]

USER_ENV = "CLINICAL_PACS_USER"
PASSWORD_ENV = "CLINICAL_PACS_PASSWORD"
PACS_FILE_NAME = "pacs.json"
_OPTIONS = {"calling", "retrieve", "move_port", "timeout", "retries", "backoff"}


@dataclass(frozen=True)
class PacsConfig:
    """A PACS endpoint; build it with :meth:`from_url`. ``display`` is the only form that is ever shown."""

    protocol: Literal["dicomweb", "dimse"]
    host: str
    port: int
    scheme: str = "http"
    path: str = ""
    called_aet: str = ""
    calling_aet: str = "CLINICAL"
    retrieve: Literal["get", "move"] = "get"
    move_port: int = 11113
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        credentials_file: str | Path | None = None,
        **overrides,
    ) -> PacsConfig:
        """Parse a PACS URL (see the module docstring) and attach the credentials.

        Raises
        ------
        ConfigurationError
            When the URL has an unknown scheme, holds a password, lacks a host, port or AE
            title, or has an unknown or invalid option; the message never repeats credentials.
        """
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if parts.password is not None:
            raise ConfigurationError(
                "The PACS URL must not hold credentials (user:password@). Remove them and set "
                f"{USER_ENV} and {PASSWORD_ENV}, or write them to {PACS_FILE_NAME} in the configuration folder."
            )
        shown = f"{scheme}://{parts.hostname or ''}{f':{parts.port}' if _port_or_none(parts) else ''}{parts.path}"
        if scheme in ("http", "https", "dicomweb+http", "dicomweb+https"):
            values: dict = {"protocol": "dicomweb", "scheme": scheme.removeprefix("dicomweb+"),
                            "path": parts.path.rstrip("/")}
            if parts.username:
                raise ConfigurationError(
                    f"The DICOMweb URL {shown} names a user; set {USER_ENV} (and {PASSWORD_ENV}) instead."
                )
            default_port = 443 if values["scheme"] == "https" else 80
        elif scheme == "dimse":
            if not parts.username:
                raise ConfigurationError(
                    f"The DIMSE URL {shown} names no AE title; write it as dimse://AET@host:port (e.g. ORTHANC@...)."
                )
            values = {"protocol": "dimse", "called_aet": parts.username}
            default_port = 104
        else:
            raise ConfigurationError(
                f"Unknown PACS URL scheme {scheme!r}; use dicomweb+http(s)://host:port/path or dimse://AET@host:port."
            )
        if not parts.hostname:
            raise ConfigurationError(f"The PACS URL {shown} has no host.")
        values.update(host=parts.hostname, port=_port_or_none(parts) or default_port)
        values.update(_query_options(parts.query, shown))
        values.update(overrides)
        user, secret = _credentials(username, password, credentials_file)
        config = cls(**values, username=user, password=secret)
        config.validate()
        return config

    def validate(self) -> None:
        """Check the values a URL or an override may have got wrong.

        Raises
        ------
        ConfigurationError
            Naming the option, what is allowed and what was received.
        """
        if self.protocol == "dimse":
            for name, aet in (("AE title", self.called_aet), ("calling AE title", self.calling_aet)):
                if not 0 < len(aet) <= 16 or not aet.isascii() or "\\" in aet:
                    raise ConfigurationError(f"The {name} must be 1 to 16 ASCII characters; got {aet!r}.")
        if self.retrieve not in ("get", "move"):
            raise ConfigurationError(f"retrieve must be 'get' or 'move'; got {self.retrieve!r}.")
        if self.timeout <= 0 or self.backoff < 0 or self.retries < 0:
            raise ConfigurationError(
                "timeout must be > 0, backoff >= 0 and retries >= 0; "
                f"got {self.timeout}, {self.backoff}, {self.retries}."
            )
        if not 0 < self.move_port < 65536:
            raise ConfigurationError(f"move_port must be a TCP port (1-65535); got {self.move_port}.")

    @property
    def display(self) -> str:
        """The URL without credentials: what messages and logs show."""
        if self.protocol == "dicomweb":
            return f"dicomweb+{self.scheme}://{self.host}:{self.port}{self.path}"
        return f"dimse://{self.called_aet}@{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The DICOMweb service root for the HTTP client."""
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


def _port_or_none(parts) -> int | None:
    try:
        return parts.port
    except ValueError as error:
        raise ConfigurationError("The PACS URL has an invalid port; write host:port with a number.") from error


def _query_options(query: str, shown: str) -> dict:
    options = {name: values[-1] for name, values in parse_qs(query).items()}
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigurationError(f"Unknown option(s) {unknown} in the PACS URL {shown}; allowed: {sorted(_OPTIONS)}.")
    converted: dict = {}
    for name, value in options.items():
        try:
            if name in ("move_port", "retries"):
                converted[name] = int(value)
            elif name in ("timeout", "backoff"):
                converted[name] = float(value)
            else:
                converted["calling_aet" if name == "calling" else name] = value
        except ValueError as error:
            raise ConfigurationError(f"The PACS URL option {name} must be a number; got {value!r}.") from error
    return converted


def _credentials(username, password, credentials_file) -> tuple[str | None, str | None]:
    if username is not None or password is not None:
        return username, password
    if os.environ.get(USER_ENV) or os.environ.get(PASSWORD_ENV):
        return os.environ.get(USER_ENV) or None, os.environ.get(PASSWORD_ENV) or None
    path = Path(credentials_file) if credentials_file is not None else config_dir() / PACS_FILE_NAME
    if not path.is_file():
        if credentials_file is not None:
            raise ConfigurationError(f"The PACS credentials file {path} does not exist.")
        return None, None
    try:
        data = json.loads(path.read_text())
        return data.get("username"), data.get("password")
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigurationError(
            f"The PACS credentials file {path} is not a JSON object with 'username' and 'password' "
            f"({type(error).__name__})."
        ) from error
