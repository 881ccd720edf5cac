"""What every study shares: arms, the table laid out like a paper's, one summary figure, one MLflow parent run.

A study is a set of *arms* — recipes, splits or methods that differ in one
thing — run on the same patients. Each arm ends as an :class:`ArmResult`:
one score per fold (mean ± SD over folds, as the papers report them) and the
pooled out-of-fold table with patient-bootstrap CIs. :func:`study_table`
lays the arms side by side and tests each against the study's reference arm
over the folds (Nadeau–Bengio's corrected t-test, since the folds' training
sets overlap); :func:`finish_study` writes ``table.csv``, ``table.md``,
``summary.png`` and ``study.json`` under the study folder and sends them to
the study's MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clinical.errors import ConfigurationError
from clinical.evaluation import compare_folds, save_figure
from clinical.evaluation.report import format_mean_sd, format_metric
from clinical.splits import OUTER, read_split
from clinical.tracking import MlflowTracker
from clinical.training import TrainConfig
from clinical.workflows.crossval import CrossValidation, cross_validate

__all__ = ["ArmResult", "StudyResult", "arm_from_cv", "finish_study", "run_arm", "study_table"]

logger = logging.getLogger(__name__)


@dataclass
class ArmResult:
    """One arm of a study: its per-fold scores, its pooled table with patient CIs, and what else it measured.

    Attributes
    ----------
    name
        The arm as the table names it (``"PET + CT"``, ``"random init"``).
    fold_scores
        Metric → one value per outer fold, fold ``i`` of every arm on the same patients.
    pooled
        ``metric, value, low, high`` (and ``level``) of the pooled out-of-fold predictions.
    n_train, n_test
        Patients trained and tested on, per fold (the corrected t-test needs their ratio).
    extra
        Further columns of the table (compute, seconds, retrieval accuracy…), plain numbers or strings.
    out
        Where the arm's files are.
    """

    name: str
    fold_scores: dict[str, list[float]]
    pooled: pd.DataFrame
    n_train: list[int] = field(default_factory=list)
    n_test: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    run_id: str | None = None


@dataclass
class StudyResult:
    """A finished study: the table, where its files are, and its MLflow run."""

    name: str
    table: pd.DataFrame
    arms: list[ArmResult]
    out: Path
    figure: Path
    findings: dict[str, Any]
    run_id: str | None = None

    @property
    def markdown(self) -> str:
        return (self.out / "table.md").read_text()


def _fold_patients(cv: CrossValidation, split_path: str | Path) -> tuple[list[int], list[int]]:
    split, _ = read_split(split_path)
    n_train, n_test = [], []
    for run in cv.fold_runs:
        rows = split[(split["fold"] == run.fold) & (split["inner"] == OUTER)]
        n_train.append(int(rows.loc[rows["role"] == "train", "patient_key"].nunique()))
        n_test.append(int(rows.loc[rows["role"] == "test", "patient_key"].nunique()))
    return n_train, n_test


def arm_from_cv(name: str, cv: CrossValidation, split_path: str | Path, **extra: Any) -> ArmResult:
    """An arm from a finished cross-validation (its folds' test metrics and its pooled table)."""
    metrics = sorted({m for r in cv.results for m in r.test_metrics})
    fold_scores = {m: [float(r.test_metrics.get(m, math.nan)) for r in cv.results] for m in metrics}
    n_train, n_test = _fold_patients(cv, split_path)
    return ArmResult(name=name, fold_scores=fold_scores, pooled=cv.table, n_train=n_train, n_test=n_test,
                     extra=extra, out=str(cv.out), run_id=cv.parent_run_id)


def run_arm(
    name: str,
    config: TrainConfig,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    out: str | Path,
    tracker: MlflowTracker | None,
    n_boot: int,
    ray_address: str | None = None,
    **extra: Any,
) -> ArmResult:
    """Cross-validate one arm's recipe (its MLflow run nested under the study's) and return it as an arm.

    With ``ray_address`` its folds are tasks of that Ray cluster (:func:`~clinical.workflows.cross_validate`).
    """
    cv = cross_validate(config, cohort_dir=cohort_dir, split_path=split_path, out=out, tracker=tracker,
                        run_name=name, n_boot=n_boot, ray_address=ray_address)
    return arm_from_cv(name, cv, split_path, **extra)


def _pooled(arm: ArmResult, metric: str) -> tuple[float, float, float]:
    rows = arm.pooled[arm.pooled["metric"] == metric]
    if rows.empty:
        return math.nan, math.nan, math.nan
    row = rows.iloc[0]
    return float(row["value"]), float(row["low"]), float(row["high"])


def study_table(arms: Sequence[ArmResult], *, metrics: Sequence[str], reference: str | None = None,
                test_metric: str | None = None) -> pd.DataFrame:
    """Arms × metrics: ``<m>_mean``, ``<m>_sd`` over folds, ``<m>_pooled`` with ``_low``/``_high`` (patient CI).

    With a ``reference`` arm, every other arm with the same folds gets ``diff_vs_reference``, its CI and
    ``p_vs_reference`` on ``test_metric`` (default the first metric): the mean per-fold difference
    arm − reference and the corrected resampled t-test (:func:`clinical.evaluation.compare_folds`).
    """
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"study arms need distinct names; got {names}.")
    if reference is not None and reference not in names:
        raise ConfigurationError(f"the reference arm {reference!r} is not among the arms {names}.")
    test_metric = test_metric or metrics[0]
    base = next((arm for arm in arms if arm.name == reference), None)
    rows = []
    for arm in arms:
        row: dict[str, Any] = {"arm": arm.name, "n_folds": len(next(iter(arm.fold_scores.values()), []))}
        for metric in metrics:
            scores = np.asarray(arm.fold_scores.get(metric, []), dtype=np.float64)
            scores = scores[np.isfinite(scores)]
            row[f"{metric}_mean"] = float(scores.mean()) if scores.size else math.nan
            row[f"{metric}_sd"] = float(scores.std(ddof=1)) if scores.size > 1 else math.nan
            row[f"{metric}_pooled"], row[f"{metric}_low"], row[f"{metric}_high"] = _pooled(arm, metric)
        row.update(arm.extra)
        if base is not None and arm is not base:
            row.update(_versus(arm, base, test_metric))
        rows.append(row)
    return pd.DataFrame(rows)


