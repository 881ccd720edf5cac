"""DICOM: the header-only scan that indexes a tree, and the pixel pipeline.

Header scan
    :func:`parse_header` reads only the elements grouping needs (``specific_tags``,
    Pixel Data deferred so its presence is known without loading it), once per file, and
    :func:`header_of` makes the :class:`DicomHeader` in which PatientID (0010,0020), StudyInstanceUID
    (0020,000D) and SeriesInstanceUID (0020,000E) are already keyed hashes: raw
    identifiers never leave this module.

Pixel pipeline (:func:`modality_pixels`, :func:`window`)
    1. ``pydicom.pixels.apply_modality_lut``: Rescale Slope/Intercept (0028,1053)/(0028,1052)
       or the Modality LUT, so CT is in HU. Colour images (Samples per Pixel 3) skip it;
       PALETTE COLOR goes through ``apply_color_lut``; YBR is converted to RGB by pydicom.
    2. Windowing to [0, 1], per modality:

       ========  ==============================================================
       CT        a preset window (``ct_window``): soft_tissue C40/W400 (default),
                 brain C40/W80, lung C-600/W1500, bone C400/W1800, or ``header``
                 (Window Center/Width (0028,1050)/(0028,1051), else soft_tissue)
       MR PT NM  percentiles 0.5–99.5 of the image or whole volume (arbitrary units)
       others    (CR, DX, MG, XA, US, OT, ...) the VOI LUT Sequence (0028,3010) or
                 the first Window Center/Width of the file, else percentiles 0.5–99.5
       colour    divided by 2**BitsStored − 1
       ========  ==============================================================

    3. MONOCHROME1 (0028,0004) is inverted so that bright always means dense.

Decoders (:func:`decode_image`, :func:`decode_multiframe`, :func:`decode_volume`)
    One planned unit (a single-frame image, a multi-frame file, or the ordered
    slices of one series) to its item, windowed and in the uint16 cache dtype.

Before any pixel is decoded (:func:`screen`, a header-only read)
    - the decoded size, Rows × Columns × Number of Frames × Samples per Pixel × Bits Allocated
      (0028,0010/0011/0008/0002/0100), is checked against ``max_decoded_mb`` (code ``too-large``);
    - Burned In Annotation (0028,0301) = YES is rejected unless ``keep_burned_in``
      (code ``burned-in-annotation``); images of SOP classes that often carry burned-in text
      (:data:`BURNED_IN_RISK_CLASSES`: secondary capture, ultrasound) are flagged in the manifest
      (``burned_in_risk``);
    - each frame of JPEG-family encapsulated Pixel Data must end with its EOI/EOC marker
      ``FF D9``: some codecs decode a truncated fragment silently into grey (code ``corrupt-pixels``).

    Pixel Data shorter than declared, or a codec that reports truncated or corrupt data, is
    also a ``corrupt-pixels`` rejection, never an item.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from clinical.errors import ConfigurationError, IngestError, InvalidSeriesError, UnsupportedFileError
from clinical.ingest.elements import CHARSET, read_wanted
from clinical.ingest.identity import keyed_hash
from clinical.ingest.intensity import percentile_scale, unit_interval_to_uint16
from clinical.ingest.layout import PIXEL_TAGS, PixelHeader, header_from_layout
from clinical.ingest.reasons import Reason, Rejected, looks_corrupt
from clinical.ingest.units import DecodedItem, Unit
from clinical.ingest.values import Values

if TYPE_CHECKING:
    from clinical.ingest.options import IngestOptions

__all__ = [
    "BURNED_IN_RISK_CLASSES",
    "CT_WINDOWS",
    "DEFAULT_CT_WINDOW",
    "PIXEL_TAGS",
    "VOLUME_MODALITIES",
    "DicomHeader",
    "burned_in_risk",
    "decode_image",
    "decode_multiframe",
    "decode_volume",
    "header_of",
    "load_pixels",
    "load_volume",
    "modality_pixels",
    "parse_header",
    "quiet_pydicom",
    "read_dataset",
    "screen",
    "scrub_message",
    "volume_spacing",
    "window",
]

#: Cross-sectional modalities whose single-frame slices of one series are stacked into a volume.
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})

#: CT window presets as (center, width) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
#: The CT window of ingest and of :func:`window` unless one is asked for.
DEFAULT_CT_WINDOW = "soft_tissue"

_IN_MEMORY_BYTES = 64 << 20
#: Values longer than this are not read by the header parse (pydicom defers them).
_DEFER_BYTES = 1024

#: SOP classes that often carry burned-in text: Secondary Capture (1.2.840.10008.5.1.4.1.1.7 and its
#: multi-frame variants .7.1–.7.4) and Ultrasound (single- and multi-frame, current and retired).
BURNED_IN_RISK_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.3",
)

#: What :func:`screen` reads (header only, before Pixel Data).
_SCREEN_TAGS = ("SOPClassUID", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated",
                "BurnedInAnnotation")

#: Transfer syntaxes whose frames are JPEG, JPEG-LS, JPEG 2000 or HTJ2K codestreams, all ending in FF D9.
_JPEG_FAMILY = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
})


_HEADER_TAGS = [
    "SOPClassUID",
    "Modality",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "InstitutionName",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
]


@dataclass(frozen=True)
class DicomHeader:
    """What grouping needs from one DICOM file; identifiers are keyed hashes, never raw values."""

    patient_key: str | None
    study_key: str | None
    series_key: str | None
    institution: str | None
    modality: str
    sop_class: str
    has_pixels: bool
    rows: int
    columns: int
    frames: int
    position: tuple[float, ...] | None  # (0020,0032) Image Position (Patient), mm
    orientation: tuple[float, ...] | None  # (0020,0037) Image Orientation (Patient), direction cosines
    pixel_spacing: tuple[float, float] | None  # (0028,0030) or (0018,1164), mm (row, column)
    frame_key: str | None = None  # (0020,0052) Frame of Reference UID, keyed hash


#: What the pixel pipeline reads: a parsed data set, or the scan's layout of a file that reads as one.
Pixels = pydicom.Dataset | PixelHeader

#: How deep this context is inside :func:`quiet_pydicom`: only the outermost silences and restores.
_QUIET_DEPTH: ContextVar[int] = ContextVar("quiet_pydicom_depth", default=0)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's logger while reading: its warnings quote element values, which may be PHI.

    pydicom logs invalid values (e.g. a malformed Patient's Birth Date) verbatim; the
    reasons we record instead name the file and the problem without values. Nested uses cost
    nothing: a scan or a series wraps each file's many reads in one. pydicom's default reading
    validation (``WARN``) only warns, and those warnings are silenced here, so it is skipped
    (``IGNORE``): it is a fifth of a small file's element reads. A ``RAISE`` set by the caller holds.
    """
    depth = _QUIET_DEPTH.get()
    token = _QUIET_DEPTH.set(depth + 1)
    if depth:
        try:
            yield
        finally:
            _QUIET_DEPTH.reset(token)
        return
    pydicom_logger = logging.getLogger("pydicom")
    previous = pydicom_logger.level
    pydicom_logger.setLevel(logging.CRITICAL + 1)
    validation = pydicom.config.settings.reading_validation_mode
    if validation == pydicom.config.WARN:
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom.config.settings.reading_validation_mode = validation
        pydicom_logger.setLevel(previous)
        _QUIET_DEPTH.reset(token)


