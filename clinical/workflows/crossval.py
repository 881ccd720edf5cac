"""Cross-validation: train the folds → pool the out-of-fold predictions → metrics with patient CIs.

The one way the CLI, the notebooks and the Prefect flows cross-validate a
recipe. Tracking is an optional ``tracker``, never another code path: an
untracked run writes the same fold folders, pooled table and plots to disk,
and a tracked one sends those files to MLflow as well. The steps are separate
functions (:func:`open_cross_validation`, :func:`train_fold`,
:func:`pool_folds`) so that a pipeline can run each fold as its own task, on
its own machine; :func:`cross_validate` runs them one after the other, or as
tasks of a Ray cluster (``ray_address``).

Files under ``out``::

    fold-<k>/                  one fit per outer fold (config, checkpoints, predictions, result.json)
    cv/metrics_with_ci.csv     pooled out-of-fold metrics, 95% CIs resampling patients; every row names its level
                               and how item scores became a patient score (the recipe's ``aggregate``)
    cv/predictions_pooled_test.parquet
    cv/cv_summary.json|.txt    mean ± SD over folds, as the studies report them
    cv/plots/*.png             ROC, PR, calibration, confusion (and per-site forest) of the pooled predictions
    cv/cross_validation.json   the fold runs (folders, MLflow run ids) and digests: :func:`read_cross_validation`
    final/                     the model to deploy (:func:`fit_final_model`): by default a refit on every
                               development patient (all but the split's gate set) for the epoch count the
                               folds chose, so the deployed model is the one cross-validation estimated
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from clinical.cohort import read_cohort_meta, read_manifest
from clinical.errors import ConfigurationError
from clinical.evaluation.bootstrap import evaluate
from clinical.evaluation.figures import save_plots
from clinical.evaluation.report import format_mean_sd
from clinical.splits import OUTER, outer_folds, read_split, write_split
from clinical.tracking import MlflowTracker
from clinical.training import FitResult, TrainConfig, fit, load_result, summarize

__all__ = [
    "TABLE_METRICS",
    "CrossValidation",
    "FinalModel",
    "FoldRun",
    "cross_validate",
    "fit_final_model",
    "format_summary",
    "open_cross_validation",
    "pool_folds",
    "read_cross_validation",
    "train_fold",
]

logger = logging.getLogger(__name__)

#: How the model to deploy is made: ``refit`` on all development patients (standard practice, the
#: default), or ``best-fold``, the fold model with the best validation score (no extra training).
FinalModel = Literal["refit", "best-fold"]

#: Metrics shown in summaries, in this order.
TABLE_METRICS = ("auroc", "auprc", "balanced_accuracy", "f1", "sensitivity", "specificity", "brier", "ece")


@dataclass(frozen=True)
class FoldRun:
    """One fold's fit: where its files are, and its MLflow run when tracked."""

    fold: int
    out: str
    run_id: str | None = None


@dataclass
class CrossValidation:
    """A finished cross-validation: the folds, their mean ± SD, and the pooled table with patient CIs."""

    fold_runs: list[FoldRun]
    results: list[FitResult]
    summary: dict[str, dict[str, float]]
    table: pd.DataFrame
    pooled: pd.DataFrame
    split_digest: str
    cohort_digest: str
    out: Path
    parent_run_id: str | None = None
    final: FoldRun | None = None
    final_how: FinalModel | None = None

    @property
    def config(self) -> TrainConfig:
        return self.results[0].config


def open_cross_validation(
    config: TrainConfig,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    tracker: MlflowTracker | None = None,
    run_name: str | None = None,
) -> MlflowTracker | None:
    """Open the tracker's parent run for this recipe, cohort and split (nothing to do untracked)."""
    if tracker is None:
        return None
    tags = {"clinical.cohort_digest": read_cohort_meta(cohort_dir)["digest"],
            "clinical.split_digest": read_split(split_path)[1]["digest"]}
    return tracker.open(config, tags=tags, run_name=run_name)


def train_fold(
    config: TrainConfig,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    fold: int,
    out: str | Path,
    tracker: MlflowTracker | None = None,
    run_name: str | None = None,
    resume: str | Path | None = None,
) -> FoldRun:
    """Fit one fold into ``out``; with a tracker, as an MLflow run holding metrics, plots and the servable model."""
    split, split_meta = read_split(split_path)
    callbacks = ()
    if tracker is not None:
        callback = tracker.fold_callback(split_path=split_path, split_digest=split_meta["digest"],
                                         ingest_options=read_cohort_meta(cohort_dir).get("options", {}),
                                         run_name=run_name)
        callbacks = (callback,)
    fit(config, manifest=read_manifest(cohort_dir), cohort_dir=cohort_dir, split=split, fold=fold, out=out,
        callbacks=callbacks, resume=resume)
    return FoldRun(fold=fold, out=str(out), run_id=str(callbacks[0].run_id) if callbacks else None)


