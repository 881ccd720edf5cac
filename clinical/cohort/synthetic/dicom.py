"""The DICOM header parts the radiograph and volume tasks share: file meta, patient, study, equipment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from clinical.cohort.synthetic.phi import FakeIdentity

__all__ = ["new_dataset", "save_dataset", "set_pixels"]


def new_dataset(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    identity: FakeIdentity,
    study: dict,
    institution: str,
    manufacturer: str,
    modality: str,
) -> Dataset:
    """A dataset with file meta, Patient, General Study, General Series and Equipment modules filled.

    ``study`` holds ``study_uid``, ``series_uid``, ``accession``, ``date`` (YYYYMMDD),
    ``series_number`` and ``description``; dates and times are fixed strings, never the clock.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study["date"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = study["accession"]
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.InstitutionName = institution
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study["description"]
    ds.SeriesDescription = study["description"]
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.StudyInstanceUID = study["study_uid"]
    ds.SeriesInstanceUID = study["series_uid"]
    ds.StudyID = "1"
    ds.SeriesNumber = study["series_number"]
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray, *, bits_stored: int, photometric: str) -> None:
    """Image Pixel module for one unsigned 16-bit grey frame (0028,0002–0103) and (7FE0,0010)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write a Part 10 file (preamble, ``DICM``, file meta) with pydicom's implementation UID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
