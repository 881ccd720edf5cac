"""Ingest of DICOM, NIfTI, whole slides, photographs and PACS into a PHI-free cohort manifest."""