def pool_folds(
    fold_runs: Sequence[FoldRun],
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    out: str | Path,
    tracker: MlflowTracker | None = None,
    n_boot: int = 1000,
) -> CrossValidation:
    """Mean ± SD over folds and the pooled out-of-fold table, written to ``out/cv`` (and sent to the tracker).

    In the pooled table each patient is predicted once, by the model that never
    saw them; its 95% CIs resample patients.
    """
    fold_runs = sorted(fold_runs, key=lambda r: r.fold)
    results = [load_result(run.out) for run in fold_runs]
    config, classes = results[0].config, results[0].classes
    summary = summarize(results)
    pooled = pd.concat([r.test_predictions for r in results if r.test_predictions is not None], ignore_index=True)
    table = evaluate(pooled, classes, level=config.monitor_level, n_boot=n_boot, seed=config.seed,
                     aggregate=config.aggregate).to_table()
    folder = Path(out) / "cv"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "metrics_with_ci.csv", index=False)
    pooled.to_parquet(folder / "predictions_pooled_test.parquet", index=False)
    (folder / "cv_summary.json").write_text(json.dumps(summary, indent=2))
    (folder / "cv_summary.txt").write_text(format_summary(summary))
    save_plots(pooled, classes, folder / "plots", level=config.monitor_level, aggregate=config.aggregate)
    record = {"fold_runs": [asdict(run) for run in fold_runs], "split_digest": read_split(split_path)[1]["digest"],
              "level": config.monitor_level, "aggregate": config.aggregate,
              "cohort_digest": read_cohort_meta(cohort_dir)["digest"],
              "parent_run_id": tracker.parent_run_id if tracker is not None else None}
    (folder / "cross_validation.json").write_text(json.dumps(record, indent=2))
    if tracker is not None:
        tracker.log_pooled(folder, summary=summary, table=table)
    logger.info("Cross-validation over %d fold(s): %s", len(results), format_summary(summary).replace("\n", "; "))
    return read_cross_validation(out)


def read_cross_validation(out: str | Path) -> CrossValidation:
    """A cross-validation back from the files :func:`pool_folds` wrote under ``out`` (later stages read files)."""
    folder = Path(out) / "cv"
    record = json.loads((folder / "cross_validation.json").read_text())
    fold_runs = [FoldRun(**run) for run in record["fold_runs"]]
    return CrossValidation(
        fold_runs=fold_runs, results=[load_result(run.out) for run in fold_runs],
        summary=json.loads((folder / "cv_summary.json").read_text()),
        table=pd.read_csv(folder / "metrics_with_ci.csv"),
        pooled=pd.read_parquet(folder / "predictions_pooled_test.parquet"),
        split_digest=record["split_digest"], cohort_digest=record["cohort_digest"], out=Path(out),
        parent_run_id=record["parent_run_id"],
        final=FoldRun(**record["final"]) if record.get("final") else None, final_how=record.get("final_how"),
    )


def fit_final_model(
    cv: CrossValidation,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    how: FinalModel = "refit",
    tracker: MlflowTracker | None = None,
) -> CrossValidation:
    """The model to deploy, recorded in ``cv/cross_validation.json``; returns the updated cross-validation.

    ``refit`` trains the recipe once more on every development patient (train, validation and
    test patients of the folds; never the gate set) for the median of the folds' chosen epoch
    counts, keeping the last epoch: the model whose performance the pooled table estimated. A
    progressive schedule must then end its stages by epoch count (``unfreeze_every``).
    ``best-fold`` keeps the fold model with the best validation score.

    Raises
    ------
    ConfigurationError
        For another ``how``, or a refit of a recipe whose stages end on a validation plateau.
    """
    if how == "best-fold":
        best = max(cv.results, key=lambda r: r.best_score)
        final = next(run for run in cv.fold_runs if run.fold == best.fold)
    elif how == "refit":
        if cv.config.unfreeze_patience is not None and cv.config.schedule == "progressive":
            raise ConfigurationError(
                "A refit has no validation patients, so its stages cannot end on a plateau: train with "
                "unfreeze_every, or use how='best-fold'."
            )
        epochs = max(1, round(statistics.median(r.best_epoch + 1 for r in cv.results)))
        recipe = cv.config.model_copy(update={"epochs": epochs, "select": "last", "early_stopping_patience": None})
        folder = Path(cv.out) / "final"
        folder.mkdir(parents=True, exist_ok=True)
        development = _development_split(split_path, folder / "split.parquet", fold=cv.fold_runs[0].fold,
                                         cohort_digest=cv.cohort_digest)
        logger.info("Refitting %s on every development patient for %d epoch(s) (the folds' median).",
                    recipe.model, epochs)
        final = train_fold(recipe, cohort_dir=cohort_dir, split_path=development, fold=cv.fold_runs[0].fold,
                           out=folder / "fit", tracker=tracker, run_name="final-refit")
    else:
        raise ConfigurationError(f"how must be 'refit' or 'best-fold'; got {how!r}.")
    record_path = Path(cv.out) / "cv" / "cross_validation.json"
    record = json.loads(record_path.read_text())
    record |= {"final": asdict(final), "final_how": how}
    record_path.write_text(json.dumps(record, indent=2))
    return read_cross_validation(cv.out)


