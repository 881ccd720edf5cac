"""Screening with uncertainty: what a cross-validation's fold models say about each eye, and when to refer.

For each fold, the model that never saw the fold's test patients predicts its validation and test
photographs with test-time augmentation (:func:`clinical.training.tta.predict_tta`). The validation
photographs fix the refer-when-uncertain threshold and calibrate the conformal sets; both are then
applied to the test photographs, so every number below is out of fold. The pooled test photographs
give the screening metrics per eye and per patient (worse eye), with patient-bootstrap CIs.

Files under ``out`` (default ``<cross-validation>/screening``)::

    predictions_tta.parquet          pooled test photographs: mean probabilities, uncertainty, entropy,
                                     quality score and band, grade (when given), conformal set, referred
    screening_metrics.csv            metrics per eye and per patient (worse eye), 95 % patient-bootstrap CIs
    uncertainty_by_quality_band.csv  uncertainty and error by quality band (and ``_by_grade.csv`` by DR grade)
    coverage.csv                     metrics on the least uncertain photographs at each coverage
    screening.json                   the operating point (thresholds per fold, share kept, metrics on the kept)
                                     and the conformal sets (alpha, coverage reached, set sizes)
    plots/coverage.png, plots/by_quality_band.png, plots/by_grade.png
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pandas as pd
from tqdm.auto import tqdm

from clinical.cohort import read_cohort_meta, read_manifest
from clinical.cohort.digest import file_digest
from clinical.data import ManifestDataset
from clinical.data.presets import preset
from clinical.errors import ConfigurationError
from clinical.evaluation.conformal import SET_SIZE, conformal_sets, set_coverage
from clinical.evaluation.metrics import score
from clinical.evaluation.screening import screen
from clinical.evaluation.uncertainty import (
    coverage_curve,
    refer_threshold,
    save_uncertainty_plots,
    uncertainty_report,
    with_quality,
)
from clinical.models import create_model
from clinical.splits import fold_items, read_split
from clinical.tracking import MlflowTracker
from clinical.training import FitResult, load_checkpoint
from clinical.training.tta import predict_tta
from clinical.workflows.crossval import CrossValidation, read_cross_validation

__all__ = ["Screening", "read_grades", "screen_with_uncertainty"]

logger = logging.getLogger(__name__)

#: Which per-item measure decides referral: the spread over augmented passes, or the entropy of their mean.
Measure = Literal["uncertainty", "entropy"]


@dataclass(frozen=True)
class Screening:
    """What :func:`screen_with_uncertainty` wrote, and the headline numbers."""

    out: Path
    predictions: pd.DataFrame
    metrics: pd.DataFrame
    coverage: pd.DataFrame
    by_quality: pd.DataFrame
    by_grade: pd.DataFrame | None
    summary: dict
    plots: list[Path]
    run_id: str | None = None


def read_grades(path: str | Path, root: str | Path) -> pd.Series:
    """DR grades of a grading CSV (``file``, ``grade``; files relative to ``root``), keyed by content digest.

    The manifest keeps no file names (they may name patients), only each source file's digest; the
    grades are matched to items through it.

    Raises
    ------
    ConfigurationError
        When the CSV lacks a column or names a file that is not under ``root``.
    """
    table = pd.read_csv(path)
    if not {"file", "grade"} <= set(table.columns):
        raise ConfigurationError(f"{Path(path).name} must have the columns 'file' and 'grade'; "
                                 f"got {list(table.columns)}.")
    missing = [f for f in table["file"] if not (Path(root) / f).is_file()]
    if missing:
        raise ConfigurationError(f"{len(missing)} file(s) of {Path(path).name} are not under the source folder given.")
    digests = [file_digest(Path(root) / f) for f in table["file"]]
    return pd.Series(table["grade"].to_numpy(), index=pd.Index(digests, name="source_digest"), name="grade")


def _fold_predictions(result: FitResult, manifest: pd.DataFrame, cohort_dir: str | Path, split: pd.DataFrame, *,
                      passes: int, device: str | None) -> dict[str, pd.DataFrame]:
    """TTA predictions of one fold's model on its validation and test photographs."""
    config = result.config
    model = create_model(config.model, spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                         num_classes=len(result.classes))
    model.load_state_dict(load_checkpoint(result.best_checkpoint, map_location="cpu")["model"])
    labelled = set(manifest.loc[manifest["label"].notna() & (manifest["kind"] == config.kind), "item_id"])
    roles = fold_items(split, result.fold)
    frames = {}
    for role in ("val", "test"):
        items = [i for i in roles.get(role, []) if i in labelled]
        if not items:
            raise ConfigurationError(f"Fold {result.fold} has no labelled {role} photographs; screening calibrates "
                                     "on the validation part and reports on the test part.")
        dataset = ManifestDataset(manifest, cohort_dir, items=items, classes=result.classes, channels=config.channels,
                                  transform=preset(config.kind, train=True, size=config.image_size,
                                                   intensity=config.intensity))
        frames[role] = predict_tta(model, dataset, passes=passes, seed=config.seed, device=device or config.device)
    return frames


