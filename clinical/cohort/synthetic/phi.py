"""Fake but realistic identities for the DICOM tasks, and the list of every PHI value written.

Names are unusual on purpose (every part is six letters or more and occurs in
no dictionary word the platform prints), so a test can search logs, manifests
and MLflow artifacts for them without false alarms. Patient IDs and accession
numbers carry letters for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from clinical.cohort.synthetic.records import rng_for
from clinical.errors import ConfigurationError

__all__ = [
    "INDEX_OFFSET",
    "MAX_IDENTITIES",
    "PHI_COLUMNS",
    "FakeIdentity",
    "accession_number",
    "fake_identity",
    "phi_values",
]

#: Ground-truth columns that hold PHI exactly as it was written into the DICOM headers.
PHI_COLUMNS = ("patient_id", "patient_name", "patient_birth_date", "accession_number")

_FAMILY = (
    "Quillfeather", "Vantersloot", "Okonkwobrandt", "Marchetticourt", "Thistlewood", "Abernethyne",
    "Kowalczykson", "Brightwaterly", "Fairweatherby", "Pemberthwaite", "Zimmerfeldt", "Castellanoza",
    "Haverbrooke", "Ravensworthy", "Lindqvistrom", "Oyelarandu", "Wolstenholme", "Trevanionne",
    "Blackadderly", "Nakamuraoka", "Delacroixson", "Szczepanowic", "Featherstonh", "Montgomerick",
    "Achterbergen", "Villalobosco", "Ellingsworth", "Grimaldeschi", "Rosenquister", "Sutherlandia",
)
_GIVEN = (
    "Ottoline", "Barnabus", "Philippa", "Ignatius", "Clementine", "Leopoldo", "Marisabel", "Thaddeus",
    "Evangelina", "Cornelius", "Perpetua", "Bartholomew", "Araminta", "Florentin", "Wilhelmina", "Casimiro",
    "Henrietta", "Octavian", "Rosalind", "Ambrosio", "Seraphina", "Lysander", "Gwendolyn", "Balthazar",
    "Esmeralda", "Fitzgerald", "Marguerite", "Theodoric", "Philomena", "Radcliffe",
)
#: Each site writes its own ID format, as hospitals do.
_ID_FORMATS = {"northfield": "NF{:07d}", "riverside": "RVS-{:06d}", "eastgate": "EG{:08d}"}
_ACCESSION_PREFIX = {"northfield": "NFA", "riverside": "RVA", "eastgate": "EGA"}
MAX_IDENTITIES = len(_FAMILY) * len(_GIVEN)
#: First identity index of each DICOM task, so tasks never share a fake patient.
INDEX_OFFSET = {"radiographs": 0, "volumes": 600, "petct": 300}


@dataclass(frozen=True)
class FakeIdentity:
    """What a hospital's DICOM headers say about a patient (all invented)."""

    patient_id: str  # (0010,0020)
    patient_name: str  # (0010,0010), DICOM PN: FAMILY^GIVEN
    birth_date: str  # (0010,0030), YYYYMMDD
    sex: str  # (0010,0040)


def fake_identity(seed: int, site: str, index: int) -> FakeIdentity:
    """The identity of patient number ``index`` (0 to 899) of a cohort; names and IDs never repeat.

    Uniqueness comes from drawing without replacement from permutations keyed
    by the seed, so patient ``index`` has the same identity whatever else is
    generated. Tasks use disjoint index ranges (see :data:`INDEX_OFFSET`).

    Raises
    ------
    ConfigurationError
        When ``index`` is outside 0 to 899.
    """
    if not 0 <= index < MAX_IDENTITIES:
        raise ConfigurationError(
            f"A synthetic cohort holds at most {MAX_IDENTITIES} fake identities; "
            f"patient index {index} is out of range. Use a smaller size."
        )
    pick = int(rng_for(seed, "phi-order").permutation(MAX_IDENTITIES)[index])
    number = int(rng_for(seed, "phi-number").choice(900_000, size=MAX_IDENTITIES, replace=False)[index]) + 100_000
    rng = rng_for(seed, "phi", index)
    born = date(1936, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 68)))
    return FakeIdentity(
        patient_id=_ID_FORMATS.get(site, "PT{:08d}").format(number),
        patient_name=f"{_FAMILY[pick // len(_GIVEN)]}^{_GIVEN[pick % len(_GIVEN)]}",
        birth_date=born.strftime("%Y%m%d"),
        sex=("F", "M")[int(rng.integers(2))],
    )


def accession_number(seed: int, site: str, *keys: object) -> str:
    """An accession number (0008,0050) in the site's format; at most 16 characters (VR SH)."""
    digits = int(rng_for(seed, "accession", site, *keys).integers(10**8, 10**9))
    return f"{_ACCESSION_PREFIX.get(site, 'ACC')}{digits}"


def phi_values(out: str | Path) -> set[str]:
    """Every PHI string a generated cohort wrote into its DICOM headers.

    Read back from the ``ground_truth.csv`` tables under ``out``; the patient
    name is listed whole (``FAMILY^GIVEN``), as ``GIVEN FAMILY`` and part by part,
    so a search also catches a name that was reformatted before it leaked.
    """
    values: set[str] = set()
    for path in sorted(Path(out).glob("*/ground_truth.csv")):
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "patient_name" not in table.columns:
            continue
        dicom = table[table["patient_name"] != ""]
        for column in PHI_COLUMNS:
            values.update(v for v in dicom[column] if v)
        for name in dicom["patient_name"]:
            family, _, given = name.partition("^")
            values.update({family, given, f"{given} {family}"})
    values.discard("")
    return values
