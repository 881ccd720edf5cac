"""The papyri study at its tiny size, run once: its arms, its table, its probe columns, and its data hygiene.

Checked: the three initialisation arms (SimCLR, BYOL, random) are in the table with the three metrics, each
pooled CI holds its value; the BYOL and random arms are tested against SimCLR over the same folds; the
linear-probe columns are AUROCs and the random arm's difference to itself is zero; the labelled cohort has at
least ten glyph classes and crops only; the corpus shares no papyrus with the labelled cohort (so none with
any test fold) and holds the tiles of its large photographs; both SSL backbones were written; and the
table, figure and record files exist.
"""

from __future__ import annotations

import json
import math

import pytest

from clinical.cohort import read_manifest
from clinical.splits import OUTER, read_split
from clinical.workflows.studies import run_study
from clinical.workflows.studies.papyri import ARMS, METRICS, REFERENCE, SIZES, tile_side


@pytest.fixture(scope="module")
def study(module_tmp):
    return run_study("papyri", module_tmp("papyri"), size="tiny")


def test_arms_and_metrics(study):
    table = study.table
    assert list(table["arm"]) == list(ARMS)
    for metric in METRICS:
        for row in table.to_dict("records"):
            value, low, high = row[f"{metric}_pooled"], row[f"{metric}_low"], row[f"{metric}_high"]
            assert math.isfinite(value), (row["arm"], metric)
            assert low <= value <= high, (row["arm"], metric, low, value, high)
    assert (table["n_folds"] == SIZES["tiny"]["folds"]).all()


def test_arms_tested_against_simclr(study):
    others = study.table[study.table["arm"] != REFERENCE]
    assert others["p_vs_reference"].between(0, 1).all()
    assert (others["diff_low"] <= others["diff_high"]).all()


def test_probe_columns(study):
    table = study.table.set_index("arm")
    assert table["probe_auroc"].between(0, 1).all()
    assert table.loc["random init", "probe_vs_random"] == 0
    for name in ("SimCLR corpus, fine-tuned", "BYOL corpus, fine-tuned"):
        row = table.loc[name]
        assert row["probe_vs_random"] == pytest.approx(row["probe_auroc"] - table.loc["random init", "probe_auroc"])
    assert set(study.findings["ssl_probes_worse_than_random"]) <= {REFERENCE, "BYOL corpus, fine-tuned"}
    assert "probe_auroc" in study.markdown


def test_labelled_cohort_is_crops_of_ten_classes_or_more(study):
    manifest = read_manifest(study.out / "cohort")
    assert manifest["label"].nunique() >= 10
    assert study.findings["n_classes"] == manifest["label"].nunique()
    assert (manifest["kind"] == "photo").all()
    assert manifest["source"].astype(str).is_unique  # no photograph cut into tiles among the labelled items


def test_corpus_shares_no_papyrus_with_the_test_folds(study):
    corpus = read_manifest(study.out / "corpus")
    split, _ = read_split(study.out / "split.parquet")
    tested = set(split.loc[(split["inner"] == OUTER) & (split["role"] == "test"), "patient_key"])
    assert tested
    assert not set(corpus["patient_key"]) & tested
    assert study.findings["corpus_papyri_in_cohort"] == 0


def test_corpus_holds_the_tiles_of_its_large_photographs(study):
    corpus = read_manifest(study.out / "corpus")
    side = tile_side(SIZES["tiny"]["corpus"]["large_size"])
    tiles = corpus[corpus["shape"].map(lambda shape: list(shape[1:]) == [side, side])]
    assert study.findings["corpus_tiles"] == len(tiles) > 0
    assert study.findings["corpus_tiled_photos"] == SIZES["tiny"]["corpus"]["large_photos"]


def test_files(study):
    for method in ("simclr", "byol"):
        assert (study.out / "pretrained" / f"{method}.pt").is_file()
    for name in ("table.csv", "table.md", "summary.png", "study.json"):
        assert (study.out / name).is_file()
    record = json.loads((study.out / "study.json").read_text())
    assert record["reference"] == REFERENCE
    assert [arm["name"] for arm in record["arms"]] == list(ARMS)
