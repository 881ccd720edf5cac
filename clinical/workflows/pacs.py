"""Predictions back into the PACS: pull new studies, predict with a registered model, store an SR in each study.

``predict_to_pacs(pacs, "models:/NAME@champion", staging=...)`` stages the studies matching the query
that it has not handled before (:func:`clinical.ingest.pacs.fetch`: incremental, resumable), predicts
every image instance with the registered pyfunc model (the bytes as the PACS holds them, the model's
own preprocessing), combines them into one study probability by their mean (as the metrics combine
items), and stores a Structured Report (:func:`clinical.reporting.prediction_sr`) into the same study.
Results name studies by keyed hash only.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pydicom

from clinical.errors import ClinicalError
from clinical.ingest.pacs import PacsConfig, StudyQuery, fetch, store
from clinical.reporting import prediction_sr
from clinical.tracking.pyfunc import FILE_COLUMN
from clinical.tracking.versions import load_pyfunc, resolve_version

__all__ = ["PacsPrediction", "predict_to_pacs"]

logger = logging.getLogger(__name__)

#: Modalities of instances that are no input image (reports, presentation states, key objects).
_NOT_IMAGES = {"SR", "PR", "KO", "DOC"}
#: Instances per predict call (the pyfunc refuses requests of more rows than its limit, 64 by default).
_ROWS = 16


@dataclass(frozen=True)
class PacsPrediction:
    """One study's prediction as stored: the study's keyed hash, the probabilities, the SR's SOP Instance UID."""

    study_key: str
    probabilities: dict[str, float]
    instances: int
    sr_uid: str


def predict_to_pacs(
    pacs: PacsConfig | str,
    model_uri: str,
    *,
    staging: str | Path,
    since: date | str | None = None,
    until: date | str | None = None,
    modalities: tuple[str, ...] = (),
    key: str | bytes | None = None,
) -> list[PacsPrediction]:
    """Predict every new study matching the query and store its SR into the PACS; one result per study.

    ``staging`` holds the studies handled so far (keep it: it is what makes the next run skip them);
    the SR of a study is stored before the study counts as handled, by the study folder's marker.

    Raises
    ------
    PacsUnavailableError, ConfigurationError
        As :func:`clinical.ingest.pacs.pull`; and ``ConfigurationError`` for an unknown model.
    """
    version = resolve_version(model_uri)
    model = load_pyfunc(version.uri)
    query = StudyQuery.build(since=since, until=until, modalities=modalities)
    report = fetch(pacs, staging, query, key=key, progress=False)
    results = []
    for folder in sorted((report.staging / "studies").iterdir()):
        marker = folder / "prediction.json"
        if marker.is_file():
            continue
        result = _predict_study(folder, model, version.name, version.version, pacs)
        if result is not None:
            marker.write_text(pd.Series(result.probabilities).to_json())
            results.append(result)
    logger.info("%s: %d new studies predicted with %s and their SRs stored.", report.pacs, len(results), version.uri)
    return results


def _predict_study(folder: Path, model, name: str, version: str, pacs: PacsConfig | str) -> PacsPrediction | None:
    files = sorted(folder.rglob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    images = [(f, h) for f, h in zip(files, headers, strict=True) if str(h.get("Modality", "")) not in _NOT_IMAGES]
    if not images:
        logger.warning("Study %s holds no image instance; nothing predicted.", folder.name)
        return None
    payload = pd.DataFrame({FILE_COLUMN: [base64.b64encode(f.read_bytes()).decode() for f, _ in images]})
    try:  # in requests of the served model's default row limit
        probabilities = pd.concat([model.predict(payload.iloc[i:i + _ROWS]) for i in range(0, len(payload), _ROWS)]
                                  ).mean(axis=0)
    except ClinicalError as error:  # an instance the model cannot read costs only its study
        logger.warning("Study %s was not predicted: %s", folder.name, error)
        return None
    probabilities = {str(c): float(p) for c, p in probabilities.items()}
    sr = prediction_sr([h for _, h in images], probabilities, model=name, version=version)
    store(pacs, sr)
    return PacsPrediction(study_key=folder.name, probabilities=probabilities, instances=len(images),
                          sr_uid=str(sr.SOPInstanceUID))
