"""DICOMweb: QIDO-RS to find studies and their instances, WADO-RS to retrieve them one by one, STOW-RS to store.

Built on ``dicomweb-client``. Instances are asked for as stored (``transfer-syntax=*``),
so the bytes on disk are the bytes the PACS holds and items get the same ids as from the
original files. Errors are reduced to their type and HTTP status: request URLs carry
identifiers (accession numbers, patient IDs) and never reach a message.
"""

from __future__ import annotations

from collections.abc import Callable

import requests
from dicomweb_client.api import DICOMwebClient

from clinical.errors import ConfigurationError
from clinical.ingest.pacs.config import PacsConfig
from clinical.ingest.pacs.staging import RetrievalError, Staging, TransientError

__all__ = ["DicomwebBackend"]

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_PAGE = 500
_AS_STORED = (("application/dicom", "*"),)


class DicomwebBackend:
    """Find and retrieve over DICOMweb; one HTTP session for the whole pull."""

    def __init__(self, config: PacsConfig) -> None:
        self._config = config
        session = requests.Session()
        if config.username is not None:
            session.auth = (config.username, config.password or "")
        self._session = session
        self._client = DICOMwebClient(config.base_url, session=session, timeout=config.timeout)
        self._client.set_http_retry_params(retry=False)  # retries are ours, with backoff, around whole steps

    def find_studies(self, match: dict[str, str]) -> list[str]:
        """StudyInstanceUIDs of the studies matching one dictionary (QIDO-RS, all pages)."""
        search = self._client.search_for_studies
        return _all_pages(lambda offset: _call(lambda: search(search_filters=match, offset=offset, limit=_PAGE),
                                               "search"), _STUDY_UID)

    def retrieve_study(self, study_uid: str, study_key: str, staging: Staging) -> int:
        """Write every instance of one study not already staged; the number of instances in the study."""
        search = self._client.search_for_instances
        instances = _all_pages(
            lambda offset: _call(lambda: search(study_instance_uid=study_uid, offset=offset, limit=_PAGE),
                                 "instance search"),
            _SOP_UID, _SERIES_UID,
        )
        for sop_uid, series_uid in instances:
            if staging.has_instance(study_key, series_uid, sop_uid):
                continue
            dataset = _call(
                lambda s=series_uid, i=sop_uid: self._client.retrieve_instance(study_uid, s, i, media_types=_AS_STORED),
                "retrieve",
            )
            staging.write_instance(study_key, dataset)
        return len(instances)

    def store(self, dataset) -> None:
        """Send one instance into the PACS (STOW-RS), e.g. a prediction's Structured Report."""
        _call(lambda: self._client.store_instances([dataset]), "store")

    def close(self) -> None:
        self._session.close()


def _all_pages(search: Callable[[int], list[dict]], *tags: str) -> list[tuple[str, ...] | str]:
    """The ``tags`` values of every result, page by page.

    By hand rather than dicomweb-client's ``get_remaining``, which loops forever on a server that
    ignores ``offset`` (Orthanc 1.10 does with ModalitiesInStudy): paging stops at a short page
    or at a page with nothing new.
    """
    seen: dict = {}
    offset = 0
    while True:
        page = search(offset)
        values = [_value(r, tags) for r in page]
        new = [v for v in values if v is not None and v not in seen]
        seen.update(dict.fromkeys(new))
        if len(page) < _PAGE or not new:
            return list(seen)
        offset += len(page)


def _value(result: dict, tags: tuple[str, ...]):
    try:
        values = tuple(result[tag]["Value"][0] for tag in tags)
    except (KeyError, IndexError, TypeError):
        return None
    return values[0] if len(values) == 1 else values


def _call(step: Callable, what: str):
    """Run one HTTP step, sorting failures into transient (retry), refused credentials and study-level."""
    try:
        return step()
    except (requests.ConnectionError, requests.Timeout) as error:
        raise TransientError(f"{what}: {type(error).__name__}") from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise ConfigurationError(
                f"The PACS refused the credentials (HTTP {status}); check CLINICAL_PACS_USER and "
                "CLINICAL_PACS_PASSWORD (or pacs.json in the configuration folder)."
            ) from None
        if status in _TRANSIENT_STATUS:
            raise TransientError(f"{what}: HTTP {status}") from None
        raise RetrievalError(f"{what} failed with HTTP {status}") from None
    except (ValueError, KeyError, IndexError) as error:  # an answer that is not valid DICOM/JSON
        raise RetrievalError(f"{what}: unreadable answer ({type(error).__name__})") from None
