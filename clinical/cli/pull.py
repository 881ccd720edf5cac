"""``clinical pull --pacs URL --out COHORT``: fetch new studies from a PACS and ingest them."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``pull`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "pull",
        help="find and retrieve new studies from a PACS (DICOMweb or DIMSE) and ingest them",
        description="Ask the PACS for studies by date, modality, accession numbers or patients; retrieve those "
        "not fetched before into a staging folder beside the cohort; ingest them like a folder. Credentials come "
        "from CLINICAL_PACS_USER / CLINICAL_PACS_PASSWORD or pacs.json in the configuration folder, never the URL.",
    )
    parser.add_argument("--pacs", required=True, metavar="URL",
                        help="dicomweb+http://host:port/dicom-web or dimse://AET@host:port?calling=OURAET")
    parser.add_argument("--out", required=True, type=Path, metavar="COHORT", help="cohort folder to write")
    parser.add_argument("--since", metavar="YYYY-MM-DD", help="first study date (inclusive)")
    parser.add_argument("--until", metavar="YYYY-MM-DD", help="last study date (inclusive)")
    parser.add_argument("--modality", action="append", default=[], metavar="CODE",
                        help="modality in study, e.g. CR; repeat for several")
    parser.add_argument("--accessions", type=Path, metavar="CSV", help="CSV with an accession_number column")
    parser.add_argument("--patients", type=Path, metavar="CSV", help="CSV with a patient_id column")
    parser.add_argument("--staging", type=Path, metavar="DIR", help="staging folder (default: COHORT.pacs)")
    parser.add_argument("--labels", type=Path, metavar="LABELS.csv", help="labels CSV (as for clinical ingest)")
    parser.add_argument("--sites", type=Path, metavar="SITES.csv", help="sites CSV (as for clinical ingest)")
    parser.add_argument("--workers", type=int, default=None, help="ingest processes (0: in this process)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Pull, ingest and print what was fetched and the ingest invariant."""
    from clinical.ingest.pacs import pull

    report = pull(
        args.pacs,
        args.out,
        since=args.since,
        until=args.until,
        modalities=args.modality,
        accessions_csv=args.accessions,
        patients_csv=args.patients,
        staging=args.staging,
        labels=args.labels,
        sites=args.sites,
        workers=args.workers,
    )
    if report.failed:
        print(f"{len(report.failed)} studies could not be retrieved (retried by the next pull): "
              f"see {report.staging / 'pull_state.json'}")
    print(report.summary())
    return 0