@lru_cache(maxsize=8)
def _tags(keywords: tuple[str, ...]) -> list[BaseTag]:
    """Keywords as tags, once: dcmread converts every keyword of ``specific_tags`` on each call."""
    return [Tag(keyword) for keyword in dict.fromkeys(keywords)]


@lru_cache(maxsize=8)
def _tag_set(keywords: tuple[str, ...]) -> frozenset[int]:
    """:func:`_tags` as the set a walk of the elements looks up, with the character set pydicom always reads."""
    return frozenset(int(tag) for tag in _tags(keywords)) | {CHARSET}


def parse_header(source: str | Path | bytes, extra_tags: Sequence[str] = ()) -> pydicom.Dataset:
    """The elements :func:`header_of` needs, and ``extra_tags``, in one parse (Pixel Data deferred, not read).

    A file's bytes are walked by :func:`clinical.ingest.elements.read_wanted` where it gives pydicom's
    result, else parsed by pydicom.

    Raises
    ------
    IngestError
        When the header cannot be parsed.
    """
    keywords = (*_HEADER_TAGS, *extra_tags)
    try:
        with quiet_pydicom():
            if isinstance(source, bytes) and (ds := read_wanted(source, _tag_set(keywords), _DEFER_BYTES)) is not None:
                return ds
            return pydicom.dcmread(_readable(source), force=True, defer_size=_DEFER_BYTES,
                                   specific_tags=_tags(keywords))
    except Exception as error:  # pydicom raises many types on broken headers; all mean "unreadable"
        raise IngestError(f"the DICOM header cannot be parsed ({type(error).__name__})") from error


