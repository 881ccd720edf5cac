"""Ingest from a PACS: find studies (QIDO-RS or C-FIND), retrieve the new ones (WADO-RS, C-GET or C-MOVE), ingest.

``pull(config, cohort, since=..., modalities=...)`` is the entry point (``fetch`` its retrieval half, ``store``
sends an instance back); :class:`PacsConfig` says where
the PACS is (:mod:`~clinical.ingest.pacs.config`), :class:`StudyQuery` what to ask for
(:mod:`~clinical.ingest.pacs.query`), :mod:`~clinical.ingest.pacs.dicomweb` and
:mod:`~clinical.ingest.pacs.dimse` how, and :mod:`~clinical.ingest.pacs.staging` where files wait.
"""

from __future__ import annotations

from clinical.ingest.pacs.config import PacsConfig
from clinical.ingest.pacs.pull import PullReport, default_staging, fetch, pull, store
from clinical.ingest.pacs.query import StudyQuery

__all__ = ["PacsConfig", "PullReport", "StudyQuery", "default_staging", "fetch", "pull", "store"]
