"""Axial PET/CT slices of two centres: which split, which channels, whether the network knows the centre.

The paper classifies 2D axial slices with a ResNet-18 (a slice is positive when it cuts a tumour) and
compares a slice-level with a patient-level split, PET alone with PET and CT as two channels, and
centre-aware with centre-agnostic training. Here every arm is the same from-scratch ResNet-18 recipe on
the slices of the ingested PET/CT volumes (:func:`clinical.workflows.slice_cohort`, PET then CT as
channels) and changes one thing against the reference (patient-level split, PET + CT, centre-agnostic):

- *slice-level split*: the slices dealt into folds on their own
  (:func:`clinical.data.independent_slices`, the mistake trained on purpose as
  :func:`clinical.workflows.trained_inflation` does), so neighbouring slices of one patient sit in
  training and test. Its folds hold other slices than the reference's, so it gets no paired test; its
  pooled metrics are recomputed on the real patients (CIs resampling patients, not slices) and set
  against the reference's: the difference is the overestimate;
- *PET only*: the recipe reads the PET channel alone (``TrainConfig.channels=("PT",)``);
- *centre-aware*: a learned embedding of the centre joins the pooled features (``centre="embedding"``).

Metrics are those of the paper at slice level (AUROC, AUPRC, sensitivity, specificity) and the same per
patient (``patient_*``): a patient is positive when any of their slices is, and their score is the mean
of their three most suspicious slices (``aggregate="top3"``: a lesion spans several slices, one odd
slice does not decide). The patient-split arms share folds, so each is tested against the reference
over the folds; every arm also reports its slice AUROC per centre.

The synthetic analogue (:mod:`clinical.cohort.synthetic.petct`) puts physiological hot spots on PET that
only CT tells from lesions (``ct_signal``), so there PET + CT *can* beat PET only, the reverse of the
paper's best model; with ``ct_signal=False`` lesions are invisible on CT and CT is only a distraction.
Whether it does depends on what the network learns: without the patient effect PET + CT leads by about
0.2 AUROC on one split of 32 patients (``tests/test_petct_learning.py``); with it the network can memorise
the few training patients through CT's body outline, and on that split PET + CT fell below PET only, while
the full study's four folds show it ahead (``docs/studies.md``). ``patient_effect=False`` draws the
label-free appearance per slice instead of per patient: the slices of one patient then share nothing but
their lesions; the slice-level split's overestimate shrinks but stays, since one lesion spans several
neighbouring slices that the split deals to both sides.

``control`` (on by default) adds a *no-lesion control*: the reference recipe on the same synthetic patients,
labels and folds with the lesions removed (``finding_strength=0``). With a few dozen patients a network
can find label-free patient traits (body outline, background uptake) that happen to go with the labels,
and a generator can leak the label (an earlier one did, through centres and slice position); the control
measures that floor, so an arm is only learning lesions where it beats the control. The study reports
what it finds under ``findings``.

The whole network learns at one rate (``layer_decay=1``): the fine-tuning default (half per stage below the
head) leaves the stem of a from-scratch ResNet-18 at 1/32 of the head's rate, and it then barely learns the
lesions (PET only 0.70 against 0.86 at one rate, on a 32-patient analogue).

Every arm reads its slices with ``intensity="ingest"`` (:mod:`clinical.data.presets`): the CT window and
SUVbw / 20 as ingest wrote them, the same scale in every slice. The default per-image z-score would keep
the CT window's contrast but throw away the SUV scale, the quantitative uptake a PET reader relies on (a
slice's hottest spot would look alike whether it is SUV 7 or SUV 3).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinical.cohort import read_manifest, write_manifest
from clinical.cohort.manifest import cohort_digest
from clinical.data import independent_slices
from clinical.errors import ConfigurationError
from clinical.evaluation import evaluate, per_site, score
from clinical.evaluation.report import format_metric
from clinical.evaluation.sites import ALL_SITES, SITE_GAP
from clinical.splits import read_split, split_manifest, write_split
from clinical.tracking import MlflowTracker
from clinical.training import TrainConfig
from clinical.workflows.crossval import CrossValidation, cross_validate
from clinical.workflows.slices import slice_cohort
from clinical.workflows.studies.arms import ArmResult, StudyResult, arm_from_cv, finish_study
from clinical.workflows.studies.cohorts import SYNTHETIC_KEY, study_cohort, study_split

__all__ = ["METRICS", "REFERENCE", "SIZES", "TITLE", "run"]

logger = logging.getLogger(__name__)

TITLE = "PET/CT axial slices, two centres: split level × channels × centre awareness (slice AUROC)"
REFERENCE = "patient split, PET + CT, centre-agnostic"
SLICE_SPLIT = "slice split, PET + CT, centre-agnostic"
PET_ONLY = "patient split, PET only, centre-agnostic"
CENTRE_AWARE = "patient split, PET + CT, centre-aware"
CONTROL = "control: patient split, PET + CT, no lesion signal"
SLICE_METRICS = ("auroc", "auprc", "sensitivity", "specificity")
#: Slice-level metrics, then the same per patient.
METRICS = (*SLICE_METRICS, *(f"patient_{m}" for m in SLICE_METRICS))
_KEYS = ("patient_key", "study_key", "series_key")

#: Cohort counts (two centres), folds and training budget of each size.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"spec": {"petct_patients_per_site": 4, "petct_shape": (8, 32, 32)}, "folds": 2, "control": True,
             "recipe": {"image_size": (32, 32), "epochs": 1, "batch_size": 32}, "n_boot": 100},
    "full": {"spec": {"petct_patients_per_site": 16, "petct_shape": (16, 32, 32)}, "folds": 4, "control": True,
             "recipe": {"image_size": (32, 32), "epochs": 8, "batch_size": 32}, "n_boot": 1000},
}


def run(out: Path, *, size: str, cohort: str | Path | None, seed: int, tracker: MlflowTracker | None,
        patient_effect: bool = True, ct_signal: bool = True, slice_labels: str | Path | None = None,
        key: str | bytes | None = None, aggregate: str = "top3", control: bool | None = None,
        ray_address: str | None = None) -> StudyResult:
    """Run the PET/CT arms.

    Parameters
    ----------
    patient_effect, ct_signal
        Switches of the synthetic analogue (see the module docstring); ignored with ``cohort``.
    slice_labels, key
        With the user's ``cohort`` (volumes ingested with ``--channels PT,CT``): the slice-label CSV and the
        cohort's pseudonym key (default ``CLINICAL_PSEUDONYM_KEY``); without labels every slice takes its
        volume's label.
    aggregate
        How a patient's slice scores become theirs for the ``patient_*`` metrics.
    control
        Add the no-lesion control arm (synthetic analogue only; default: the size's ``control``, on).
    """
    settings = SIZES[size]
    control = settings["control"] if control is None else control
    name = "cohort" + ("" if patient_effect else "-no-patient-effect") + ("" if ct_signal else "-no-ct-signal")
    cohort_dir, raw = study_cohort(out, "petct", cohort=cohort, size="tiny", seed=seed, spec=settings["spec"],
                                   generator={"patient_effect": patient_effect, "ct_signal": ct_signal},
                                   ingest_options={"channels": ("PT", "CT")}, name=name)
    if raw is not None:
        slice_labels, key = raw / "slice_labels.csv", SYNTHETIC_KEY
    split = study_split(cohort_dir, out / f"{name}-split.parquet", folds=settings["folds"], seed=seed)
    slices, slice_split = slice_cohort(cohort_dir, split, out / f"{name}-slices" / "patient-split",
                                       slice_labels=slice_labels, key=key)
    scattered, scattered_split = _slice_level_split(slices, out / f"{name}-slices" / "slice-split",
                                                    folds=settings["folds"], seed=seed)
    truth = _truth(read_manifest(slices), read_manifest(cohort_dir))
    recipe = TrainConfig.build(model="resnet18", kind="image", in_channels=2, channels=("PT", "CT"),
                               schedule="full", lr=1e-3, layer_decay=1.0, warmup_epochs=1.0,
                               class_balance="weighted-loss", monitor_level="item", early_stopping_patience=None,
                               intensity="ingest", seed=seed,
                               **settings["recipe"])
    arms = {
        REFERENCE: (recipe, slices, slice_split, truth),
        SLICE_SPLIT: (recipe, scattered, scattered_split, truth),
        PET_ONLY: (recipe.model_copy(update={"channels": ("PT",), "in_channels": 1}), slices, slice_split, truth),
        CENTRE_AWARE: (recipe.model_copy(update={"centre": "embedding"}), slices, slice_split, truth),
    }
    if control and raw is not None:
        arms[CONTROL] = (recipe, *_control(out, name, split, settings, seed=seed, patient_effect=patient_effect,
                                           ct_signal=ct_signal))
    results = []
    for i, (arm, (config, arm_cohort, arm_split, arm_truth)) in enumerate(arms.items()):
        cv = cross_validate(config, cohort_dir=arm_cohort, split_path=arm_split, out=out / "arms" / f"arm-{i}",
                            tracker=tracker, run_name=arm, n_boot=settings["n_boot"], ray_address=ray_address)
        for path in cv.out.glob("fold-*/checkpoints/last.pt"):  # resume state of finished fits: ~0.13 GB each
            path.unlink()
        results.append(_arm(arm, cv, arm_split, arm_truth, aggregate=aggregate, n_boot=settings["n_boot"],
                            seed=seed, paired=arm != SLICE_SPLIT))
    findings = _findings(results, patient_effect=patient_effect, ct_signal=ct_signal, synthetic=raw is not None)
    findings.update({"folds": settings["folds"], "aggregate": aggregate, "slices": len(truth),
                     "patients": int(truth["patient_key"].nunique())})
    return finish_study("petct", results, out=out, metrics=METRICS, reference=REFERENCE, title=TITLE,
                        tracker=tracker, extra=("split", "channels", "centre", *_site_columns(results)),
                        findings=findings)


def _control(out: Path, name: str, split: Path, settings: dict[str, Any], *, seed: int, patient_effect: bool,
             ct_signal: bool) -> tuple[Path, Path, pd.DataFrame]:
    """The slices of the same synthetic patients with no lesion signal (``finding_strength=0``), on the same folds.

    The seed draws the same patients, labels, slice labels and appearance; only the lesions' uptake and CT
    contrast are gone. What a recipe scores there is what it gets from everything but the lesions.
    """
    cohort_dir, raw = study_cohort(out, "petct", size="tiny", seed=seed, spec=settings["spec"],
                                   generator={"patient_effect": patient_effect, "ct_signal": ct_signal,
                                              "finding_strength": 0.0},
                                   ingest_options={"channels": ("PT", "CT")}, name=f"{name}-no-lesions")
    folds, meta = read_split(split)
    manifest = read_manifest(cohort_dir)
    rows = manifest[["item_id", "patient_key"]].merge(folds.drop(columns=["item_id"]), on="patient_key")
    if rows["patient_key"].nunique() != folds["patient_key"].nunique():
        raise ConfigurationError("the no-lesion control cohort does not hold the study's patients; regenerate both.")
    rows.attrs["split"] = {k: v for k, v in meta.items() if k not in ("digest", "cohort_digest", "rows", "items")}
    same = out / f"{name}-no-lesions-split.parquet"
    write_split(rows, same, cohort_digest=cohort_digest(manifest))
    slices, slice_split = slice_cohort(cohort_dir, same, out / f"{name}-slices" / "no-lesions",
                                       slice_labels=raw / "slice_labels.csv", key=SYNTHETIC_KEY)
    return slices, slice_split, _truth(read_manifest(slices), manifest)


def _slice_level_split(slices: Path, out: Path, *, folds: int, seed: int) -> tuple[Path, Path]:
    """The slice cohort with every slice its own patient, and its folds: what a slice-level study trains on.

    The copy sits beside the patient-split slice cohort, at the same depth, so its relative paths still
    lead to the volume cohort's arrays.
    """
    view = independent_slices(read_manifest(slices))
    cohort_dir = out / "cohort"
    digest = write_manifest(view, cohort_dir, meta={"scattered_from": str(slices)})
    write_split(split_manifest(view, folds=folds, seed=seed), out / "split.parquet", cohort_digest=digest)
    return cohort_dir, out / "split.parquet"


def _truth(slices: pd.DataFrame, volumes: pd.DataFrame) -> pd.DataFrame:
    """Per slice item: its real patient, study and series keys, and its patient's label (their volumes' label).

    A patient whose volumes disagree gets no patient label and is left out of the ``patient_*`` metrics.
    """
    labels = volumes.dropna(subset=["label"]).groupby("patient_key")["label"].agg(lambda v: set(v.astype(str)))
    patient_label = labels.map(lambda v: next(iter(v)) if len(v) == 1 else None)
    if patient_label.isna().any():
        logger.warning("%d patient(s) have volumes of different labels; the patient metrics leave them out.",
                       int(patient_label.isna().sum()))
    return slices[["item_id", *_KEYS]].assign(patient_label=slices["patient_key"].map(patient_label))


def _on_patients(frame: pd.DataFrame, truth: pd.DataFrame, classes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions with their real patients (slice level), and the same labelled with the patient's label."""
    real = frame.drop(columns=list(_KEYS)).merge(truth, on="item_id", how="left", validate="one_to_one")
    index = {name: k for k, name in enumerate(classes)}
    patients = real.assign(label=pd.array(real["patient_label"].map(index), dtype="Int64"))
    return real.drop(columns=["patient_label"]), patients.drop(columns=["patient_label"])


