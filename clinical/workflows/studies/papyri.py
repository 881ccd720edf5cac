"""Greek papyri characters: does a backbone pretrained without labels on papyrus photographs help read glyph crops?

The paper refines its character recognition with a ResNet pretrained by SimCLR on a large unlabelled corpus
of papyrus images, then trained on labelled character crops. The arms change only the initialisation of one
fine-tuning recipe (a ResNet fully fine-tuned on the crops, twelve glyph classes):

- SimCLR on the unlabelled corpus (reference, the paper's choice);
- BYOL on the same corpus (no negatives, so it suits small batches: is SimCLR the right self-supervised method?);
- random initialisation (what the pretraining must beat).

Every arm is cross-validated on the same papyrus-level folds (a papyrus is the "patient": it keeps its
fibres, hand and favourite letter, so an item-level split would let a model recognise the papyrus) and scored
per crop (``monitor_level="item"``: a papyrus holds several letters, so no papyrus-level score exists) with
macro F1, balanced accuracy and macro AUROC, each arm tested against SimCLR over the folds.

**The corpus** is a separate synthetic papyri cohort (another seed: other papyri, other hands) and its labels
are never read: the paper's corpus is unlabelled, and a corpus made of other papyri guarantees that no test
papyrus is seen even without its label (pretraining on the test images is transductive leakage). Its large
photographs (several glyphs on a wide fragment) are cut at ingest (``photo_tile``) into square tiles on the
scribe's grid (twice the glyph size, so a tile frames at most about one glyph at the scale of a crop, edges
dropped); each tile is one corpus item, most of them bare papyrus, as a real corpus of fragments is. The
labelled cohort holds crops only: the paper's recognition step classifies crops a detector cut, detection is
out of scope here, and a tile of a large photograph would carry its photograph's label without its glyph.

**Linear probe** (extra columns): every arm's starting backbone (the SSL one, or the random initialisation)
frozen, a logistic regression on its pooled features, scored out of fold by papyrus on the labelled crops
(:func:`clinical.training.pretraining.linear_probe`, macro AUROC). A self-supervised backbone whose features
probe worse than random ones has learnt nothing about glyphs, whatever fine-tuning later recovers; the
``findings`` say whether that happened.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from clinical.cohort import read_manifest
from clinical.models.classifier import ClassifierModel
from clinical.models.factory import create_model
from clinical.tracking import MlflowTracker
from clinical.training import TrainConfig
from clinical.training.pretraining import linear_probe, pretrain
from clinical.workflows.studies.arms import ArmResult, StudyResult, finish_study, run_arm
from clinical.workflows.studies.cohorts import study_cohort, study_split

__all__ = ["SIZES", "TITLE", "run"]

logger = logging.getLogger(__name__)

TITLE = "Papyri glyphs: SimCLR vs BYOL on an unlabelled corpus vs random init (macro F1 over papyrus folds)"
REFERENCE = "SimCLR corpus, fine-tuned"
METRICS = ("f1", "balanced_accuracy", "auroc")
ARMS = {REFERENCE: "simclr", "BYOL corpus, fine-tuned": "byol", "random init": None}
#: Extra columns: the arm's starting backbone probed frozen, and that probe minus the random features' probe.
EXTRA = ("probe_auroc", "probe_vs_random")

#: Labelled cohort and corpus (SizeSpec overrides), folds and budgets of each size.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"cohort": {"papyri_per_site": 6, "crops_per_papyrus": 4, "crop_size": 48, "large_photos": 0},
             "corpus": {"papyri_per_site": 2, "crops_per_papyrus": 3, "crop_size": 48, "large_photos": 1,
                        "large_size": 768},
             "folds": 3, "pretrain_epochs": 1, "probe_folds": 3, "n_boot": 100,
             "recipe": {"image_size": (32, 32), "epochs": 1, "batch_size": 16}},
    "full": {"cohort": {"papyri_per_site": 10, "crops_per_papyrus": 8, "crop_size": 64, "large_photos": 0},
             "corpus": {"papyri_per_site": 10, "crops_per_papyrus": 4, "crop_size": 64, "large_photos": 4,
                        "large_size": 1536},
             "folds": 5, "pretrain_epochs": 8, "probe_folds": 5, "n_boot": 1000,
             "recipe": {"image_size": (32, 32), "epochs": 5, "batch_size": 32}},
}


def tile_side(large_size: int) -> int:
    """Tile side for a synthetic large photograph: the scribe's grid cell, twice the glyph the generator writes.

    ``clinical.cohort.synthetic.papyri`` writes glyphs of ``max(48, large_size // 16)`` pixels, one per cell of
    twice that side, so a tile of one cell shows a glyph at about the share of the frame a crop gives it.
    """
    return 2 * max(48, large_size // 16)


def run(out: Path, *, size: str, cohort: str | Path | None, seed: int, tracker: MlflowTracker | None,
        model: str = "resnet18", corpus: str | Path | None = None, ray_address: str | None = None) -> StudyResult:
    """Run the papyri arms. ``cohort`` holds labelled glyph crops (kind ``photo``); ``corpus`` is an ingested
    cohort of papyrus photographs or tiles whose labels, if any, are ignored. Both are synthetic by default."""
    settings = SIZES[size]
    cohort_dir, _ = study_cohort(out, "papyri", cohort=cohort, size="tiny", seed=seed, spec=settings["cohort"])
    corpus_spec = settings["corpus"]
    corpus_dir, _ = study_cohort(out, "papyri", cohort=corpus, size="tiny", seed=seed + 101, spec=corpus_spec,
                                 ingest_options={"photo_tile": tile_side(corpus_spec["large_size"])}, name="corpus")
    split = study_split(cohort_dir, out / "split.parquet", folds=settings["folds"], seed=seed)
    recipe = TrainConfig.build(model=model, kind="photo", in_channels=3, schedule="full", lr=1e-3, layer_decay=1.0,
                               monitor_level="item", early_stopping_patience=None, seed=seed, **settings["recipe"])
    probe = {"folds": settings["probe_folds"], "size": recipe.image_size, "seed": seed}
    random_probe = linear_probe(_random_backbone(model, seed), cohort_dir, kind="photo", **probe)
    arms, losses = [], {}
    for i, (name, method) in enumerate(ARMS.items()):
        config, probe_auroc = recipe, random_probe
        if method is not None:
            path, backbone, losses[method] = _pretrained(corpus_dir, out / "pretrained" / f"{method}.pt",
                                                         method=method, model=model, recipe=recipe, seed=seed,
                                                         epochs=settings["pretrain_epochs"])
            config = recipe.model_copy(update={"pretrained": str(path)})
            probe_auroc = linear_probe(backbone, cohort_dir, kind="photo", **probe)
        arms.append(run_arm(name, config, cohort_dir=cohort_dir, split_path=split, out=out / "arms" / f"arm-{i}",
                            tracker=tracker, n_boot=settings["n_boot"], ray_address=ray_address,
                            probe_auroc=probe_auroc, probe_vs_random=probe_auroc - random_probe))
    findings = _findings(cohort_dir, corpus_dir, split, arms, losses, model=model, folds=settings["folds"],
                         tile=tile_side(corpus_spec["large_size"]))
    return finish_study("papyri", arms, out=out, metrics=METRICS, reference=REFERENCE, title=TITLE, tracker=tracker,
                        extra=EXTRA, findings=findings)


def _random_backbone(model: str, seed: int) -> ClassifierModel:
    """The initialisation every arm starts from before any training (``pretrain`` seeds it the same way)."""
    torch.manual_seed(seed)
    return create_model(model, spatial_dims=2, in_channels=3, num_classes=1)


def _pretrained(corpus_dir: Path, path: Path, *, method: str, model: str, recipe: TrainConfig, seed: int,
                epochs: int) -> tuple[Path, ClassifierModel, list[float]]:
    """A backbone pretrained on the corpus at the recipe's resolution, its loss per epoch; kept when already there.

    The views are never mirrored, as the photo preset never mirrors in fine-tuning: a mirrored glyph is
    another glyph or none.

    ``pretrain`` never reads labels, so the corpus's synthetic labels play no part.
    """
    if path.is_file():
        logger.info("Reusing the %s backbone %s.", method, path)
        return path, create_model(model, spatial_dims=2, in_channels=3, num_classes=1, pretrained=path), []
    result = pretrain(corpus_dir, method=method, model=model, kind="photo", epochs=epochs, batch_size=32,
                      size=recipe.image_size, seed=seed, out=path, flip=False)  # script is chiral: never mirrored
    return result.path, result.model, list(result.losses)


def _findings(cohort_dir: Path, corpus_dir: Path, split: Path, arms: list[ArmResult], losses: dict[str, list[float]], *,
              model: str, folds: int, tile: int) -> dict[str, Any]:
    """What the table does not show: the data, the pretraining losses, and whether SSL beat random features."""
    labelled, corpus = read_manifest(cohort_dir), read_manifest(corpus_dir)
    labelled = labelled[(labelled["kind"] == "photo") & labelled["label"].notna()]
    per_photo = corpus.groupby(corpus["source"].astype(str))["item_id"].transform("size")
    probes = {arm.name: arm.extra["probe_auroc"] for arm in arms}
    worse = [arm.name for arm in arms if ARMS[arm.name] is not None and arm.extra["probe_vs_random"] < 0]
    return {
        "model": model, "folds": folds, "split": str(split), "level": "item (crop); folds by papyrus",
        "n_classes": int(labelled["label"].nunique()), "n_crops": len(labelled),
        "n_papyri": int(labelled["patient_key"].nunique()),
        "corpus_items": len(corpus), "corpus_papyri": int(corpus["patient_key"].nunique()),
        "corpus_tile_side": tile, "corpus_tiles": int((per_photo > 1).sum()),
        "corpus_tiled_photos": int(corpus.loc[per_photo > 1, "source"].astype(str).nunique()),
        "corpus_papyri_in_cohort": len(set(corpus["patient_key"]) & set(labelled["patient_key"])),
        "pretrain_losses": losses, "probe_auroc": probes,
        "ssl_probes_worse_than_random": worse,
    }

