"""Domain exceptions.

Each subclasses :class:`ValueError` (or another built-in that fits) so callers
can catch broadly, and each message says what was received, what is allowed
and how to fix it — and never echoes a patient identifier.
"""

from __future__ import annotations

__all__ = [
    "ClinicalError",
    "ConfigurationError",
    "IngestError",
    "InvalidSeriesError",
    "LeakageError",
    "ManifestError",
    "PacsUnavailableError",
    "PredictionsError",
    "UnsupportedFileError",
    "WeightsError",
]


class ClinicalError(Exception):
    """Base class of every error the platform raises on purpose."""


class ConfigurationError(ClinicalError, ValueError):
    """A parameter or configuration value is outside what is allowed."""


class ManifestError(ClinicalError, ValueError):
    """A cohort manifest or split table does not follow its schema."""


class PredictionsError(ClinicalError, ValueError):
    """A predictions table (one row per item, class probabilities) does not follow its schema."""


class IngestError(ClinicalError, ValueError):
    """One input file could not be ingested; the message names the file and the reason."""


class UnsupportedFileError(IngestError):
    """The file is readable but holds nothing trainable (e.g. a DICOM SR or RTSTRUCT)."""


class InvalidSeriesError(IngestError):
    """Slices that claim to form one volume do not (mixed sizes, duplicate or missing positions)."""


class PacsUnavailableError(ClinicalError, ConnectionError):
    """The PACS did not answer (after retries); the message names it without credentials. Rerun to resume."""


class LeakageError(ClinicalError, ValueError):
    """A patient, study or series appears in more than one split role."""


class WeightsError(ClinicalError, ValueError):
    """Pretrained weights do not fit the model (shapes, keys or format)."""