def header_of(ds: pydicom.Dataset | Values, key: bytes) -> DicomHeader:
    """The grouping elements of a parsed header or its values, identifiers as keyed hashes.

    ``ds`` is the data set of :func:`parse_header`, or its :func:`~clinical.ingest.values.values_of`.

    Raises
    ------
    IngestError
        When an element cannot be read.
    """
    try:
        with quiet_pydicom():
            return DicomHeader(
                patient_key=_hashed(ds, "PatientID", key),
                study_key=_hashed(ds, "StudyInstanceUID", key),
                series_key=_hashed(ds, "SeriesInstanceUID", key),
                institution=(str(ds.get("InstitutionName", "") or "").strip() or None),
                modality=str(ds.get("Modality", "") or "OT").strip().upper() or "OT",
                sop_class=_sop_class_name(ds),
                has_pixels=any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")),
                rows=int(ds.get("Rows", 0) or 0),
                columns=int(ds.get("Columns", 0) or 0),
                frames=int(ds.get("NumberOfFrames", 1) or 1),
                position=_floats(ds, "ImagePositionPatient", 3),
                orientation=_floats(ds, "ImageOrientationPatient", 6),
                pixel_spacing=_floats(ds, "PixelSpacing", 2) or _floats(ds, "ImagerPixelSpacing", 2),
                frame_key=_hashed(ds, "FrameOfReferenceUID", key),
            )
    except Exception as error:  # pydicom raises many types on broken headers; all mean "unreadable"
        raise IngestError(f"the DICOM header cannot be parsed ({type(error).__name__})") from error


def read_dataset(path: str | Path) -> pydicom.Dataset:
    """Read a whole file (pixels included)."""
    with quiet_pydicom():
        return pydicom.dcmread(_readable(path), force=True)


def screen(source: str | Path | bytes | io.BytesIO, options: IngestOptions, *, count: int = 1) -> bool:
    """Check one file's header before its pixels are read; return whether its SOP class risks burned-in text.

    ``count`` multiplies the decoded size (the slices of a volume, screened by the first).

    Raises
    ------
    clinical.ingest.reasons.Rejected
        ``too-large`` when Rows × Columns × Number of Frames × Samples per Pixel × Bits Allocated
        (× ``count``) exceeds ``options.max_decoded_mb``; ``burned-in-annotation`` when Burned In
        Annotation (0028,0301) is YES and ``options.keep_burned_in`` is False; ``bad-header`` when
        those elements cannot be read.
    """
    readable = _readable(source) if not isinstance(source, io.BytesIO) else source
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(readable, force=True, stop_before_pixels=True, specific_tags=_tags(_SCREEN_TAGS))
    except Exception as error:  # pydicom raises many types on broken headers
        raise Rejected(Reason.BAD_HEADER, f"the DICOM header cannot be parsed ({type(error).__name__})") from error
    finally:
        if isinstance(readable, io.BytesIO):
            readable.seek(0)
    return screen_dataset(ds, options, count=count)


