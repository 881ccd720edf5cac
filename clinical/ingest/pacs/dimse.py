"""DIMSE: C-FIND to find studies, C-GET (or C-MOVE to a Storage SCP of ours) to retrieve them, C-STORE to store.

The Study Root information model is used throughout. For retrieval, a study-level C-FIND
first asks for SOPClassesInStudy (0008,0062), so that the association offers a storage
presentation context (and, for C-GET, the SCP role) for exactly the SOP classes the study
holds; a PACS that does not answer it gets pynetdicom's standard storage contexts. Each
instance received by C-STORE is written to the staging folder at once, so memory holds one
instance at a time. A study interrupted half-way is retrieved whole again (C-GET and C-MOVE
work by study); the files already staged are overwritten with the same bytes.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from clinical.errors import ConfigurationError
from clinical.ingest.pacs.config import PacsConfig
from clinical.ingest.pacs.staging import RetrievalError, Staging, TransientError

__all__ = ["DimseBackend"]

#: Offered per SOP class, each in its own context, so the PACS can send every instance as stored.
_TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1, JPEG2000Lossless, RLELossless)
_MAX_CONTEXTS = 126  # 128 allowed by the standard, less the query/retrieve models
_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000
_WARNING = 0xB000


class DimseBackend:
    """Find and retrieve over DIMSE; one association per step, as PACSs expect."""

    def __init__(self, config: PacsConfig) -> None:
        self._config = config
        self._server = None  # our Storage SCP for C-MOVE, started at the first move and kept for the pull
        self._receiver: _Receiver | None = None

    def find_studies(self, match: dict[str, str]) -> list[str]:
        """StudyInstanceUIDs of the studies matching one dictionary (C-FIND at STUDY level)."""
        query = _study_query(StudyInstanceUID="", **match)
        return [str(d.StudyInstanceUID) for d in self._find(query) if d.get("StudyInstanceUID")]

    def retrieve_study(self, study_uid: str, study_key: str, staging: Staging) -> int:
        """Write every instance of one study to the staging folder; the number received."""
        answers = self._find(_study_query(StudyInstanceUID=study_uid, SOPClassesInStudy=""))
        sop_classes = sorted({str(c) for a in answers for c in _values(a.get("SOPClassesInStudy"))})
        contexts = _storage_contexts(sop_classes)
        receiver = _Receiver(staging, study_key)
        query = _study_query(StudyInstanceUID=study_uid)
        if self._config.retrieve == "get":
            ae = self._ae()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            for sop_class, syntax in contexts:
                ae.add_requested_context(sop_class, syntax)
            roles = [build_role(c, scp_role=True) for c in dict.fromkeys(c for c, _ in contexts)]
            handlers = [(evt.EVT_C_STORE, receiver.on_store)]
            statuses = self._request(ae, handlers, roles, lambda a: a.send_c_get(query, _GET))
        else:
            statuses = self._move(query, receiver)
        if receiver.error:
            raise RetrievalError(receiver.error)
        _check_final(statuses, "retrieve")
        return receiver.count

    def store(self, dataset: Dataset) -> None:
        """Send one instance into the PACS (C-STORE), e.g. a prediction's Structured Report."""
        ae = self._ae()
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
        _check_final(self._request(ae, [], [], lambda assoc: [(assoc.send_c_store(dataset), None)]), "C-STORE")

    def close(self) -> None:
        """Stop our Storage SCP if a C-MOVE started it."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _ae(self) -> AE:
        ae = AE(ae_title=self._config.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self._config.timeout
        ae.maximum_associations = 1
        return ae

    def _find(self, query: Dataset) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        answers: list[Dataset] = []
        statuses = self._request(ae, [], [], lambda a: _collect(a.send_c_find(query, _FIND), answers))
        _check_final(statuses, "search")
        return answers

    def _move(self, query: Dataset, receiver: _Receiver) -> list[int]:
        """C-MOVE to our own AE title; a Storage SCP of ours listens on ``move_port`` for the whole pull."""
        if self._server is None:
            scp = AE(ae_title=self._config.calling_aet)
            scp.dimse_timeout = scp.network_timeout = self._config.timeout
            for context in StoragePresentationContexts:
                scp.add_supported_context(context.abstract_syntax, _TRANSFER_SYNTAXES)
            handlers = [(evt.EVT_C_STORE, self._on_moved)]
            try:
                self._server = scp.start_server(("", self._config.move_port), block=False, evt_handlers=handlers)
            except OSError as error:
                raise ConfigurationError(
                    f"Our Storage SCP for C-MOVE cannot listen on move_port {self._config.move_port} "
                    f"({type(error).__name__}); free the port or choose another in the URL and in the PACS."
                ) from None
        self._receiver = receiver
        try:
            ae = self._ae()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            return self._request(ae, [], [], lambda a: a.send_c_move(query, self._config.calling_aet, _MOVE))
        finally:
            self._receiver = None

    def _on_moved(self, event) -> int:
        if self._receiver is None:  # nothing was asked for: refuse ("out of resources")
            return 0xA700
        return self._receiver.on_store(event)

    def _request(self, ae: AE, handlers, roles, send) -> list[int]:
        """Associate, run one request, release; the statuses it answered."""
        config = self._config
        assoc = ae.associate(config.host, config.port, ae_title=config.called_aet, ext_neg=roles or None,
                             evt_handlers=handlers or None)
        if assoc.is_rejected:
            raise TransientError("association rejected")
        if not assoc.is_established:
            raise TransientError("no association (the PACS did not answer)")
        try:
            statuses = [s.Status for s, _ in send(assoc) if s is not None and "Status" in s]
            if assoc.is_aborted:
                raise TransientError("association aborted")
            return statuses
        finally:
            if assoc.is_established:
                assoc.release()


class _Receiver:
    """Writes the instances of one study as they arrive by C-STORE; remembers the first failure."""

    def __init__(self, staging: Staging, study_key: str) -> None:
        self.staging, self.study_key = staging, study_key
        self.count = 0
        self.error: str | None = None

    def on_store(self, event) -> int:
        try:
            self.staging.write_instance(self.study_key, event.dataset, transfer_syntax=event.context.transfer_syntax)
        except Exception as error:  # a bad instance fails the study; the PACS is told so
            self.error = self.error or f"an instance could not be written ({type(error).__name__})"
            return 0xA700
        self.count += 1
        return _SUCCESS


_FIND = StudyRootQueryRetrieveInformationModelFind
_GET = StudyRootQueryRetrieveInformationModelGet
_MOVE = StudyRootQueryRetrieveInformationModelMove


def _study_query(**keywords: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    for keyword, value in keywords.items():
        setattr(query, keyword, value)
    return query


def _collect(responses, answers: list[Dataset]):
    for status, identifier in responses:
        if status is not None and status.get("Status") in _PENDING and identifier is not None:
            answers.append(identifier)
        yield status, identifier


def _values(value) -> list[str]:
    """A multi-valued element's values (pydicom gives a str for one value, a MultiValue for several)."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _storage_contexts(sop_classes: list[str]) -> list[tuple[str, list[str]]]:
    """One context per (SOP class, transfer syntax) for the study's classes, else the standard storage ones."""
    if sop_classes and len(sop_classes) * len(_TRANSFER_SYNTAXES) <= _MAX_CONTEXTS:
        return [(c, [ts]) for c in sop_classes for ts in _TRANSFER_SYNTAXES]
    return [(c.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            for c in StoragePresentationContexts[:_MAX_CONTEXTS]]


def _check_final(statuses: list[int], what: str) -> None:
    """The last status decides: success goes on, a warning or failure rejects the study."""
    if not statuses:
        raise TransientError(f"{what}: no answer")
    final = statuses[-1]
    if final == _SUCCESS:
        return
    if final in _PENDING:
        raise TransientError(f"{what}: the answer stopped before its final status")
    if final == _WARNING:
        raise RetrievalError(f"{what}: some instances failed (status 0x{final:04X})")
    raise RetrievalError(f"{what} failed (status 0x{final:04X})")

