"""Patient-level folds: every mode keeps patients in one role, deterministically, on small and large tables."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from clinical.errors import ConfigurationError, LeakageError, ManifestError
from clinical.splits import check_no_leakage, fold_items, fold_table, split_manifest
from clinical.splits.stratify import assign_groups


def make_table(
    n_items: int, n_patients: int, *, seed: int = 0, sites: int = 3, unlabelled: float = 0.02
) -> pd.DataFrame:
    """A manifest-like table: patients with 1+ studies, mixed item labels inside a patient, a few shared sites."""
    rng = np.random.default_rng(seed)
    patient = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, n_items - n_patients)])
    patient.sort()
    positive = rng.random(n_patients) < 0.3
    label = np.where(positive[patient] ^ (rng.random(n_items) < 0.05), "pos", "neg").astype(object)
    label[rng.random(n_items) < unlabelled] = None
    study = patient * 3 + rng.integers(0, 2, n_items)
    home = rng.integers(0, sites, n_patients)
    site = np.where(rng.random(n_items) < 0.03, (home[patient] + 1) % sites, home[patient])  # a few patients move
    return pd.DataFrame(
        {
            "item_id": [f"item{i:07d}" for i in range(n_items)],
            "patient_key": [f"pat{p:06d}" for p in patient],
            "study_key": [f"st{s:07d}" for s in study],
            "series_key": [f"se{i:07d}" for i in range(n_items)],
            "site": [f"site{s}" for s in site],
            "label": pd.array(label, dtype="string"),
        }
    )


def assert_patients_in_one_role(split: pd.DataFrame, manifest: pd.DataFrame, key: str = "patient_key") -> None:
    """Independent of check_no_leakage: count roles per key within each (fold, inner)."""
    owner = manifest.set_index("item_id")[key]
    keys = pd.factorize(owner.reindex(split["item_id"]))[0]
    assert (keys >= 0).all()
    rows = pd.DataFrame(
        {"fold": split["fold"], "inner": split["inner"], "key": keys, "role": pd.factorize(split["role"])[0]}
    )
    assert rows.drop_duplicates().duplicated(["fold", "inner", "key"]).sum() == 0
    if key == "patient_key":
        check_no_leakage(split, manifest)


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return make_table(1200, 300, seed=1)


@pytest.fixture(scope="module")
def large() -> pd.DataFrame:
    table = make_table(100_000, 30_000, seed=2)
    assert len(table) >= 100_000 and table["patient_key"].nunique() == 30_000
    return table


MODES = {
    "kfold": {"folds": 5},
    "kfold-study": {"folds": 4, "by": "study"},
    "nested": {"folds": 3, "inner_folds": 2},
    "site-holdout": {"site_holdout": "site1"},
    "leave-site-out": {"leave_site_out": True},
    "no-val": {"folds": 5, "val_size": 0.0},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_no_patient_crosses_roles_small(small: pd.DataFrame, mode: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # by="study" warns that patients cross; checked below
        split = split_manifest(small, seed=3, **MODES[mode])
    if mode == "kfold-study":
        # each study stays whole; patients may cross and the default check says so
        assert_patients_in_one_role(split, small, key="study_key")
        with pytest.raises(LeakageError, match="patient_key"):
            check_no_leakage(split, small)
        check_no_leakage(split, small, levels=("study_key", "series_key"))
        return
    assert_patients_in_one_role(split, small)
    assert set(split["role"]) <= {"train", "val", "test", "unlabelled"}


@pytest.mark.parametrize("mode", ["nested", "leave-site-out", "multilabel", "grow"])
def test_no_patient_crosses_roles_100k_items(large: pd.DataFrame, mode: str) -> None:
    if mode == "multilabel":
        rng = np.random.default_rng(0)
        extra = np.where(rng.random(len(large)) < 0.2, "|nodule", "")
        table = large.assign(label=large["label"] + extra)
        split = split_manifest(table, folds=5, seed=1, label_sep="|")
    elif mode == "grow":
        old = large[large["patient_key"] < "pat027000"]
        before = split_manifest(old, folds=5, seed=1)
        before.attrs["split"]["digest"] = "before"
        split = split_manifest(large, folds=5, seed=1, previous=before)
        table = large
        moved = before.merge(split, on=["item_id", "fold", "inner"], suffixes=("_old", "_new"))
        assert len(moved) == len(before)
        assert (moved["role_old"] == moved["role_new"]).all()
    else:
        split = split_manifest(large, seed=1, **MODES[mode])  # nested: the outer rows are a plain K-fold split
        table = large
    assert_patients_in_one_role(split, table)


def test_kfold_tests_every_labelled_item_once(small: pd.DataFrame) -> None:
    split = split_manifest(small, folds=5, seed=0)
    tested = split[split["role"] == "test"]["item_id"]
    labelled = small[small["label"].notna()]
    assert tested.is_unique
    assert set(tested) == set(labelled["item_id"])
    outer = split[split["inner"] == -1]
    assert set(outer["fold"]) == set(range(5))
    # test parts are balanced: each fold has about a fifth of the patients and of the positives
    test = outer[outer["role"] == "test"].merge(small[["item_id", "label"]], on="item_id")
    share = test.groupby("fold")["label"].apply(lambda s: (s == "pos").mean())
    assert share.max() - share.min() < 0.05
    patients = test.groupby("fold")["patient_key"].nunique()
    assert patients.min() >= 0.8 * patients.max()


def test_validation_is_carved_by_patient_and_sized(small: pd.DataFrame) -> None:
    split = split_manifest(small, folds=5, seed=0, val_size=0.25)
    for fold in range(5):
        parts = fold_items(split, fold)
        assert set(parts) >= {"train", "val", "test"}
        patients = {role: set(split[split["item_id"].isin(ids)]["patient_key"]) for role, ids in parts.items()}
        assert not patients["train"] & patients["val"]
        share = len(patients["val"]) / (len(patients["val"]) + len(patients["train"]))
        assert 0.2 < share < 0.3


def test_same_seed_same_split_and_other_seed_differs(small: pd.DataFrame) -> None:
    first = split_manifest(small, folds=5, seed=7)
    again = split_manifest(small.sample(frac=1.0, random_state=0), folds=5, seed=7)
    other = split_manifest(small, folds=5, seed=8)

    def key(split: pd.DataFrame) -> pd.DataFrame:
        return split.sort_values(["fold", "inner", "item_id"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(key(first), key(again))
    assert not key(first)["role"].equals(key(other)["role"])
    assert first.attrs["split"]["seed"] == 7 and first.attrs["split"]["folds"] == 5


def test_assignment_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for trial in range(8):
        n, n_groups, n_classes, k = 400, 90, int(rng.integers(2, 5)), int(rng.integers(2, 7))
        groups, y = rng.integers(0, n_groups, n), rng.integers(0, n_classes, n)
        expected = np.empty(n, dtype=int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splitter = StratifiedGroupKFold(k, shuffle=True, random_state=trial)
            for fold, (_, test) in enumerate(splitter.split(np.zeros(n), y, groups)):
                expected[test] = fold
        unique, group_of = np.unique(groups, return_inverse=True)
        counts = np.zeros((len(unique), n_classes))
        np.add.at(counts, (group_of, y), 1)
        assert (assign_groups(counts, k, seed=trial)[group_of] == expected).all()


def test_unlabelled_items(small: pd.DataFrame) -> None:
    table = small.copy()
    table.loc[table["patient_key"] == "pat000000", "label"] = pd.NA  # a patient with no label at all
    split = split_manifest(table, folds=5, seed=0)
    alone = split[split["patient_key"] == "pat000000"]
    assert set(alone["role"]) == {"unlabelled"} and set(alone["fold"]) == set(range(5))
    # unlabelled items of labelled patients are left out
    orphan = table[table["label"].isna() & (table["patient_key"] != "pat000000")]["item_id"]
    assert len(orphan) and not split["item_id"].isin(orphan).any()
    assert fold_items(split, 0)["unlabelled"]


def test_site_holdout_tests_that_site_only(small: pd.DataFrame) -> None:
    split = split_manifest(small, site_holdout="site2", seed=0)
    rows = split.merge(small[["item_id", "site"]], on="item_id")
    test = rows[rows["role"] == "test"]
    assert set(test["site"]) == {"site2"}
    assert set(rows[rows["role"].isin(["train", "val"])]["site"]) == {"site0", "site1"}
    assert set(test["item_id"]) == set(small[(small["site"] == "site2") & small["label"].notna()]["item_id"])
    leave = split_manifest(small, leave_site_out=True, seed=0)
    assert leave.attrs["split"]["sites"] == ["site0", "site1", "site2"]


def test_nested_inner_folds_exclude_outer_test(small: pd.DataFrame) -> None:
    split = split_manifest(small, folds=3, inner_folds=4, seed=0)
    for fold in range(3):
        outer = fold_items(split, fold)
        for inner in range(4):
            parts = fold_items(split, fold, inner=inner)
            assert not parts["test"]
            assert set(parts["train"]) | set(parts["val"]) == set(outer["train"]) | set(outer["val"])
            assert not set(parts["val"]) & set(outer["test"])
    vals = [set(fold_items(split, 0, inner=i)["val"]) for i in range(4)]
    assert sum(len(v) for v in vals) == len(set().union(*vals))  # inner validation parts are disjoint


def test_multilabel_balances_every_label(small: pd.DataFrame) -> None:
    rng = np.random.default_rng(3)
    rare = rng.random(len(small)) < 0.08
    table = small.assign(label=small["label"].where(~rare, small["label"] + "|rare"))
    split = split_manifest(table, folds=4, seed=0, label_sep="|")
    test = split[split["role"] == "test"].merge(table[["item_id", "label"]], on="item_id")
    per_fold = test.groupby("fold")["label"].apply(lambda s: s.str.contains("rare").sum())
    assert per_fold.min() >= 0.6 * per_fold.max()
    columns = fold_table(split, table).columns
    assert {"label:rare", "label:pos", "label:neg"} <= set(columns)


def test_growing_cohort_keeps_patients(small: pd.DataFrame) -> None:
    old = small[small["patient_key"] < "pat000200"]
    before = split_manifest(old, folds=4, seed=5, inner_folds=2)
    before.attrs["split"]["digest"] = "before"
    after = split_manifest(small, folds=4, seed=99, inner_folds=2, previous=before)
    kept = before.merge(after, on=["item_id", "fold", "inner"], suffixes=("_old", "_new"))
    assert len(kept) == len(before) and (kept["role_old"] == kept["role_new"]).all()
    new = after[~after["patient_key"].isin(old["patient_key"]) & (after["role"] == "test")]
    assert new.groupby("fold")["patient_key"].nunique().min() >= 15  # new patients spread over the folds
    assert after.attrs["split"]["grown_from"] == "before"
    with pytest.raises(ConfigurationError, match="previous split's parameters"):
        split_manifest(small, folds=5, seed=5, previous=before)


def test_fold_table_counts(small: pd.DataFrame) -> None:
    split = split_manifest(small, folds=5, seed=0)
    table = fold_table(split, small)
    assert list(table.columns[:5]) == ["fold", "role", "site", "patients", "items"]
    assert table["items"].sum() == (split["inner"] == -1).sum()
    assert (table["label:pos"] + table["label:neg"] + table["unlabelled"] == table["items"]).all()


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"folds": 1}, ConfigurationError, r"'folds' parameter .* int >= 2. Got 1"),
        ({"folds": 2.5}, ConfigurationError, r"Got 2.5 instead"),
        ({"seed": -1}, ConfigurationError, r"'seed' parameter"),
        ({"by": "slice"}, ConfigurationError, r"'by' parameter .* \['patient', 'study'\]. Got 'slice'"),
        ({"val_size": 0.7}, ConfigurationError, r"'val_size' parameter .* \[0, 0.5\]"),
        ({"inner_folds": 1}, ConfigurationError, r"'inner_folds'"),
        ({"site_holdout": "nowhere"}, ConfigurationError, r"not a site of this manifest; its sites"),
        ({"site_holdout": "site0", "folds": 5}, ConfigurationError, r"Pass folds=None"),
        ({"site_holdout": "site0", "leave_site_out": True}, ConfigurationError, r"not both"),
        ({"label_sep": ""}, ConfigurationError, r"'label_sep'"),
        ({"folds": 500}, ConfigurationError, r"Cannot split \d+ labelled patients into folds=500"),
    ],
)
def test_invalid_parameters_raise_clearly(small: pd.DataFrame, params: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        split_manifest(small, **{"seed": 0, **params})


def test_invalid_manifests_raise(small: pd.DataFrame) -> None:
    with pytest.raises(ManifestError, match=r"lacks the column\(s\) \['site'\]"):
        split_manifest(small.drop(columns="site"), folds=5, seed=0)
    with pytest.raises(ManifestError, match="'item_id' must be unique"):
        split_manifest(pd.concat([small, small.head(1)]), folds=5, seed=0)
    with pytest.raises(ManifestError, match="'patient_key' is missing for 1 row"):
        split_manifest(small.assign(patient_key=small["patient_key"].where(small.index != 3)), folds=5, seed=0)
    with pytest.raises(ConfigurationError, match="No item of the manifest has a label"):
        split_manifest(small.assign(label=pd.NA), folds=5, seed=0)


def test_rare_class_warns_like_scikit_learn(small: pd.DataFrame) -> None:
    table = small.copy()
    table.loc[table["patient_key"].isin(["pat000001", "pat000002"]), "label"] = "rare"
    with pytest.warns(UserWarning, match=r"least populated class 'rare' has only 2 patients, .* less than folds=5"):
        split = split_manifest(table, folds=5, seed=0)
    assert_patients_in_one_role(split, table)


def test_fold_items_unknown_fold(small: pd.DataFrame) -> None:
    split = split_manifest(small, folds=3, seed=0)
    with pytest.raises(ConfigurationError, match=r"no fold=7 .* Available \(fold, inner\) pairs: \[\(0, -1\)"):
        fold_items(split, 7)
