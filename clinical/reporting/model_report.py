"""The report of one registered model version, as one self-contained HTML page.

Sections (their ids are what :mod:`clinical.reporting.guidelines` points to): intended use; data —
patient flow, cohort by site and label, de-identification, split and leakage audit; model and
compute; performance — cross-validation mean ± SD, pooled metrics with patient CIs, ROC, PR,
calibration with slope and intercept, per-site forest plot; limitations; digests; the checklist table.
The figures are the PNGs cross-validation already drew (:func:`clinical.evaluation.figures.save_plots`),
embedded as data URIs. Everything shown is counts, metrics and pseudonymous digests: no identifier.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import pandas as pd

from clinical.errors import ClinicalError
from clinical.evaluation.calibration import calibration_slope_intercept
from clinical.evaluation.report import format_mean_sd, format_metric
from clinical.reporting.deidentification import deidentification_options
from clinical.reporting.guidelines import guideline_rows
from clinical.reporting.template import PAGE
from clinical.splits import OUTER, role_crossings

__all__ = ["SECTIONS", "ModelReportInputs", "render_model_report"]

#: Section ids of the page, in order.
SECTIONS = ("intended-use", "data-flow", "cohort", "deidentification", "split", "model", "compute", "performance",
            "sites", "limitations", "digests", "guidelines")
#: The figures the page embeds, by the file names cross-validation gave them.
FIGURES = ("roc", "pr", "calibration", "sites")
#: Metrics shown in the tables, in this order.
_METRICS = ("auroc", "auprc", "balanced_accuracy", "f1", "sensitivity", "specificity", "brier", "ece")


@dataclass
class ModelReportInputs:
    """What a report is made of, read from the version's runs and the cohort and split they name.

    ``recipe`` is the run's ``config.json``; ``figures`` maps names of :data:`FIGURES` to PNG bytes;
    ``compute`` and ``digests`` are shown as they are (label → value).
    """

    model: str
    intended_use: str
    recipe: dict[str, Any]
    final_model: str
    cv_summary: dict[str, dict[str, float]]
    table: pd.DataFrame
    pooled: pd.DataFrame
    classes: list[str]
    manifest: pd.DataFrame
    rejections: pd.DataFrame
    cohort_meta: dict[str, Any]
    split: pd.DataFrame
    split_meta: dict[str, Any]
    figures: dict[str, bytes]
    compute: dict[str, str]
    digests: dict[str, str]
    limitations: Sequence[str] = field(default_factory=tuple)


def render_model_report(inputs: ModelReportInputs) -> str:
    """The HTML page (a string); figures inline, so the file stands alone and prints to PDF as it is."""
    level, aggregate = inputs.recipe.get("monitor_level", "patient"), inputs.recipe.get("aggregate", "mean")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(PAGE).render(
        model=inputs.model, classes=inputs.classes, level=level, aggregate=aggregate,
        intended_use=inputs.intended_use or "Not stated: pass the intended use (clinical report --intended-use).",
        flow=_flow(inputs), cohort_table=_cohort_table(inputs.manifest),
        modalities=", ".join(sorted(inputs.manifest["modality"].dropna().astype(str).unique())) or "none recorded",
        deidentification=deidentification_options(inputs.cohort_meta.get("options", {})),
        split_text=_split_text(inputs.split_meta), roles_table=_roles_table(inputs.split),
        leakage=_leakage(inputs.split, inputs.manifest), recipe=_recipe(inputs), compute=list(inputs.compute.items()),
        n_folds=len(inputs.split.loc[inputs.split["inner"] == OUTER, "fold"].unique()),
        cv_table=_html(pd.DataFrame([{"metric": m, "mean ± SD": format_mean_sd(v["mean"], v["sd"])}
                                     for m, v in _ordered(inputs.cv_summary)])),
        pooled_table=_html(_pooled_table(inputs.table)),
        calibration_text=_calibration_text(inputs.pooled, inputs.classes, level=level, aggregate=aggregate),
        figures={name: "data:image/png;base64," + base64.b64encode(data).decode()
                 for name, data in inputs.figures.items() if name in FIGURES},
        limitations=_limitations(inputs), digests=list(inputs.digests.items()), guidelines=guideline_rows(),
    )


def _html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, border=0, na_rep="—")


def _ordered(values: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(m, values[m]) for m in _METRICS if m in values]


def _flow(inputs: ModelReportInputs) -> list[dict[str, Any]]:
    """found → rejected (by reason code) → ingested → items and patients → roles (patients) in the split."""
    meta, manifest = inputs.cohort_meta, inputs.manifest
    rows = [{"stage": "inputs found", "count": meta.get("found", "—")}]
    codes = inputs.rejections["code"].fillna("unknown").value_counts().sort_index()
    rows += [{"stage": f"rejected or skipped: {code}", "count": int(n)} for code, n in codes.items()]
    rows += [{"stage": "inputs ingested", "count": meta.get("ingested", "—")},
             {"stage": "items in the manifest", "count": len(manifest)},
             {"stage": "patients", "count": manifest["patient_key"].nunique()},
             {"stage": "patients with a label",
              "count": manifest.loc[manifest["label"].notna(), "patient_key"].nunique()}]
    outer = inputs.split[inputs.split["inner"] == OUTER]
    tested = outer.loc[outer["role"] == "test", "patient_key"].nunique()
    rows.append({"stage": "patients tested once, out of fold (pooled estimate)", "count": tested})
    for role in ("gate", "unlabelled"):
        n = outer.loc[outer["role"] == role, "patient_key"].nunique()
        if n:
            rows.append({"stage": f"patients in role {role}", "count": n})
    return rows


def _cohort_table(manifest: pd.DataFrame) -> str:
    labels = manifest.assign(label=manifest["label"].fillna("(unlabelled)").astype(str))
    patients = labels.pivot_table(index="site", columns="label", values="patient_key", aggfunc="nunique", fill_value=0)
    items = labels.pivot_table(index="site", columns="label", values="item_id", aggfunc="count", fill_value=0)
    cells = patients.astype(str) + " (" + items.reindex_like(patients).fillna(0).astype(int).astype(str) + ")"
    cells["all"] = (labels.groupby("site")["patient_key"].nunique().astype(str) + " ("
                    + labels.groupby("site")["item_id"].count().astype(str) + ")")
    return _html(cells.reset_index())


def _split_text(meta: Mapping[str, Any]) -> str:
    text = (f"{meta.get('folds')} outer folds by {meta.get('by', 'patient')} ({meta.get('mode', 'kfold')}), "
            f"validation share {meta.get('val_size')}, seed {meta.get('seed')}")
    if meta.get("gate_patients"):
        text += (f"; {meta['gate_patients']} patients locked away as the gate set (share {meta.get('gate_size')}), "
                 "used only by the promotion gate")
    if meta.get("site_holdout"):
        text += f"; held-out site(s): {meta['site_holdout']}"
    return text + "."


def _roles_table(split: pd.DataFrame) -> str:
    outer = split[split["inner"] == OUTER]
    table = outer.pivot_table(index="role", columns="fold", values="patient_key", aggfunc="nunique", fill_value=0)
    table.columns = [f"fold {c}" for c in table.columns]
    return _html(table.reset_index())


def _leakage(split: pd.DataFrame, manifest: pd.DataFrame) -> str:
    crossings = role_crossings(split, manifest).groupby("level")["crossing"].sum()
    words = ", ".join(f"{int(n)} {level.removesuffix('_key')}" for level, n in crossings.items())
    return f"{words} — {'no leakage' if int(crossings.sum()) == 0 else 'LEAKAGE: do not trust the estimate'}"


def _recipe(inputs: ModelReportInputs) -> list[tuple[str, str]]:
    r = inputs.recipe
    if r.get("schedule") == "progressive":
        stage = f"after {r['unfreeze_every']} epochs" if r.get("unfreeze_every") else (
            f"on a {r.get('unfreeze_patience')}-epoch validation plateau")
        freezing = (f"progressive: linear probe, then one {r.get('group_granularity')} unfrozen from the top {stage}; "
                    f"layer-wise learning-rate decay {r.get('layer_decay')}")
        if r.get("max_trainable_groups"):
            freezing += f", at most {r['max_trainable_groups']} groups"
    else:
        freezing = str(r.get("schedule"))
    mixing = ", ".join(f"{k} {r[k]}" for k in ("cutmix_alpha", "mixup_alpha") if r.get(k)) or "none"
    return [
        ("architecture", f"{r.get('model')} ({r.get('kind')}, {r.get('in_channels')} channel(s), input "
                         f"{' × '.join(map(str, r.get('image_size', [])))} px)"),
        ("pretraining source", str(r.get("pretrained") or "none: random initialisation")),
        ("freezing schedule", freezing),
        ("optimisation", f"{r.get('epochs')} epochs, batch {r.get('batch_size')}, lr {r.get('lr')}, weight decay "
                         f"{r.get('weight_decay')}, warm-up {r.get('warmup_epochs')} epoch(s), "
                         f"label smoothing {r.get('label_smoothing')}"),
        ("class imbalance", str(r.get("class_balance"))),
        ("mixing", mixing),
        ("model selection", f"{r.get('select')}, early stopping patience {r.get('early_stopping_patience')}"),
        ("registered model", f"{inputs.final_model} ({_FINAL.get(inputs.final_model, inputs.final_model)})"),
        ("output", f"probabilities of {', '.join(inputs.classes)}; thresholded metrics take the most probable class"),
        ("seed", str(r.get("seed"))),
    ]


_FINAL = {"refit": "retrained on every development patient for the folds' median epoch count",
          "best-fold": "the fold model with the best validation score"}


def _pooled_table(table: pd.DataFrame) -> pd.DataFrame:
    rows = table.set_index("metric")
    return pd.DataFrame([{"metric": m, "value (95% CI)": format_metric(row["value"], row["low"], row["high"])}
                         for m, row in _ordered({m: rows.loc[m] for m in rows.index})])


def _calibration_text(pooled: pd.DataFrame, classes: list[str], *, level: str, aggregate: str) -> str:
    try:
        slope, intercept = calibration_slope_intercept(pooled, classes, level=level, aggregate=aggregate)
    except ClinicalError as error:
        return f"Calibration slope and intercept: not computed ({error})"
    return (f"Calibration slope {slope:.2f} and intercept {intercept:+.2f} (logistic recalibration of the outcome "
            f"on the predicted log-odds; perfect: 1 and 0). A slope below 1 means too extreme predictions.")


def _limitations(inputs: ModelReportInputs) -> list[str]:
    """The user's statements first, then what the artefacts themselves show."""
    lines = list(inputs.limitations)
    patients = inputs.manifest["patient_key"].nunique()
    sites = inputs.manifest["site"].nunique()
    lines.append(f"Internal validation only (cross-validation over {patients} patients from {sites} site(s)); "
                 "no external test set is reported here.")
    if sites < 2:
        lines.append("One site: performance at other sites is unknown.")
    table = inputs.table.set_index("metric")
    if "auroc" in table.index:
        width = float(table.loc["auroc", "high"] - table.loc["auroc", "low"])
        if width > 0.2:
            lines.append(f"The AUROC's 95% CI is {width:.2f} wide: the cohort is too small for a precise estimate.")
    if not inputs.split_meta.get("gate_patients"):
        lines.append("The split has no gate set: later versions cannot be compared on patients unseen by both.")
    lines.append("Subgroups other than site (age, sex, device) are not recorded in the cohort and were not analysed.")
    return lines