def screen_dataset(ds: Pixels, options: IngestOptions, *, count: int = 1) -> bool:
    """:func:`screen` of a data set already parsed (its Pixel Data read but not decoded)."""
    try:
        with quiet_pydicom():
            dims = [int(ds.get(k, d) or d) for k, d in
                    (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1), ("SamplesPerPixel", 1), ("BitsAllocated", 8))]
            burned_in = str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
    except Exception as error:  # pydicom raises many types on broken values
        raise Rejected(Reason.BAD_HEADER, f"the DICOM header cannot be parsed ({type(error).__name__})") from error
    rows, columns, frames, samples, bits = (max(v, 0) for v in dims)
    nbytes = rows * columns * max(frames, 1) * max(samples, 1) * max(1, -(-bits // 8)) * count
    what = f"Rows×Columns×Frames×Samples = {rows}×{columns}×{max(frames, 1)}×{max(samples, 1)} at {bits} bits"
    options.check_decoded_size(nbytes, what + (f", × {count} slices" if count > 1 else ""))
    if burned_in and not options.keep_burned_in:
        raise Rejected(
            Reason.BURNED_IN_ANNOTATION,
            "Burned In Annotation (0028,0301) is YES: the pixels carry text, often the patient's name; "
            "pass keep_burned_in=True (--keep-burned-in) to ingest such images after checking them",
        )
    return burned_in_risk(ds)


def burned_in_risk(ds: Pixels) -> bool:
    """Whether Burned In Annotation (0028,0301) is YES or the SOP class is one of :data:`BURNED_IN_RISK_CLASSES`."""
    uid = str(ds.get("SOPClassUID", "") or "")
    secondary_capture = BURNED_IN_RISK_CLASSES[0]
    return (
        str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
        or uid in BURNED_IN_RISK_CLASSES
        or uid.startswith(secondary_capture + ".")
    )


def load_pixels(
    path: str | Path, options: IngestOptions | None = None, *, count: int = 1, layout: str | None = None
) -> tuple[Pixels, np.ndarray]:
    """Read only the elements the pixel pipeline uses, decode, apply the Modality LUT.

    With the scan's ``layout`` of the file (:mod:`clinical.ingest.layout`), its values are read from
    the layout and its pixels from the file, without a parse; otherwise only :data:`PIXEL_TAGS` are
    parsed (about a quarter less than the whole header). With ``options``, the header is screened
    (:func:`screen`, ``count`` as there) before any pixel is decoded: a file held in memory from the data
    set its pixels come from, a larger one from its header before its Pixel Data is read. Should the
    reduced data set not decode, the whole file is read and decoded again, so the shortcut never turns a
    good file into a rejection.

    Returns
    -------
    dataset, pixels
        The (reduced) data set, or the layout's :class:`~clinical.ingest.layout.PixelHeader` that reads
        as one, and :func:`modality_pixels` of it.
    """
    data = Path(path).read_bytes() if Path(path).stat().st_size <= _IN_MEMORY_BYTES else None
    reduced = header_from_layout(layout, data) if layout is not None and data is not None else None
    if reduced is None:
        readable = io.BytesIO(data) if data is not None else path
        if options is not None and data is None:
            screen(readable, options, count=count)
        try:
            with quiet_pydicom():
                reduced = pydicom.dcmread(readable, force=True, specific_tags=_tags(PIXEL_TAGS))
        except Exception as error:  # pydicom raises many types on broken headers
            raise Rejected(Reason.BAD_HEADER, f"the DICOM header cannot be parsed ({type(error).__name__})") from error
    if options is not None and data is not None:
        screen_dataset(reduced, options, count=count)
    try:
        return reduced, modality_pixels(reduced)
    except Rejected:
        raise
    except IngestError:
        full = read_dataset(path)
        return full, modality_pixels(full)


def _readable(source: str | Path | bytes) -> str | Path | io.BytesIO:
    """Files up to 64 MiB are parsed from memory: pydicom's many small reads and seeks are much cheaper there."""
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if Path(source).stat().st_size <= _IN_MEMORY_BYTES:
        return io.BytesIO(Path(source).read_bytes())
    return source


def modality_pixels(ds: Pixels) -> np.ndarray:
    """Decode Pixel Data and apply the Modality LUT.

    Returns
    -------
    numpy.ndarray
        float32 of shape (frames, rows, columns, samples): HU for CT, stored
        values otherwise; RGB for colour images.

    Raises
    ------
    UnsupportedFileError
        When the file has no Pixel Data (7FE0,0010).
    IngestError
        When the pixels cannot be decoded (truncated data, missing codec).
    """
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise UnsupportedFileError(f"no Pixel Data (7FE0,0010): a {_sop_class_name(ds)} object is not an image")
    _check_codestreams(ds)
    try:
        with quiet_pydicom():
            arr = ds.pixel_array
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            photometric = str(ds.get("PhotometricInterpretation", "")).strip()
            if photometric == "PALETTE COLOR":
                arr = apply_color_lut(arr, ds)
                samples = 3
            elif samples == 1:
                arr = apply_modality_lut(arr, ds)
    except (UnsupportedFileError, IngestError):
        raise
    except Exception as error:  # decoders raise ValueError, RuntimeError, NotImplementedError, ...
        reason = f"{type(error).__name__}: {scrub_message(error)}"
        if looks_corrupt(str(error)):
            text = f"the pixel data cannot be decoded: it is truncated or corrupt ({reason})"
            raise Rejected(Reason.CORRUPT_PIXELS, text) from error
        raise IngestError(f"the pixel data cannot be decoded ({reason})") from error
    arr = np.asarray(arr, dtype=np.float32)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr.reshape((frames, *arr.shape[-2:], 1)) if samples == 1 else arr.reshape((frames, *arr.shape[-3:]))


def _check_codestreams(ds: Pixels) -> None:
    """Each frame of JPEG-family encapsulated Pixel Data must end with FF D9 (EOI, EOC), padding aside.

    Inside entropy-coded JPEG and JPEG 2000 data an FF is never followed by D9, so a frame
    without that marker in its last bytes was cut short; libjpeg decodes such a frame into
    grey without a word.
    """
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if syntax not in _JPEG_FAMILY or "PixelData" not in ds:
        return
    from pydicom.encaps import generate_frames

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
            if b"\xff\xd9" not in frame[-32:]:
                raise Rejected(
                    Reason.CORRUPT_PIXELS,
                    f"frame {index + 1} of {frames} of the compressed pixel data ends without its end-of-image "
                    "marker (FF D9): the codestream is truncated",
                )
    except Rejected:
        raise
    except Exception as error:  # the fragments themselves cannot be parsed
        raise Rejected(
            Reason.CORRUPT_PIXELS, f"the encapsulated pixel data cannot be parsed ({scrub_message(error)})"
        ) from error


def window(
    arr: np.ndarray, ds: Pixels, *, modality: str, ct_window: str = DEFAULT_CT_WINDOW
) -> np.ndarray:
    """Map modality values to [0, 1] with the rule of the module docstring (float32, same shape).

    ``ds`` supplies Window Center/Width, VOI LUT, Bits Stored and Photometric
    Interpretation; for a volume it is the first slice.

    Raises
    ------
    ConfigurationError
        When ``ct_window`` is not a known preset.
    """
    if ct_window != "header" and ct_window not in CT_WINDOWS:
        raise ConfigurationError(f"ct_window must be one of {[*CT_WINDOWS, 'header']}; got {ct_window!r}.")
    if arr.shape[-1] == 3:
        bits = int(ds.get("BitsStored", 8) or 8)
        return np.clip(arr / float(2**bits - 1), 0.0, 1.0)
    if modality == "CT":
        header_window = _header_window(ds) if ct_window == "header" else None
        out = _linear(arr, *(header_window or CT_WINDOWS["soft_tissue" if ct_window == "header" else ct_window]))
    elif modality in VOLUME_MODALITIES:
        out = percentile_scale(arr)
    elif "VOILUTSequence" in ds:
        with quiet_pydicom():
            voi = np.asarray(apply_voi_lut(arr[..., 0], ds, prefer_lut=True), dtype=np.float32)[..., None]
        low, high = float(voi.min()), float(voi.max())
        out = (voi - low) / (high - low) if high > low else np.zeros_like(voi)
    else:
        header_window = _header_window(ds)
        out = _linear(arr, *header_window) if header_window else percentile_scale(arr)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def _linear(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    low = center - width / 2.0
    return np.clip((arr - low) / max(width, 1e-6), 0.0, 1.0)


def _header_window(ds: Pixels) -> tuple[float, float] | None:
    """First Window Center (0028,1050) / Window Width (0028,1051) of the file, if usable."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue | list) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue | list) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 0 and math.isfinite(center) else None


def _hashed(ds: pydicom.Dataset, keyword: str, key: bytes) -> str | None:
    value = str(ds.get(keyword, "") or "").strip()
    return keyed_hash(key, value) if value else None


def _floats(ds: Pixels, keyword: str, count: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in (value if isinstance(value, pydicom.multival.MultiValue | list) else [value]))
    except (TypeError, ValueError):
        return None
    return values if len(values) == count and all(math.isfinite(v) for v in values) else None


def _sop_class_name(ds: Pixels) -> str:
    uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    if not uid:
        return "object without SOP Class UID"
    name = UID(str(uid)).name
    return name if name != str(uid) else f"SOP class {uid}"


def scrub_message(error: BaseException) -> str:
    """An exception message cut to 160 characters with quoted text removed (it may quote element values)."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", str(error))
    return " ".join(text.split())[:160]


def volume_spacing(ds: Pixels) -> list[float]:
    """(slice, row, column) spacing in mm of a multi-frame file; NaN where the file does not say.

    Looks in the Shared Functional Groups (5200,9229) Pixel Measures first (enhanced
    CT/MR), then at the top level: Spacing Between Slices (0018,0088), else Slice
    Thickness (0018,0050); Pixel Spacing (0028,0030), else Imager Pixel Spacing (0018,1164).
    """
    sources = [ds]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and "PixelMeasuresSequence" in shared[0] and shared[0].PixelMeasuresSequence:
        sources.insert(0, shared[0].PixelMeasuresSequence[0])
    depth = next(
        (v[0] for s in sources for k in ("SpacingBetweenSlices", "SliceThickness") if (v := _floats(s, k, 1))),
        float("nan"),
    )
    plane = next(
        (v for s in sources for k in ("PixelSpacing", "ImagerPixelSpacing") if (v := _floats(s, k, 2))),
        (float("nan"), float("nan")),
    )
    return [abs(depth), *plane]


def decode_image(unit: Unit, options: IngestOptions) -> Iterator[DecodedItem]:
    """A single-frame file: one image (C, H, W) with the (row, column) spacing of the plan."""
    ds, pixels = load_pixels(unit.paths[0], options, layout=unit.layout(0))
    windowed = window(pixels, ds, modality=unit.modality, ct_window=options.ct_window)
    yield DecodedItem(unit_interval_to_uint16(windowed[0].transpose(2, 0, 1)), "image", unit.spacing[-2:],
                      extra=_risk(burned_in_risk(ds)))


def decode_multiframe(unit: Unit, options: IngestOptions) -> Iterator[DecodedItem]:
    """A multi-frame file: one volume (C, D, H, W), frames as depth, spacing from :func:`volume_spacing`."""
    ds, pixels = load_pixels(unit.paths[0], options, layout=unit.layout(0))
    windowed = window(pixels, ds, modality=unit.modality, ct_window=options.ct_window)
    yield DecodedItem(unit_interval_to_uint16(windowed.transpose(3, 0, 1, 2)), "volume", volume_spacing(ds),
                      extra=_risk(burned_in_risk(ds)))


def load_volume(
    unit: Unit, options: IngestOptions, *, budget_count: int = 1
) -> tuple[np.ndarray, Pixels, bool]:
    """The ordered slices of one series in modality units (after the Modality LUT, per slice), unwindowed.

    ``budget_count`` multiplies the decoded-size budget check (the series of a multi-series unit).

    Returns
    -------
    volume, first, risk
        float32 (D, H, W, 1), the first slice's (reduced) data set, and whether any slice risks burned-in text.

    Raises
    ------
    InvalidSeriesError
        When a slice is multi-frame or colour, so the slices cannot be stacked.
    """
    slices = []
    first = None
    risk = False
    with quiet_pydicom():
        for index, path in enumerate(unit.paths):
            # the first slice is screened for the whole series' budget, before any slice is decoded
            ds, pixels = load_pixels(path, options, count=len(unit.paths) * budget_count if index == 0 else 1,
                                     layout=unit.layout(index))
            risk = risk or burned_in_risk(ds)
            if pixels.shape[0] != 1 or pixels.shape[-1] != 1:
                raise InvalidSeriesError("inconsistent series: a slice is multi-frame or colour, so it cannot be "
                                         "stacked")
            slices.append(pixels[0, :, :, 0])
            first = first if first is not None else ds
    return np.stack(slices)[..., None], first, risk


def decode_volume(unit: Unit, options: IngestOptions) -> Iterator[DecodedItem]:
    """The ordered slices of one series: one volume (1, D, H, W), windowed as a whole with the first slice's header.

    Raises
    ------
    InvalidSeriesError
        When a slice is multi-frame or colour, so the slices cannot be stacked.
    """
    volume, first, risk = load_volume(unit, options)
    windowed = window(volume, first, modality=unit.modality, ct_window=options.ct_window)
    yield DecodedItem(unit_interval_to_uint16(windowed.transpose(3, 0, 1, 2)), "volume", unit.spacing,
                      extra=_risk(risk))


def _risk(flagged: bool) -> dict[str, int]:
    """The manifest column ``burned_in_risk`` (1) of an item whose SOP class often carries burned-in text."""
    return {"burned_in_risk": 1} if flagged else {}