def _development_split(split_path: str | Path, out: Path, *, fold: int, cohort_digest: str) -> Path:
    """One fold in which every development patient trains; the gate set and unlabelled items keep their roles."""
    split, meta = read_split(split_path)
    rows = split[(split["fold"] == fold) & (split["inner"] == OUTER)].copy()
    rows.loc[rows["role"].isin(["train", "val", "test"]), "role"] = "train"
    rows.attrs = {"split": {**{k: v for k, v in meta.items() if k not in ("digest", "format")},
                            "development_of": meta["digest"]}}
    write_split(rows, out, cohort_digest=cohort_digest)
    return out


def cross_validate(
    config: TrainConfig,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    out: str | Path,
    folds: Sequence[int] | None = None,
    tracker: MlflowTracker | None = None,
    run_name: str | None = None,
    n_boot: int = 1000,
    final: FinalModel | None = None,
    ray_address: str | None = None,
    fold_resources: Mapping[str, float] | None = None,
) -> CrossValidation:
    """Every outer fold of the split (or ``folds``), then :func:`pool_folds`.

    Fold ``k`` is written to ``out/fold-<k>``; see the module docstring for the rest. With
    ``final`` the model to deploy is made too (:func:`fit_final_model`).

    The folds run one after the other in this process, or with ``ray_address`` (``auto``,
    ``HOST:PORT``, ``local`` for a cluster of this machine alone) all at once as tasks of that Ray
    cluster, each asking ``fold_resources`` (as :func:`ray.remote` takes them, e.g. ``{"num_cpus": 8,
    "num_gpus": 1}``; default one CPU). Every node must see the cohort, the split and ``out`` at the
    same paths, and reach the tracking server. A fold whose worker dies (a node lost) is trained again,
    once; the pooled table is the same as in one process.
    """
    if folds is None:
        folds = outer_folds(read_split(split_path)[0])
    tracker = open_cross_validation(config, cohort_dir=cohort_dir, split_path=split_path, tracker=tracker,
                                    run_name=run_name)
    calls = [{"fold": fold, "out": Path(out) / f"fold-{fold}"} for fold in folds]
    common = {"cohort_dir": cohort_dir, "split_path": split_path, "tracker": tracker, "run_name": run_name}
    if ray_address is None:
        runs = [train_fold(config, **common, **call) for call in calls]
    else:
        from clinical.ingest.shards import RayExecutor  # Ray is imported only when a cluster is asked for

        executor = RayExecutor(ray_address, max_retries=1, resources=fold_resources)
        common["tracker"] = tracker.pinned() if tracker is not None else None
        try:
            runs = [future.result() for future in [executor.submit(train_fold, config, **common, **call)
                                                   for call in calls]]
        finally:
            executor.shutdown()
    cv = pool_folds(runs, cohort_dir=cohort_dir, split_path=split_path, out=out, tracker=tracker, n_boot=n_boot)
    if final is None:
        return cv
    return fit_final_model(cv, cohort_dir=cohort_dir, split_path=split_path, how=final, tracker=tracker)


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """'auroc 0.78 ± 0.10' lines, in the order of :data:`TABLE_METRICS`."""
    names = [m for m in TABLE_METRICS if m in summary]
    return "\n".join(f"{m} {format_mean_sd(summary[m]['mean'], summary[m]['sd'])}" for m in names) + "\n"
