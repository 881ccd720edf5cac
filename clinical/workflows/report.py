"""The report of a registered model version: gathered from its runs, rendered, printed, logged back with it.

``report_model("models:/NAME@champion", out)`` reads the version's run (recipe, compute, digests), the
parent cross-validation run (pooled table, summary, pooled predictions, figures), and the cohort and
split the run was trained on (found where the run's dataset inputs say, or given), checking both
against the digests the version carries. It writes ``OUT/model_report.html`` (self-contained) and
``OUT/model_report.pdf``, and logs them to the version's run under ``report/``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from clinical.cohort import read_cohort_meta, read_manifest, read_rejections
from clinical.errors import ConfigurationError
from clinical.reporting import ModelReportInputs, has_chromium, print_pdf, render_model_report
from clinical.splits import read_split
from clinical.tracking.versions import download_version_files, log_version_report, resolve_version

__all__ = ["ModelReport", "report_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelReport:
    """Where the report of one version was written, and where it was logged."""

    model: str
    html: Path
    pdf: Path | None
    logged_as: str | None


def report_model(
    model_uri: str,
    out: str | Path,
    *,
    intended_use: str = "",
    limitations: tuple[str, ...] = (),
    cohort_dir: str | Path | None = None,
    split_path: str | Path | None = None,
    pdf: bool | None = True,
    log: bool = True,
) -> ModelReport:
    """Write (and log) the report of ``model_uri`` (``models:/NAME@alias`` or ``models:/NAME/VERSION``).

    ``cohort_dir`` and ``split_path`` default to where the run's dataset inputs say they were.
    ``pdf=None`` prints the PDF only when a headless Chromium is installed (the HTML is the report, the
    PDF a printed copy), so a machine without a browser still gets its report; ``True`` requires it.

    Raises
    ------
    ConfigurationError
        For an unknown version, a version without a tracked cross-validation, or a cohort or split
        that is missing or is not the one the version was trained on (digests differ).
    """
    version = resolve_version(model_uri)
    cohort_dir = Path(cohort_dir or version.datasets.get("cohort", ""))
    split_path = Path(split_path or version.datasets.get("split", ""))
    manifest, cohort_meta = read_manifest(cohort_dir), read_cohort_meta(cohort_dir)
    split, split_meta = read_split(split_path)
    for what, found, expected in (("cohort", cohort_meta["digest"], version.tags.get("clinical.cohort_digest")),
                                  ("split", split_meta["digest"], version.tags.get("clinical.split_digest"))):
        if expected and found != expected:
            raise ConfigurationError(f"The {what} given for {model_uri} has digest {found[:12]}…, but the version "
                                     f"was trained on {expected[:12]}…: pass the {what} it was trained on.")
    with tempfile.TemporaryDirectory(prefix="clinical-report-") as tmp:
        files = download_version_files(version, tmp)
        recipe = json.loads((files / "fit" / "config.json").read_text())
        result = json.loads((files / "fit" / "result.json").read_text())
        cv = files / "cv"
        figures = {p.stem: p.read_bytes() for p in sorted((files / "plots").glob("*.png"))}
        inputs = ModelReportInputs(
            model=version.uri, intended_use=intended_use, recipe=recipe,
            final_model=version.tags.get("clinical.final_model", "unknown"),
            cv_summary=json.loads((cv / "cv_summary.json").read_text()),
            table=pd.read_csv(cv / "metrics_with_ci.csv"),
            pooled=pd.read_parquet(cv / "predictions_pooled_test.parquet"),
            classes=list(result["classes"]), manifest=manifest, rejections=read_rejections(cohort_dir),
            cohort_meta=cohort_meta, split=split, split_meta=split_meta, figures=figures,
            compute=_compute(version.tags, version.params, version.started_ms, version.ended_ms, result),
            digests={"cohort": cohort_meta["digest"], "split": split_meta["digest"],
                     "code": version.tags.get("clinical.code_digest", "not recorded by the training run")},
            limitations=limitations,
        )
        html = render_model_report(inputs)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "model_report.html"
    page.write_text(html, encoding="utf-8")
    if pdf is None:
        pdf = has_chromium()
    printed = print_pdf(page, folder / "model_report.pdf") if pdf else None
    logged = log_version_report(version, folder) if log else None
    logger.info("Report of %s written to %s", version.uri, page)
    return ModelReport(model=version.uri, html=page, pdf=printed, logged_as=logged)


def _compute(tags: dict[str, str], params: dict[str, str], started_ms: int, ended_ms: int | None,
             result: dict) -> dict[str, str]:
    """Device, training time and data counts of the run that made the registered model."""
    wall = f"{(ended_ms - started_ms) / 1000:.0f} s" if ended_ms else "unknown (the run did not end)"
    started = datetime.fromtimestamp(started_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return {"device": tags.get("clinical.device", "unknown"), "wall time of the final fit": wall,
            "trained": started, "epochs run": str(result.get("epochs_run")),
            "training items": params.get("data.n_train", "unknown"),
            "processes (DDP world size)": params.get("data.world_size", "1")}
