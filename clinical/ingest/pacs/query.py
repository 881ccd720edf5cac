"""What to ask the PACS for: a study date range, modalities, and optional lists of accession numbers or patients.

A query becomes one or more study-level matching dictionaries keyed by DICOM keyword —
StudyDate (0008,0020) as a range ``YYYYMMDD-YYYYMMDD``, ModalitiesInStudy (0008,0061),
AccessionNumber (0008,0050), PatientID (0010,0020) — one per combination of modality and
listed identifier, because single-value matching is what every PACS supports. Both the
QIDO-RS and the C-FIND backends take these dictionaries. Identifiers read from CSV files
are PHI: they stay in memory and are never logged.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from clinical.errors import ConfigurationError

__all__ = ["StudyQuery", "read_identifiers"]


@dataclass(frozen=True)
class StudyQuery:
    """Studies to find; every empty criterion matches everything."""

    since: date | None = None
    until: date | None = None
    modalities: tuple[str, ...] = ()
    accessions: tuple[str, ...] = field(default=(), repr=False)
    patient_ids: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def build(
        cls,
        *,
        since: date | str | None = None,
        until: date | str | None = None,
        modalities: Sequence[str] = (),
        accessions_csv: str | Path | None = None,
        patients_csv: str | Path | None = None,
    ) -> StudyQuery:
        """Validate the criteria; dates as :class:`datetime.date` or ``YYYY-MM-DD`` (or ``YYYYMMDD``).

        Raises
        ------
        ConfigurationError
            On an unreadable date, ``since`` after ``until``, an invalid modality or a bad CSV.
        """
        start, end = _date("since", since), _date("until", until)
        if start and end and start > end:
            raise ConfigurationError(f"since ({start}) is after until ({end}); swap them.")
        codes = tuple(dict.fromkeys(m.strip().upper() for m in modalities))
        for code in codes:
            if not code or len(code) > 16 or not code.replace("_", "").isalnum():
                raise ConfigurationError(f"A modality is a DICOM code such as CR, DX or CT; got {code!r}.")
        return cls(
            since=start,
            until=end,
            modalities=codes,
            accessions=read_identifiers(accessions_csv, "accession_number") if accessions_csv else (),
            patient_ids=read_identifiers(patients_csv, "patient_id") if patients_csv else (),
        )

    def matches(self) -> list[dict[str, str]]:
        """The study-level matching dictionaries (DICOM keyword → value); their union is the answer."""
        base: dict[str, str] = {}
        if self.since or self.until:
            low = self.since.strftime("%Y%m%d") if self.since else ""
            high = self.until.strftime("%Y%m%d") if self.until else ""
            base["StudyDate"] = f"{low}-{high}"
        modality = [{"ModalitiesInStudy": m} for m in self.modalities] or [{}]
        accession = [{"AccessionNumber": a} for a in self.accessions] or [{}]
        patient = [{"PatientID": p} for p in self.patient_ids] or [{}]
        return [{**base, **m, **a, **p} for m, a, p in itertools.product(modality, accession, patient)]


def read_identifiers(path: str | Path, column: str) -> tuple[str, ...]:
    """The distinct non-empty values of ``column`` in a CSV (read as text, so leading zeros stay).

    Raises
    ------
    ConfigurationError
        When the file cannot be read or lacks the column (the message names the file, never a value).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"Cannot read the identifiers CSV {path} ({type(error).__name__}).") from error
    if column not in table.columns:
        raise ConfigurationError(
            f"The identifiers CSV {path} has no {column!r} column; its columns are {list(table.columns)}."
        )
    values = tuple(dict.fromkeys(v.strip() for v in table[column] if v.strip()))
    if not values:
        raise ConfigurationError(f"The identifiers CSV {path} lists no {column} values.")
    return values


def _date(name: str, value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value.date() if isinstance(value, datetime) else value
    text = str(value).strip()
    for layout in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, layout).date()
        except ValueError:
            continue
    raise ConfigurationError(f"{name} must be a date written YYYY-MM-DD; got {value!r}.")