def screen_with_uncertainty(
    cv: CrossValidation | str | Path,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    out: str | Path | None = None,
    grades: pd.Series | None = None,
    passes: int = 8,
    coverage: float = 0.8,
    alpha: float = 0.1,
    measure: Measure = "entropy",
    n_boot: int = 1000,
    device: str | None = None,
    tracker: MlflowTracker | None = None,
) -> Screening:
    """Predict every fold's test photographs with uncertainty; write screening metrics, reports and plots.

    Parameters
    ----------
    cv
        A finished cross-validation (or the folder ``clinical train`` wrote it to) of a binary photo task.
    grades
        DR grade per source digest (:func:`read_grades`), for the report by grade.
    coverage
        Share of the validation photographs the model keeps; the rest would go to a human grader.
    alpha
        Conformal miscoverage: sets hold the true class ``1 − alpha`` of the time.
    measure
        ``entropy`` (of the mean of ``passes`` augmented passes; default) or ``uncertainty`` (their spread).
        The entropy is what rises when blur or bad exposure hides the lesions (see :mod:`clinical.training.tta`);
        the spread mostly follows the augmentation.
    tracker
        With one, the files and plots go to the cross-validation's parent run (or a new run when it was
        not tracked), with the headline numbers as ``screen_*`` metrics.

    Raises
    ------
    ConfigurationError
        For a measure other than those two, or a fold without validation or test photographs.
    """
    if measure not in ("uncertainty", "entropy"):
        raise ConfigurationError(f"measure must be 'uncertainty' or 'entropy'; got {measure!r}.")
    cv = cv if isinstance(cv, CrossValidation) else read_cross_validation(cv)
    classes = cv.results[0].classes
    manifest, (split, _) = read_manifest(cohort_dir), read_split(split_path)
    folder = Path(out) if out is not None else Path(cv.out) / "screening"
    tests, thresholds = [], {}
    for result in tqdm(cv.results, desc="screening folds", unit="fold", disable=None):
        frames = _fold_predictions(result, manifest, cohort_dir, split, passes=passes, device=device)
        threshold = refer_threshold(frames["val"], classes, coverage=coverage, column=measure)
        test = conformal_sets(frames["val"], frames["test"], classes, alpha=alpha, seed=result.config.seed)
        test["referred"] = test[measure] > threshold
        tests.append(test)
        thresholds[result.fold] = threshold
    pooled = with_quality(pd.concat(tests, ignore_index=True), manifest)
    if grades is not None:
        digests = manifest.set_index("item_id")["source_digest"]
        pooled["grade"] = pooled["item_id"].map(digests).map(grades).astype("Int64")
    folder.mkdir(parents=True, exist_ok=True)
    pooled.to_parquet(folder / "predictions_tta.parquet", index=False)
    reports = screen(pooled, classes, n_boot=n_boot, seed=cv.config.seed)
    metrics = pd.concat([reports["eye"].to_table().assign(level="eye"),
                         reports["patient"].to_table().assign(level="patient", aggregate="worse eye")],
                        ignore_index=True)
    metrics.to_csv(folder / "screening_metrics.csv", index=False)
    curve = coverage_curve(pooled, classes, column=measure)
    curve.to_csv(folder / "coverage.csv", index=False)
    by_quality = uncertainty_report(pooled, classes, by="quality_band", column=measure)
    by_quality.to_csv(folder / "uncertainty_by_quality_band.csv", index=False)
    by_grade = None
    if grades is not None:
        by_grade = uncertainty_report(pooled, classes, by="grade", column=measure)
        by_grade.to_csv(folder / "uncertainty_by_grade.csv", index=False)
    kept = pooled[~pooled["referred"]]
    kept_metrics = score(kept, classes, level="item")
    summary = {
        "measure": measure, "passes": passes, "folds": len(cv.results),
        "operating_point": {"coverage_asked": coverage, "thresholds": thresholds,
                            "kept_share": float(len(kept) / len(pooled)),
                            "kept": {m: kept_metrics[m] for m in ("auroc", "sensitivity", "specificity")}},
        "conformal": {"alpha": alpha, "coverage": set_coverage(pooled, len(classes)),
                      "mean_set_size": float(pooled[SET_SIZE].mean()),
                      "share_both_classes": float((pooled[SET_SIZE] == len(classes)).mean())},
    }
    (folder / "screening.json").write_text(json.dumps(summary, indent=2))
    plots = save_uncertainty_plots(pooled, classes, folder / "plots", operating_coverage=coverage, column=measure)
    run_id = _log(tracker, cv, folder, metrics, summary, cohort_dir=cohort_dir, split_path=split_path)
    logger.info("Screened %d photographs of %d patients: eye AUROC %.3f, patient AUROC %.3f; %.0f%% kept.",
                len(pooled), pooled["patient_key"].nunique(), reports["eye"]["auroc"][0],
                reports["patient"]["auroc"][0], 100 * summary["operating_point"]["kept_share"])
    return Screening(out=folder, predictions=pooled, metrics=metrics, coverage=curve, by_quality=by_quality,
                     by_grade=by_grade, summary=summary, plots=plots, run_id=run_id)