def _arm(name: str, cv: CrossValidation, split: Path, truth: pd.DataFrame, *, aggregate: str, n_boot: int,
         seed: int, paired: bool) -> ArmResult:
    """The arm with slice and patient metrics per fold and pooled on the real patients, and its per-centre AUROC."""
    arm = arm_from_cv(name, cv, split)
    classes = cv.results[0].classes
    fold_scores: dict[str, list[float]] = {m: [] for m in METRICS}
    for result in cv.results:
        slices, patients = _on_patients(result.test_predictions, truth, classes)
        for prefix, frame, level in (("", slices, "item"), ("patient_", patients, "patient")):
            values = score(frame, classes, level=level, aggregate=aggregate)
            for metric in SLICE_METRICS:
                fold_scores[prefix + metric].append(float(values.get(metric, np.nan)))
    slices, patients = _on_patients(cv.pooled, truth, classes)
    item = evaluate(slices, classes, level="item", n_boot=n_boot, seed=seed, metrics=SLICE_METRICS).to_table()
    patient = evaluate(patients, classes, level="patient", n_boot=n_boot, seed=seed, aggregate=aggregate,
                       metrics=SLICE_METRICS).to_table()
    pooled = pd.concat([item, patient.assign(metric="patient_" + patient["metric"])], ignore_index=True)
    config = cv.config
    extra = {"split": "patient" if paired else "slice", "channels": " + ".join(config.channels or ("all",)),
             "centre": config.centre, **_site_auroc(slices, classes, n_boot=n_boot, seed=seed)}
    return dataclasses.replace(arm, fold_scores=fold_scores, pooled=pooled, extra=extra,
                               n_train=arm.n_train if paired else [], n_test=arm.n_test if paired else [])


