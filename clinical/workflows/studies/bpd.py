"""BPD from day-1 chest radiographs: which initialisation and which fine-tuning recipe, over the folds.

The paper's best recipe (in-domain pretrained ResNet, a linear probe then blocks unfrozen one by one from
the top with layer-wise learning rates, CutMix) is the reference arm; every other arm changes one thing:

- initialisation: self-supervised (SimCLR) on an unlabelled in-domain corpus (reference), supervised on
  another labelled cohort (the "ImageNet" of the paper: weights learnt elsewhere), or random;
- recipe: progressive freezing after the linear probe (reference), the linear probe alone, full fine-tuning;
- CutMix on (reference) or off.

The corpus and the other cohort are separate synthetic radiograph cohorts (other seeds, other patients),
so no pretraining sees the study's test patients. Every arm is cross-validated on the same patient-level
folds and tested against the reference with the corrected resampled t-test over folds, as the paper
reports p = 0.031 for in-domain against ImageNet pretraining.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clinical.tracking import MlflowTracker
from clinical.training import TrainConfig
from clinical.training.pretraining import pretrain
from clinical.workflows.crossval import train_fold
from clinical.workflows.studies.arms import StudyResult, finish_study, run_arm
from clinical.workflows.studies.cohorts import study_cohort, study_split

__all__ = ["SIZES", "TITLE", "run"]

logger = logging.getLogger(__name__)

TITLE = "BPD from day-1 radiographs: initialisation × fine-tuning recipe × CutMix (AUROC over folds)"
REFERENCE = "SSL in-domain, progressive, CutMix"
METRICS = ("auroc", "balanced_accuracy", "f1")

#: Cohort counts, folds and training budget of each size.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"spec": {"radiograph_patients_per_site": 6, "radiograph_matrix": 64}, "folds": 3, "pretrain_epochs": 1,
             "recipe": {"image_size": (32, 32), "epochs": 2, "unfreeze_every": 1, "batch_size": 16},
             "n_boot": 100},
    "full": {"spec": {"radiograph_patients_per_site": 40, "radiograph_matrix": 128}, "folds": 5,
             "pretrain_epochs": 10,
             "recipe": {"image_size": (48, 48), "epochs": 6, "unfreeze_every": 2, "batch_size": 32},
             "n_boot": 1000},
}


def run(out: Path, *, size: str, cohort: str | Path | None, seed: int, tracker: MlflowTracker | None,
        model: str = "resnet18", corpus: str | Path | None = None, other: str | Path | None = None,
        ray_address: str | None = None) -> StudyResult:
    """Run the BPD arms. ``corpus`` (unlabelled, for SimCLR) and ``other`` (labelled, for supervised
    pretraining) are ingested radiograph cohorts; both are synthetic by default."""
    settings = SIZES[size]
    cohort_dir, _ = study_cohort(out, "radiographs", cohort=cohort, size="tiny", seed=seed, spec=settings["spec"])
    corpus_dir, _ = study_cohort(out, "radiographs", cohort=corpus, size="tiny", seed=seed + 101,
                                 spec=settings["spec"], name="corpus")
    other_dir, _ = study_cohort(out, "radiographs", cohort=other, size="tiny", seed=seed + 202,
                                spec=settings["spec"], generator={"finding_strength": 2.0}, name="other-cohort")
    split = study_split(cohort_dir, out / "split.parquet", folds=settings["folds"], seed=seed)
    recipe = TrainConfig.build(model=model, schedule="progressive", lr=2e-3, layer_decay=0.5, cutmix_alpha=1.0,
                               mix_prob=0.5, early_stopping_patience=None, seed=seed, **settings["recipe"])
    ssl = pretrain(corpus_dir, method="simclr", model=model, epochs=settings["pretrain_epochs"],
                   size=recipe.image_size, batch_size=32, seed=seed, out=out / "pretrained" / "simclr.pt").path
    supervised = _supervised_backbone(recipe, other_dir, out / "pretrained", seed=seed,
                                      folds=settings["folds"])
    arms = {
        REFERENCE: recipe.model_copy(update={"pretrained": str(ssl)}),
        "supervised other cohort, progressive, CutMix": recipe.model_copy(update={"pretrained": str(supervised)}),
        "random init, progressive, CutMix": recipe,
        "SSL in-domain, linear probe only, CutMix": recipe.model_copy(update={"pretrained": str(ssl),
                                                                              "schedule": "linear-probe"}),
        "SSL in-domain, full fine-tuning, CutMix": recipe.model_copy(update={"pretrained": str(ssl),
                                                                             "schedule": "full"}),
        "SSL in-domain, progressive, no CutMix": recipe.model_copy(update={"pretrained": str(ssl),
                                                                           "cutmix_alpha": 0.0}),
    }
    results = [run_arm(name, config, cohort_dir=cohort_dir, split_path=split, out=out / "arms" / f"arm-{i}",
                       tracker=tracker, n_boot=settings["n_boot"], ray_address=ray_address)
               for i, (name, config) in enumerate(arms.items())]
    return finish_study("bpd", results, out=out, metrics=METRICS, reference=REFERENCE, title=TITLE,
                        tracker=tracker, findings={"model": model, "folds": settings["folds"]})


def _supervised_backbone(recipe: TrainConfig, cohort_dir: Path, out: Path, *, seed: int, folds: int) -> Path:
    """A network trained with labels on another cohort, fully fine-tuned from random weights; its best checkpoint."""
    split = study_split(cohort_dir, out / "other-split.parquet", folds=folds, seed=seed)
    config = recipe.model_copy(update={"schedule": "full", "pretrained": None, "epochs": recipe.epochs * 2})
    run = train_fold(config, cohort_dir=cohort_dir, split_path=split, fold=0, out=out / "supervised")
    return Path(run.out) / "checkpoints" / "best.pt"
