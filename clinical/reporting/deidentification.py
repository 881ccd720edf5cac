"""What ingest's de-identification amounts to in the terms of DICOM PS3.15 Annex E (confidentiality profiles).

Ingest keeps no DICOM header at all: a cohort holds decoded pixel arrays and a manifest whose only
identifiers are keyed HMAC-SHA256 pseudonyms (:mod:`clinical.ingest.identity`). Measured against the
Basic Application Level Confidentiality Profile and its options, that is the profile with every
attribute removed, UIDs replaced, no date kept, and burned-in text handled by rejecting the image
(not by cleaning its pixels) unless the cohort was ingested with ``keep_burned_in``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["deidentification_options"]


def deidentification_options(options: Mapping[str, Any]) -> list[dict[str, str]]:
    """The PS3.15 profile and options, each with its code (CID 7050), whether it applies, and how.

    ``options`` is the ``options`` entry of ``cohort.json`` (the ingest options the cohort was made with).
    """
    burned_in = bool(options.get("keep_burned_in", False))
    return [
        {"code": "113100", "option": "Basic Application Level Confidentiality Profile", "applied": "yes",
         "how": "no DICOM attribute is copied into the cohort: arrays and a manifest of keyed pseudonyms only"},
        {"code": "113101", "option": "Clean Pixel Data Option",
         "applied": "no: burned-in images kept" if burned_in else "by exclusion",
         "how": ("images with Burned In Annotation (0028,0301) YES were kept (keep_burned_in); their text was "
                 "not removed" if burned_in else
                 "images with Burned In Annotation (0028,0301) YES are rejected (code burned-in-annotation), "
                 "not cleaned; secondary captures and ultrasound are counted as a burned-in risk")},
        {"code": "113102", "option": "Clean Recognizable Visual Features Option", "applied": "no",
         "how": "pixels are kept as acquired (faces in head CT/MR would stay recognisable)"},
        {"code": "113103", "option": "Clean Graphics Option", "applied": "yes (removed)",
         "how": "overlays and graphic annotations are not read"},
        {"code": "113104", "option": "Clean Structured Content Option", "applied": "yes (removed)",
         "how": "structured reports and their content are not ingested"},
        {"code": "113105", "option": "Clean Descriptors Option", "applied": "yes (removed)",
         "how": "study, series and protocol descriptions are not kept"},
        {"code": "113106", "option": "Retain Longitudinal Temporal Information Full Dates Option", "applied": "no",
         "how": "no date or time is kept"},
        {"code": "113107", "option": "Retain Longitudinal Temporal Information Modified Dates Option",
         "applied": "no", "how": "no date or time is kept"},
        {"code": "113108", "option": "Retain Patient Characteristics Option", "applied": "no",
         "how": "sex, age, size and weight are not kept"},
        {"code": "113109", "option": "Retain Device Identity Option", "applied": "no",
         "how": "the site is kept as a label (Institution Name or the folder), device serial numbers are not"},
        {"code": "113110", "option": "Retain UIDs Option", "applied": "no (replaced)",
         "how": "Study and Series Instance UIDs become keyed HMAC-SHA256 pseudonyms (study_key, series_key)"},
        {"code": "113111", "option": "Retain Safe Private Option", "applied": "no",
         "how": "no private attribute is kept"},
        {"code": "113112", "option": "Retain Institution Identity Option", "applied": "partly",
         "how": "the site name is kept, as the per-site analysis needs it"},
        {"code": "—", "option": "Patient ID (0010,0020)", "applied": "replaced",
         "how": "patient_key: a keyed HMAC-SHA256 pseudonym; the key never leaves the site"},
        {"code": "—", "option": "File and folder names", "applied": "replaced",
         "how": "sources are named by keyed pseudonyms (src-…); the map back stays in a private local file"},
    ]