def _site_auroc(frame: pd.DataFrame, classes: Sequence[str], *, n_boot: int, seed: int) -> dict[str, str]:
    """Slice AUROC (95 % patient CI) per centre, as ``"AUROC <site>"`` columns."""
    table = per_site(frame, classes, level="item", n_boot=n_boot, seed=seed, metrics=("auroc",))
    table = table[~table["site"].isin([ALL_SITES, SITE_GAP])]
    return {f"AUROC {row.site}": format_metric(row.value, row.low, row.high) for row in table.itertuples()}


def _site_columns(arms: Sequence[ArmResult]) -> list[str]:
    return sorted({name for arm in arms for name in arm.extra if name.startswith("AUROC ")})


def _pooled(arm: ArmResult, metric: str) -> float:
    rows = arm.pooled.loc[arm.pooled["metric"] == metric, "value"]
    return float(rows.iloc[0]) if len(rows) else float("nan")


def _findings(arms: Sequence[ArmResult], *, patient_effect: bool, ct_signal: bool, synthetic: bool) -> dict[str, Any]:
    """What the arms show, against the paper's findings, in numbers (pooled, real patients)."""
    by_name = {arm.name: arm for arm in arms}
    reference, leaky, pet = by_name[REFERENCE], by_name[SLICE_SPLIT], by_name[PET_ONLY]
    patient_split = [arm for arm in arms if arm.name not in (SLICE_SPLIT, CONTROL)]
    best = max(patient_split, key=lambda arm: _pooled(arm, "auroc"))
    findings: dict[str, Any] = {
        "slice_split_overestimate_auroc": _pooled(leaky, "auroc") - _pooled(reference, "auroc"),
        "slice_split_overestimate_patient_auroc": _pooled(leaky, "patient_auroc") - _pooled(reference, "patient_auroc"),
        "slice_split_overestimate_sensitivity": _pooled(leaky, "sensitivity") - _pooled(reference, "sensitivity"),
        "pet_only_minus_pet_ct_auroc": _pooled(pet, "auroc") - _pooled(reference, "auroc"),
        "best_patient_split_arm": best.name,
        **({"reference_minus_no_lesion_control_auroc": _pooled(reference, "auroc") - _pooled(by_name[CONTROL], "auroc"),
            "reference_minus_no_lesion_control_patient_auroc":
                _pooled(reference, "patient_auroc") - _pooled(by_name[CONTROL], "patient_auroc")}
           if CONTROL in by_name else {}),
        "paper": "slice-level split overestimates; best generalising: patient split, PET only, centre-agnostic",
    }
    if synthetic:
        findings["analogue"] = {"patient_effect": patient_effect, "ct_signal": ct_signal,
                                "expects": ("PET + CT above PET only where the network learns lesions rather than "
                                            "patients: only CT tells lesions from PET hot spots" if ct_signal
                                            else "PET + CT no better than PET only: CT carries no lesion")}
    return findings
