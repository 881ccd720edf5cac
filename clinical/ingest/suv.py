"""Standardised uptake value normalised by body weight (SUVbw) from a PET file's own tags.

    SUVbw = C × W / (D × 2^(−Δt / T½))

with ``C`` the pixel value in Bq/ml after the Rescale Slope/Intercept (0028,1053)/(0028,1052)
(Units (0054,1001) ``BQML``), ``W`` Patient's Weight (0010,1030) in g (the tag is kg), ``D``
Radionuclide Total Dose (0018,1074) in Bq, ``T½`` Radionuclide Half Life (0018,1075) in s, and
``Δt`` the time from Radiopharmaceutical Start Time (0018,1072) to Series Time (0008,0031):
with Decay Correction (0054,1102) ``START`` the scanner decay-corrected every pixel to the
series start, so the dose is decayed to that moment. ``ADMIN`` images are corrected to the
injection already (Δt = 0). Anything else (``NONE``, no correction) is refused rather than
guessed, as the QIBA FDG-PET profile advises. One factor holds for the whole series (its
first file is read). Hand-written because none of our libraries converts PET to SUV.
"""

from __future__ import annotations

from datetime import datetime, time

import pydicom
from pydicom.valuerep import TM

from clinical.ingest.reasons import Reason, Rejected

__all__ = ["SUV_TAGS", "suv_bw_factor"]

#: What :func:`suv_bw_factor` reads.
SUV_TAGS = ["Units", "DecayCorrection", "PatientWeight", "SeriesTime", "AcquisitionTime",
            "RadiopharmaceuticalInformationSequence"]


def suv_bw_factor(ds: pydicom.Dataset) -> float:
    """SUVbw per Bq/ml of one PET series (multiply the Bq/ml pixels by it).

    Raises
    ------
    clinical.ingest.reasons.Rejected
        Code ``suv-tags`` naming the element that is missing or unusable: Units not BQML,
        Decay Correction neither START nor ADMIN, no positive weight, dose or half-life, or no
        injection or series time.
    """
    units = str(ds.get("Units", "") or "").strip().upper()
    if units != "BQML":
        _refuse(f"Units (0054,1001) is {units or 'missing'}, not BQML")
    correction = str(ds.get("DecayCorrection", "") or "").strip().upper()
    if correction not in ("START", "ADMIN"):
        _refuse(f"Decay Correction (0054,1102) is {correction or 'missing'}; only START and ADMIN are supported")
    weight_kg = _positive(ds, "PatientWeight", "Patient's Weight (0010,1030)")
    drugs = ds.get("RadiopharmaceuticalInformationSequence") or []
    if not drugs:
        _refuse("the Radiopharmaceutical Information Sequence (0054,0016) is missing")
    drug = drugs[0]
    dose = _positive(drug, "RadionuclideTotalDose", "Radionuclide Total Dose (0018,1074)")
    half_life = _positive(drug, "RadionuclideHalfLife", "Radionuclide Half Life (0018,1075)")
    elapsed = 0.0
    if correction == "START":
        start = _time(drug, "RadiopharmaceuticalStartTime", "Radiopharmaceutical Start Time (0018,1072)")
        series = _time(ds, "SeriesTime", "Series Time (0008,0031)")
        elapsed = (datetime.combine(datetime.min, series) - datetime.combine(datetime.min, start)).total_seconds()
        if elapsed < 0:  # the scan started after midnight of the injection day
            elapsed += 24 * 3600
    return weight_kg * 1000.0 / (dose * 2.0 ** (-elapsed / half_life))


def _refuse(why: str) -> None:
    raise Rejected(Reason.SUV_TAGS, f"the PET series cannot be converted to SUVbw: {why}")


def _positive(ds: pydicom.Dataset, keyword: str, name: str) -> float:
    try:
        value = float(ds.get(keyword, None))
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        _refuse(f"{name} is missing or not a positive number")
    return value


def _time(ds: pydicom.Dataset, keyword: str, name: str) -> time:
    value = ds.get(keyword, None)
    try:
        parsed = TM(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        parsed = None
    if parsed is None:
        _refuse(f"{name} is missing or not a DICOM time")
    return time(parsed.hour, parsed.minute, parsed.second, parsed.microsecond)