def _versus(arm: ArmResult, base: ArmResult, metric: str) -> dict[str, float]:
    a, b = arm.fold_scores.get(metric, []), base.fold_scores.get(metric, [])
    if len(a) != len(b) or len(a) < 2 or not arm.n_train or not np.all(np.isfinite(a + b)):
        return {}
    result = compare_folds(a, b, n_train=arm.n_train, n_test=arm.n_test)
    return {"diff_vs_reference": result.difference, "diff_low": result.low, "diff_high": result.high,
            "p_vs_reference": result.p_value}


def format_table(table: pd.DataFrame, *, metrics: Sequence[str], reference: str | None,
                 test_metric: str | None = None, extra: Sequence[str] = ()) -> str:
    """The table as Markdown, the way a paper prints it: mean ± SD over folds, pooled (95 % CI), the paired test."""
    test_metric = test_metric or metrics[0]
    header = ["arm"] + [f"{m} (folds)" for m in metrics] + [f"{m} pooled (95% CI)" for m in metrics] + list(extra)
    if reference is not None:
        header += [f"Δ{test_metric} vs {reference} (p)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [str(row["arm"])]
        cells += [format_mean_sd(row[f"{m}_mean"], row[f"{m}_sd"]) if math.isfinite(row[f"{m}_mean"]) else "–"
                  for m in metrics]
        cells += [format_metric(row[f"{m}_pooled"], row[f"{m}_low"], row[f"{m}_high"]) for m in metrics]
        cells += [_cell(row.get(name)) for name in extra]
        if reference is not None:
            diff = row.get("diff_vs_reference")
            cells.append("reference" if row["arm"] == reference else "–" if diff is None or not math.isfinite(diff)
                         else f"{diff:+.3f} (p = {row['p_vs_reference']:.2g})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def summary_figure(table: pd.DataFrame, *, metric: str, title: str) -> Figure:
    """Each arm's pooled ``metric`` with its patient CI (squares) and its fold scores' mean ± SD (circles)."""
    figure = Figure(figsize=(7.5, 1.2 + 0.5 * len(table)), layout="constrained")
    ax = figure.add_subplot()
    positions = np.arange(len(table))[::-1].astype(float)
    value, low, high = (table[f"{metric}_{s}"].to_numpy(np.float64) for s in ("pooled", "low", "high"))
    ax.errorbar(value, positions + 0.12, xerr=[value - low, high - value], fmt="s", color="C0", capsize=3,
                label="pooled, 95 % patient CI")
    mean, sd = table[f"{metric}_mean"].to_numpy(np.float64), table[f"{metric}_sd"].to_numpy(np.float64)
    if np.isfinite(mean).any():
        ax.errorbar(mean, positions - 0.12, xerr=np.nan_to_num(sd), fmt="o", color="C1", capsize=3,
                    label="mean ± SD over folds")
    ax.set_yticks(positions, table["arm"].astype(str))
    ax.set_xlabel(metric)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    return figure


def finish_study(
    name: str,
    arms: Sequence[ArmResult],
    *,
    out: str | Path,
    metrics: Sequence[str],
    reference: str | None,
    title: str,
    tracker: MlflowTracker | None = None,
    test_metric: str | None = None,
    extra: Sequence[str] = (),
    findings: Mapping[str, Any] | None = None,
) -> StudyResult:
    """The study's table (CSV and Markdown), summary figure and record under ``out``, sent to the study's run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = study_table(arms, metrics=metrics, reference=reference, test_metric=test_metric)
    table.to_csv(out / "table.csv", index=False)
    markdown = format_table(table, metrics=metrics, reference=reference, test_metric=test_metric, extra=extra)
    (out / "table.md").write_text(f"## {title}\n\n{markdown}")
    figure = save_figure(summary_figure(table, metric=test_metric or metrics[0], title=title),
                         out / "summary.png")
    record = {"study": name, "title": title, "reference": reference, "metrics": list(metrics),
              "arms": [{"name": a.name, "out": a.out, "run_id": a.run_id} for a in arms],
              "findings": dict(findings or {})}
    (out / "study.json").write_text(json.dumps(record, indent=2, default=str))
    run_id = tracker.study_run_id if tracker is not None else None
    if tracker is not None:
        tracker.log_study(out, table=table)
    logger.info("Study %s:\n%s", name, markdown)
    return StudyResult(name=name, table=table, arms=list(arms), out=out, figure=figure,
                       findings=dict(findings or {}), run_id=run_id)
