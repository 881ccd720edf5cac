"""Reports of what the platform made, for the people who must trust it.

:func:`render_model_report` turns a registered version's artefacts (:class:`ModelReportInputs`) into one
self-contained HTML page, with the TRIPOD+AI and CLAIM 2024 items mapped to its sections;
:func:`print_pdf` prints that page with headless Chromium; :func:`prediction_sr` writes a study's
prediction as a DICOM Structured Report for the PACS. Above ``evaluation`` (it reuses its figures and
metrics), beside ``training``; it knows nothing of MLflow: the use case reads the registry.
"""

from __future__ import annotations

from clinical.reporting.deidentification import deidentification_options
from clinical.reporting.guidelines import CLAIM_2024, TRIPOD_AI, guideline_rows
from clinical.reporting.model_report import ModelReportInputs, render_model_report
from clinical.reporting.pdf import chromium_binary, has_chromium, print_pdf
from clinical.reporting.structured import prediction_sr, read_prediction_sr

__all__ = [
    "CLAIM_2024",
    "TRIPOD_AI",
    "ModelReportInputs",
    "chromium_binary",
    "deidentification_options",
    "guideline_rows",
    "has_chromium",
    "prediction_sr",
    "print_pdf",
    "read_prediction_sr",
    "render_model_report",
]
