"""Brain-tumour-like volumes of three lesion types: spatiospatial video ResNets against a 3D ResNet, with and
without pretraining on an unrelated data set, and what each costs.

The paper treats the slice axis like time: ResNet (2+1)D (a spatial 1×3×3 then a 3×1×1 convolution) and
the mixed-convolution MC3 (3D convolutions in the early stages only) both beat a pure 3D ResNet-18, and
pretraining on an unrelated data set helped; pretrained MC3 was best (macro F1 0.93) at the lowest cost.
Here each of torchvision's ``r2plus1d_18``, ``mc3_18`` and ``r3d_18`` and MONAI's 3D ``resnet18`` is
cross-validated on the same patient-level folds of the synthetic ``volumes`` task (smooth, spiculated or
cystic lesions; CT and MR of three sites, DICOM series and NIfTI), twice: from random weights, and from a
backbone pretrained on another task's data. The reference arm is pretrained MC3, the paper's best; every
other arm is tested against it over the folds.

Pretraining: SimCLR (:func:`clinical.training.pretraining.pretrain`) on the single-channel volumes of a
separate synthetic cohort of *another task*, whole-body PET/CT studies (their CT and PET series as
separate volumes; other patients, other anatomy, other modality, no tumour types). That is the analogue of
the paper's unrelated pretraining set: nothing of the study's patients or labels reaches the backbone, and
no labels are needed, so the same corpus serves every architecture. Each model's head is new.

Metrics per volume with patient-bootstrap CIs: macro F1 (the reference metric), balanced accuracy (the
paper's accuracy, robust to class counts) and macro one-vs-rest AUROC. Extra columns: parameters and FLOPs
of one forward pass on one volume at the training size (:func:`clinical.models.flops.model_complexity`),
and seconds of cross-validated training per arm (and of pretraining, shared by the model's pretrained arm).
The study reports what it finds under ``findings``. At ``full`` (36 patients, 8×32×32 voxels, five epochs,
what a CPU affords for eight 3D networks) no arm learns the lesion types: every arm sits near chance
(macro F1 about 1/3), so the table measures cost but cannot rank accuracy. The lesions are two to three
voxels in radius there; a MONAI 3D ResNet-18 trained for 20 epochs, at 16×64×64 voxels, or on lesions of
three times the contrast stayed at chance too, so the analogue needs more patients and voxels (a GPU) to
carry the paper's finding.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clinical.errors import ConfigurationError
from clinical.models.flops import model_complexity
from clinical.tracking import MlflowTracker
from clinical.training import TrainConfig
from clinical.training.pretraining import pretrain
from clinical.workflows.studies.arms import ArmResult, StudyResult, finish_study, run_arm
from clinical.workflows.studies.cohorts import study_cohort, study_split

__all__ = ["MODELS", "REFERENCE", "SIZES", "TITLE", "run"]

logger = logging.getLogger(__name__)

TITLE = "Brain-tumour-like volumes, three lesion types: (2+1)D, MC3, R3D and 3D ResNet-18, scratch vs pretrained"
#: Registry name → how the table names the architecture.
MODELS = {"mc3_18": "MC3-18", "r2plus1d_18": "R(2+1)D-18", "r3d_18": "R3D-18", "resnet18": "3D ResNet-18 (MONAI)"}
METRICS = ("f1", "balanced_accuracy", "auroc")
REFERENCE = "MC3-18, pretrained"
#: Ingest options of the synthetic volumes: the site is the folder under ``dicom/`` or ``nifti/``.
VOLUME_INGEST = {"site_depth": 1, "site_from": "folder"}

#: Cohort counts, folds, architectures and training budget of each size. ``tiny`` runs one video model (MC3,
#: the reference) and MONAI's: the other two take the same code path, and every fit of a 30-million-parameter
#: network writes half a gigabyte of checkpoints.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"spec": {"volume_patients_per_site": 3, "volume_shape": (8, 24, 24)},
             "corpus": {"petct_patients_per_site": 2, "petct_shape": (8, 24, 24)}, "folds": 2,
             "models": ("mc3_18", "resnet18"), "pretrain_epochs": 1,
             "recipe": {"image_size": (8, 24, 24), "epochs": 1, "batch_size": 8}, "n_boot": 100},
    "full": {"spec": {"volume_patients_per_site": 12, "volume_shape": (12, 40, 40)},
             "corpus": {"petct_patients_per_site": 8, "petct_shape": (12, 40, 40)}, "folds": 3,
             "models": tuple(MODELS), "pretrain_epochs": 3,
             "recipe": {"image_size": (8, 32, 32), "epochs": 5, "batch_size": 8}, "n_boot": 1000},
}


def arm_name(model: str, pretrained: bool) -> str:
    """``"MC3-18, pretrained"`` / ``"MC3-18, from scratch"``."""
    return f"{MODELS[model]}, {'pretrained' if pretrained else 'from scratch'}"


def run(out: Path, *, size: str, cohort: str | Path | None, seed: int, tracker: MlflowTracker | None,
        corpus: str | Path | None = None, models: Sequence[str] | None = None,
        ray_address: str | None = None) -> StudyResult:
    """Run the brain-MR arms. ``corpus`` is an ingested cohort of single-channel volumes for the SimCLR
    pretraining (synthetic PET/CT volumes of another task by default); ``models`` picks architectures among
    :data:`MODELS` (default: those of the size)."""
    settings = SIZES[size]
    models = tuple(models or settings["models"])
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ConfigurationError(f"brain-mr compares {list(MODELS)}; got {unknown}.")
    cohort_dir, _ = study_cohort(out, "volumes", cohort=cohort, size="tiny", seed=seed, spec=settings["spec"],
                                 ingest_options=VOLUME_INGEST)
    corpus_dir, _ = study_cohort(out, "petct", cohort=corpus, size="tiny", seed=seed + 101, spec=settings["corpus"],
                                 name="corpus")
    split = study_split(cohort_dir, out / "split.parquet", folds=settings["folds"], seed=seed)
    recipe = TrainConfig.build(model="mc3_18", kind="volume", schedule="full", lr=1e-3, layer_decay=1.0,
                               warmup_epochs=1.0, monitor_level="item", early_stopping_patience=None, seed=seed,
                               **settings["recipe"])
    results = []
    for model in models:
        config = recipe.model_copy(update={"model": model})
        cost = _cost(model, config.image_size)
        started = time.perf_counter()
        backbone = pretrain(corpus_dir, method="simclr", model=model, kind="volume",
                            epochs=settings["pretrain_epochs"], batch_size=config.batch_size, size=config.image_size,
                            seed=seed, out=out / "pretrained" / f"{model}.pt").path
        pretrain_seconds = time.perf_counter() - started
        for pretrained in (True, False):
            name = arm_name(model, pretrained)
            arm_config = config.model_copy(update={"pretrained": str(backbone) if pretrained else None})
            started = time.perf_counter()
            arm = run_arm(name, arm_config, cohort_dir=cohort_dir, split_path=split,
                          out=out / "arms" / f"{model}-{'pretrained' if pretrained else 'scratch'}", tracker=tracker,
                          n_boot=settings["n_boot"], ray_address=ray_address)
            seconds = time.perf_counter() - started
            drop_resume_checkpoints(Path(arm.out))
            results.append(dataclasses.replace(arm, extra={
                **cost, "train s": round(seconds, 1), "pretrain s": round(pretrain_seconds, 1) if pretrained else 0.0,
            }))
    reference = REFERENCE if any(arm.name == REFERENCE for arm in results) else results[0].name
    return finish_study("brain-mr", results, out=out, metrics=METRICS, reference=reference, title=TITLE,
                        tracker=tracker, extra=("params (M)", "GFLOPs/volume", "train s", "pretrain s"),
                        findings=_findings(results, settings=settings, image_size=recipe.image_size))


def drop_resume_checkpoints(out: Path) -> None:
    """Delete the folds' ``last.pt`` once an arm is done: a finished fit is never resumed, and for these networks
    each holds ~0.4 GB of weights and optimiser state (``best.pt`` stays, the arm's models)."""
    for path in out.glob("fold-*/checkpoints/last.pt"):
        path.unlink()


def _cost(model: str, size: Sequence[int]) -> dict[str, float]:
    """Parameters (millions) and GFLOPs of one forward pass on one single-channel volume of ``size``."""
    complexity = model_complexity(model, 3, in_channels=1, size=size)
    return {"params (M)": round(complexity.parameters / 1e6, 2), "GFLOPs/volume": round(complexity.flops / 1e9, 3)}


def _pooled(arm: ArmResult, metric: str) -> float:
    rows = arm.pooled.loc[arm.pooled["metric"] == metric, "value"]
    return float(rows.iloc[0]) if len(rows) else float("nan")


def _findings(arms: Sequence[ArmResult], *, settings: dict[str, Any], image_size: Sequence[int]) -> dict[str, Any]:
    """The ranking by pooled macro F1, whether pretraining helped each model, and the cheapest model."""
    ranked = sorted(arms, key=lambda arm: _pooled(arm, "f1"), reverse=True)
    by_name = {arm.name: arm for arm in arms}
    gain = {model: _pooled(by_name[arm_name(model, True)], "f1") - _pooled(by_name[arm_name(model, False)], "f1")
            for model in MODELS if arm_name(model, True) in by_name and arm_name(model, False) in by_name}
    cheapest = min(arms, key=lambda arm: arm.extra["GFLOPs/volume"])
    return {
        "ranking_by_pooled_macro_f1": [arm.name for arm in ranked],
        "pretraining_gain_macro_f1": gain,
        "best_arm": ranked[0].name,
        "cheapest_model": cheapest.name.split(",")[0],
        "paper": "(2+1)D and MC3 beat 3D ResNet-18; pretraining helped; pretrained MC3 best (macro F1 0.93), "
                 "lowest compute",
        "folds": settings["folds"], "image_size": list(image_size),
        "pretraining": "SimCLR on synthetic PET/CT volumes (another task, other patients)",
    }
