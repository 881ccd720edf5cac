"""The fixed vocabulary of rejection codes: the ``code`` column beside ``reason`` in ``rejections.parquet``.

``reason`` is a sentence a person can act on; ``code`` is one of :class:`Reason`, so that
rejections can be filtered and counted (``rejections.groupby("code").size()``). Each code
carries its one-line meaning (``Reason.TOO_LARGE.meaning``). A decoder that knows why it
refuses a file raises :class:`Rejected` with the code; :func:`code_of` names the code of
any other error a decoder raises.
"""

from __future__ import annotations

import re
from enum import StrEnum

from clinical.errors import ConfigurationError, IngestError, InvalidSeriesError, UnsupportedFileError

__all__ = ["Reason", "Rejected", "code_of", "looks_corrupt"]

#: How pydicom, PIL, tifffile, nibabel and the codecs they call word truncated or damaged pixel data.
_CORRUPT = re.compile(
    r"truncat|less than expected|shorter than|premature|corrupt|not enough|end of the data|broken data stream"
    r"|does ?n[o']t match the expected|incomplete|failed to read \d+ bytes|bad_data|empty input",
    re.IGNORECASE,
)


class Reason(StrEnum):
    """A rejection code; the value is what ``rejections.parquet`` holds, ``meaning`` says what it stands for."""

    meaning: str

    def __new__(cls, value: str, meaning: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    UNSUPPORTED = "unsupported", "not an image format ingest reads (recognised by content, not by extension)"
    UNREADABLE = "unreadable", "the operating system refused to read the file (permissions, I/O error, vanished)"
    NOT_REGULAR_FILE = "not-regular-file", "a FIFO, socket or device, not a regular file"
    UNREADABLE_FOLDER = "unreadable-folder", "a folder that cannot be listed, so its files cannot be counted"
    LINK_LOOP = "link-loop", "a symbolic link that leads back into itself"
    DANGLING_LINK = "dangling-link", "a symbolic link whose target does not exist"
    EXCLUDED = "excluded", "left out on purpose: an exclude pattern given, a labels/sites table, the cohort folder"
    EMPTY_FILE = "empty-file", "a file of 0 bytes"
    BAD_HEADER = "bad-header", "the file's header (DICOM, NIfTI, TIFF structure) cannot be parsed"
    NO_IMAGE = "no-image", "readable, but holds nothing trainable (no Pixel Data, zero-sized, no tissue)"
    TOO_LARGE = "too-large", "the decoded size its header claims exceeds max_decoded_mb (or PIL's pixel limit)"
    CORRUPT_PIXELS = "corrupt-pixels", "pixel data truncated, shorter than declared, or decoded with a warning"
    BURNED_IN_ANNOTATION = "burned-in-annotation", "Burned In Annotation (0028,0301) is YES: text in the pixels"
    WORKER_DIED = "worker-died", "the decoding process died (killed, out of memory, crashed in a codec)"
    OUT_OF_MEMORY = "out-of-memory", "decoding raised MemoryError in a process that survived"
    DUPLICATE_CONTENT = "duplicate-content", "the same bytes as another input (kept once, or it leaks across splits)"
    DUPLICATE_INSTANCE = "duplicate-instance", "the same SOP Instance UID as another input (kept once)"
    SERIES_INCOMPLETE = "series-incomplete", "a series with a missing slice (irregular gaps) or missing geometry"
    SERIES_INCONSISTENT = "series-inconsistent", "slices of one series that do not form one volume"
    DECODE_ERROR = "decode-error", "the pixels could not be decoded for another reason (see the text)"
    RESAMPLE_ERROR = "resample-error", "resampling to target_spacing/target_size failed"
    CHANNEL_MISSING = "channel-missing", "--channels asks for a series of a modality this study does not have"
    CHANNEL_MISMATCH = "channel-mismatch", "series to stack as channels: other Frames of Reference, or ambiguous"
    SUV_TAGS = "suv-tags", "a PET series lacks what SUVbw needs (units, decay correction, weight, dose, times)"
    BAD_OPTION = "bad-option", "an ingest option does not fit this file (e.g. tile_level beyond its levels)"
    LABEL_MISSING = "label-missing", "a labels table is required and has no label for this input"
    INTERNAL_ERROR = "internal-error", "no outcome was recorded for the file: a bug, please report it"


class Rejected(IngestError):
    """An :class:`~clinical.errors.IngestError` that carries its rejection :class:`Reason`.

    Raised by decoders that know why they refuse a file; it is still an ``IngestError``,
    so callers catching that (such as :func:`clinical.ingest.read_file`'s) see no change.
    """

    def __init__(self, code: Reason | str, message: str) -> None:
        super().__init__(message)
        self.code = Reason(code)


def code_of(error: BaseException, *, stage: str = "decode") -> Reason:
    """The code of an error raised while a unit was decoded (``stage`` ``"decode"``) or resampled."""
    if isinstance(error, Rejected):
        return error.code
    if isinstance(error, MemoryError):
        return Reason.OUT_OF_MEMORY
    if isinstance(error, ConfigurationError):
        return Reason.BAD_OPTION
    if isinstance(error, InvalidSeriesError):
        return Reason.SERIES_INCONSISTENT
    if isinstance(error, UnsupportedFileError):
        return Reason.NO_IMAGE
    if stage == "resample":
        return Reason.RESAMPLE_ERROR
    return Reason.DECODE_ERROR


def looks_corrupt(message: str) -> bool:
    """Whether a decoder's error or warning message says the pixel data is truncated or damaged."""
    return bool(_CORRUPT.search(message))
