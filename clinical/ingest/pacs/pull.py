"""Pull studies from a PACS into a cohort: find, retrieve what is new, then ingest like a folder.

``pull`` asks the PACS for the studies matching a :class:`~clinical.ingest.pacs.query.StudyQuery`,
skips those an earlier pull fetched completely, streams the others instance by instance into
the staging folder (see :mod:`~clinical.ingest.pacs.staging`), and then calls
:func:`clinical.ingest.ingest` on ``STAGING/studies``: same manifest, pseudonyms, labels and
rejections as a folder ingest of the same files.

Failures:

* transient (connection refused, timeout, HTTP 5xx, association rejected or aborted): the step
  is retried ``config.retries`` times with exponential backoff; then
  :class:`~clinical.errors.PacsUnavailableError` names the PACS (never its credentials) and says
  how many studies were kept. A rerun resumes: completed studies are skipped, instances of a
  half-fetched study already on disk are not fetched again.
* one study the PACS cannot deliver (HTTP 404, a C-GET failure status, no instances): recorded in the report
  and in ``pull_state.json`` (by keyed hash), the pull goes on, and the next pull tries it again.

The staging folder lives next to the cohort (``COHORT.pacs``) by default, not inside it,
because ingest never reads files from inside its own cohort folder.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from tqdm.auto import tqdm

from clinical.errors import ClinicalError, PacsUnavailableError
from clinical.ingest.engine import IngestReport, ingest
from clinical.ingest.identity import load_key
from clinical.ingest.pacs.config import PacsConfig
from clinical.ingest.pacs.dicomweb import DicomwebBackend
from clinical.ingest.pacs.dimse import DimseBackend
from clinical.ingest.pacs.query import StudyQuery
from clinical.ingest.pacs.staging import RetrievalError, Staging, TransientError

__all__ = ["PullReport", "default_staging", "fetch", "pull", "store"]

logger = logging.getLogger(__name__)

#: Loggers of the network libraries, which log request URLs and query identifiers (PHI) at DEBUG/INFO.
_CHATTY_LOGGERS = ("urllib3", "requests", "dicomweb_client", "pynetdicom")


@dataclass
class PullReport:
    """What one pull did: studies matched, skipped as already fetched, fetched now, failed; then the ingest."""

    pacs: str
    staging: Path
    matched: int
    skipped: int
    fetched: int
    instances: int
    failed: dict[str, str] = field(default_factory=dict)  # keyed study hash → PHI-free reason
    ingest: IngestReport | None = None

    def summary(self) -> str:
        """One line for people."""
        line = (f"{self.pacs}: {self.matched} studies matched, {self.skipped} already fetched, "
                f"{self.fetched} fetched ({self.instances} instances), {len(self.failed)} failed")
        return f"{line}; {self.ingest.summary()}" if self.ingest is not None else line


def default_staging(cohort: str | Path) -> Path:
    """Where pulled files are staged for a cohort: the folder ``<cohort>.pacs`` beside it."""
    cohort = Path(cohort)
    return cohort.with_name(f"{cohort.name}.pacs")


def pull(
    config: PacsConfig | str,
    cohort: str | Path,
    *,
    since: date | str | None = None,
    until: date | str | None = None,
    modalities: Sequence[str] = (),
    accessions_csv: str | Path | None = None,
    patients_csv: str | Path | None = None,
    staging: str | Path | None = None,
    labels: str | Path | None = None,
    sites: str | Path | None = None,
    key: str | bytes | None = None,
    workers: int | None = None,
    progress: bool = True,
    on_study: Callable[[int, int], None] | None = None,
    **ingest_options,
) -> PullReport:
    """Fetch the new studies matching the query from the PACS and ingest everything staged into ``cohort``.

    Parameters
    ----------
    config
        A :class:`PacsConfig` or a PACS URL (credentials then come from the environment or ``pacs.json``).
    cohort
        The cohort folder, as for :func:`clinical.ingest.ingest`.
    since, until
        Study date range, inclusive (StudyDate (0008,0020)); ``YYYY-MM-DD`` or dates.
    modalities
        Codes matched against ModalitiesInStudy (0008,0061), e.g. ``("CR", "DX")``; empty: all.
    accessions_csv, patients_csv
        CSV files with an ``accession_number`` or ``patient_id`` column: only those studies.
    staging
        The staging folder (default :func:`default_staging`); keep it, it is what makes pulls incremental.
    labels, sites, key, workers, ingest_options
        Passed to :func:`clinical.ingest.ingest` (the same labels CSV as for the original files works).
    progress
        Show a progress bar over studies (hidden anyway when not on a terminal).
    on_study
        Called as ``on_study(done, total)`` after each study is fetched (progress reporting).

    Returns
    -------
    PullReport

    Raises
    ------
    PacsUnavailableError
        When the PACS stops answering for longer than the retries allow; rerun to resume.
    ConfigurationError
        On an invalid URL or query, or credentials the PACS refuses.
    """
    secret = load_key(key)
    query = StudyQuery.build(since=since, until=until, modalities=modalities, accessions_csv=accessions_csv,
                             patients_csv=patients_csv)
    report = fetch(config, staging if staging is not None else default_staging(cohort), query, key=secret,
                   progress=progress, on_study=on_study)
    report.ingest = ingest([report.staging / "studies"], cohort, labels=labels, sites=sites, key=secret,
                           workers=workers, progress=progress, **ingest_options)
    return report


def fetch(
    config: PacsConfig | str,
    staging: str | Path,
    query: StudyQuery,
    *,
    key: str | bytes | None = None,
    progress: bool = True,
    on_study: Callable[[int, int], None] | None = None,
) -> PullReport:
    """The retrieval half of :func:`pull`: stage the new studies matching ``query``, ingest nothing.

    Complete studies land in ``STAGING/studies/<study key>/``; studies staged before are skipped.
    Raises as :func:`pull` does.
    """
    config = PacsConfig.from_url(config) if isinstance(config, str) else config
    area = Staging(staging, load_key(key))
    backend = _backend(config)
    with _quiet_network_logs():
        try:
            studies = _find(backend, config, query, area)
            report = PullReport(pacs=config.display, staging=area.root, matched=len(studies), skipped=0, fetched=0,
                                instances=0)
            _fetch(backend, config, studies, area, report, progress, on_study)
        finally:
            backend.close()
    logger.info("%s", report.summary())
    return report


def store(config: PacsConfig | str, dataset) -> None:
    """Store one instance into the PACS (STOW-RS or C-STORE, as ``config`` says), retrying transient failures.

    Raises
    ------
    PacsUnavailableError
        When the PACS does not answer within the retries.
    ClinicalError
        When it refuses the instance (naming the PACS and the status, never the instance's identifiers).
    """
    config = PacsConfig.from_url(config) if isinstance(config, str) else config
    backend = _backend(config)
    with _quiet_network_logs():
        try:
            _retrying(lambda: backend.store(dataset), config, "storing an instance")
        except RetrievalError as error:
            raise ClinicalError(f"The PACS {config.display} refused the instance: {error}.") from None
        finally:
            backend.close()


def _backend(config: PacsConfig) -> DicomwebBackend | DimseBackend:
    return DicomwebBackend(config) if config.protocol == "dicomweb" else DimseBackend(config)


def _find(backend, config: PacsConfig, query: StudyQuery, area: Staging) -> dict[str, str]:
    """Keyed study hash → StudyInstanceUID for the union of the query's matches, in a stable order."""
    studies: dict[str, str] = {}
    for match in query.matches():
        for uid in _retrying(lambda m=match: backend.find_studies(m), config, "searching for studies"):
            studies.setdefault(area.study_key(uid), uid)
    return dict(sorted(studies.items()))


def _fetch(backend, config, studies: dict[str, str], area: Staging, report: PullReport, progress, on_study) -> None:
    todo = {k: uid for k, uid in studies.items() if not area.is_done(k)}
    report.skipped = len(studies) - len(todo)
    bar = tqdm(todo.items(), total=len(todo), desc="pull", unit="study", disable=None if progress else True)
    for index, (study_key, uid) in enumerate(bar, start=1):
        try:
            count = _retrying(lambda u=uid, k=study_key: backend.retrieve_study(u, k, area), config,
                              "retrieving studies", report.fetched, len(todo))
            if count == 0:
                raise RetrievalError("the PACS listed the study but delivered no instances")
        except RetrievalError as error:
            logger.warning("Study %s was not retrieved from %s: %s", study_key, config.display, error)
            report.failed[study_key] = str(error)
            area.fail(study_key, str(error))
            continue
        area.complete(study_key, count)
        report.fetched += 1
        report.instances += count
        if on_study is not None:
            on_study(index, len(todo))


def _retrying(step: Callable, config: PacsConfig, doing: str, fetched: int | None = None, total: int = 0):
    """Run ``step``, retrying transient failures with exponential backoff; then a clear error."""
    attempt = 0
    while True:
        try:
            return step()
        except TransientError as error:
            if attempt >= config.retries:
                kept = "" if fetched is None else f"{fetched} of {total} new studies were fetched and kept. "
                raise PacsUnavailableError(
                    f"The PACS {config.display} did not answer while {doing} ({error}; {attempt + 1} attempts). "
                    f"{kept}Check that the PACS is up and rerun the pull to resume."
                ) from None
            delay = config.backoff * 2**attempt
            logger.warning("PACS %s: %s; retrying in %.1f s", config.display, error, delay)
            time.sleep(delay)
            attempt += 1


@contextlib.contextmanager
def _quiet_network_logs() -> Iterator[None]:
    """Hold the network libraries' loggers at WARNING during a pull, so no URL or identifier is logged."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