def _log(tracker: MlflowTracker | None, cv: CrossValidation, folder: Path, metrics: pd.DataFrame, summary: dict, *,
         cohort_dir: str | Path, split_path: str | Path) -> str | None:
    """Send the screening files to the cross-validation's parent run, or to a new run when it had none."""
    if tracker is None:
        return None
    if cv.parent_run_id is not None:
        tracker = replace(tracker, parent_run_id=cv.parent_run_id)
    else:
        tags = {"clinical.cohort_digest": read_cohort_meta(cohort_dir)["digest"],
                "clinical.split_digest": read_split(split_path)[1]["digest"]}
        tracker = tracker.open(cv.config, tags=tags, run_name=f"{cv.config.model}-screening")
    values = {f"screen_{row.level}_{row.metric}{suffix}": float(value)
              for row in metrics.itertuples() for suffix, value in (("", row.value), ("_low", row.low),
                                                                    ("_high", row.high))
              if pd.notna(value) and math.isfinite(float(value))}
    values |= {"screen_kept_share": summary["operating_point"]["kept_share"],
               "screen_conformal_coverage": summary["conformal"]["coverage"],
               "screen_conformal_mean_set_size": summary["conformal"]["mean_set_size"]}
    tracker.log_evaluation(folder, metrics=values, artifact_path="screening")
    return tracker.parent_run_id
