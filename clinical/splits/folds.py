"""Patient-level folds: stratified grouped K-fold, site hold-outs, nested folds, growing cohorts.

The split table (the contract later stages read) is long: one row per
``(item, fold, inner)`` with the columns of :data:`SPLIT_COLUMNS`.

* ``fold`` — the outer fold. In K-fold, fold ``f``'s test part is the
  ``f``-th group of patients, its validation part is carved from the rest,
  also by patient, and the remainder trains. For a site hold-out the single
  fold 0 tests on the held-out site; leave-one-site-out has one fold per site
  (in sorted site order, recorded in the metadata).
* ``inner`` — ``-1`` (:data:`OUTER`) for the outer split. With nested
  cross-validation (``inner_folds=J``), rows with ``inner = 0 … J-1`` split
  the outer fold's non-test patients again: inner fold ``j`` validates on the
  ``j``-th group and trains on the others. Outer test items never appear in
  inner rows.

How the validation and inner parts are carved: besides its test fold, every
patient draws a validation bin (``m = round(1 / val_size)`` bins) and an
inner bin (``J`` bins), both stratified by class within its test fold (by
class and site in site hold-outs). Fold ``f`` validates on the patients of
bin ``f mod m`` outside fold ``f``; inner fold ``j`` on those of inner bin
``j``. Unions of balanced bins are balanced, and each patient is placed a
fixed number of times instead of once per fold.
* ``role`` — ``train``, ``val``, ``test`` or ``unlabelled``.

Unlabelled items (missing ``label``): a patient with no labelled item at all
gets role ``unlabelled`` in every outer fold (usable for self-supervised
pretraining: such patients are never evaluated). Unlabelled items of a
patient who also has labelled items are left out of the table, because they
would otherwise put that patient in a second role. An item absent from a
fold takes no part in it; this also holds, in site hold-outs, for the items
that a patient seen at the held-out site has at other sites.

The split's parameters travel with the table in ``table.attrs["split"]``
and are written into the split file by :func:`clinical.splits.write_split`.
"""

from __future__ import annotations

import logging
import numbers
import warnings

import numpy as np
import pandas as pd

from clinical.errors import ConfigurationError, ManifestError
from clinical.splits.stratify import assign_groups

__all__ = [
    "BY",
    "OUTER",
    "ROLES",
    "SPLIT_COLUMNS",
    "fold_items",
    "gate_patients",
    "outer_folds",
    "split_by_site",
    "split_manifest",
]

logger = logging.getLogger(__name__)

#: Roles an item can take within one fold. ``gate`` patients are locked away at split time (the same
#: patients in every fold): no fold trains, selects or tests on them, so a promotion gate can compare
#: two models of this split on patients neither has seen.
ROLES = ("train", "val", "test", "unlabelled", "gate")
#: ``inner`` value of the outer split's rows.
OUTER = -1
#: Columns of the split table and their dtypes.
SPLIT_COLUMNS: dict[str, str] = {
    "item_id": "string",
    "patient_key": "string",
    "fold": "int16",
    "inner": "int16",
    "role": "string",
}
#: What ``by`` may name, and the manifest column it groups on.
BY = {"patient": "patient_key", "study": "study_key"}

_TRAIN, _VAL, _TEST, _UNLABELLED, _ABSENT = 0, 1, 2, 3, -1


def split_manifest(
    manifest: pd.DataFrame,
    *,
    folds: int | None = None,
    seed: int,
    by: str = "patient",
    val_size: float = 0.2,
    site_holdout: str | None = None,
    leave_site_out: bool = False,
    inner_folds: int | None = None,
    label_sep: str | None = None,
    previous: pd.DataFrame | None = None,
    gate_size: float = 0.0,
) -> pd.DataFrame:
    """Split a manifest into folds that keep every patient (or study) in one role per fold.

    Parameters
    ----------
    manifest
        One row per item with at least ``item_id``, ``patient_key``,
        ``label`` and ``site`` (and ``study_key`` when ``by="study"``). Any
        table with these columns works, not only a cohort manifest.
    folds
        Number of outer folds for K-fold (default 5). Leave it ``None`` with
        ``site_holdout`` or ``leave_site_out``, whose folds are the sites.
    seed
        Makes the split reproducible: the same manifest and seed give the
        same table.
    by
        ``"patient"`` (default) keeps each patient's items together.
        ``"study"`` keeps each study together, so one patient's studies may
        land in different roles; :func:`clinical.splits.check_no_leakage`
        refuses such a split unless told to check studies only.
    val_size
        Share of the non-test patients that validate in each fold, in
        ``[0, 0.5]``; rounded to ``1/m`` for a whole ``m`` (0.2 → a fifth,
        0.15 → a seventh). ``0`` makes no validation part.
    site_holdout
        Test on this site only (one fold); train and validate on the others.
    leave_site_out
        One fold per site, each testing on that site.
    inner_folds
        Nested cross-validation: split each outer fold's non-test patients
        again into this many inner folds.
    label_sep
        Multi-label tasks: ``label`` holds labels joined by this separator
        (``"effusion|nodule"``); folds then balance every label's positives
        and the item count.
    previous
        A split of an earlier version of this cohort (from
        :func:`clinical.splits.read_split`). Patients it placed keep their
        fold, validation membership and inner fold; only new patients are
        assigned. K-fold only, with the same ``folds``, ``by``,
        ``val_size``, ``inner_folds`` and ``label_sep``; its gate patients stay the gate
        (new patients never join it).
    gate_size
        Share of the labelled patients locked away as the promotion gate set, in ``[0, 0.5)``,
        stratified by class: role ``gate`` in every fold, never trained, selected or tested on.
        ``0`` (default) makes none.

    Returns
    -------
    pandas.DataFrame
        The split table (:data:`SPLIT_COLUMNS`), parameters in ``attrs["split"]``.

    Raises
    ------
    ManifestError
        When a required column is missing, ``item_id`` repeats or a grouping key is missing.
    ConfigurationError
        When a parameter is outside what is allowed, or there are fewer patients than folds.

    Warns
    -----
    UserWarning
        When a class has fewer patients than folds, or a fold has no validation patients.
    """
    if not 0 <= gate_size < 0.5:
        raise ConfigurationError(f"The 'gate_size' parameter must be in [0, 0.5). Got {gate_size!r} instead.")
    if gate_size > 0 or (previous is not None and (previous["role"] == "gate").any()):
        return _with_gate(manifest, gate_size=gate_size, previous=previous, folds=folds, seed=seed, by=by,
                          val_size=val_size, site_holdout=site_holdout, leave_site_out=leave_site_out,
                          inner_folds=inner_folds, label_sep=label_sep)
    params = _check_params(
        folds=folds,
        seed=seed,
        by=by,
        val_size=val_size,
        site_holdout=site_holdout,
        leave_site_out=leave_site_out,
        inner_folds=inner_folds,
        label_sep=label_sep,
    )
    if previous is not None and params["mode"] != "kfold":
        raise ConfigurationError(
            "'previous' (keeping patients in place as the cohort grows) works with K-fold splits only."
        )
    manifest = _check_manifest(manifest, by=by)
    key = BY[by]
    labelled = manifest["label"].notna().to_numpy()
    if not labelled.any():
        raise ConfigurationError("No item of the manifest has a label; a split needs labelled items to stratify.")

    groups, group_of_item = np.unique(manifest[key].to_numpy(dtype=str), return_inverse=True)
    counts, classes = _class_counts(manifest["label"], group_of_item, len(groups), label_sep=label_sep)
    has_label = np.zeros(len(groups), dtype=bool)
    has_label[group_of_item[labelled]] = True

    n_val_bins = max(2, round(1 / val_size)) if val_size > 0 else 0
    if params["mode"] == "kfold":
        n_folds = params["folds"]
        fixed = (
            _previous_placement(previous, manifest, group_of_item, len(groups), params, n_val_bins)
            if previous is not None
            else None
        )
        _check_enough(counts[has_label], classes, n_folds, unit=f"{by}s", what=f"folds={n_folds}", label_sep=label_sep)
        test_fold = np.full(len(groups), _ABSENT)
        test_fold[has_label] = _assign(
            counts[has_label], n_folds, seed=seed, fixed=None if fixed is None else fixed["fold"][has_label]
        )
        item_test = [test_fold[group_of_item] == f for f in range(n_folds)]
        strata, bin_counts, sites = test_fold, counts, None
    else:
        sites = _held_out_sites(manifest, params)
        n_folds = len(sites)
        site_names = manifest["site"].to_numpy(dtype=str)
        item_test = [site_names == site for site in sites]
        fixed = None
        # one stratum; balance the bins over sites too, since each fold draws from a different subset of sites
        site_codes = np.unique(site_names, return_inverse=True)[1]
        site_counts = np.zeros((len(groups), site_codes.max() + 1))
        np.add.at(site_counts, (group_of_item[labelled], site_codes[labelled]), 1)
        strata, bin_counts = np.where(has_label, 0, _ABSENT), np.hstack([counts, site_counts])

    val_bin = _sub_bins(
        bin_counts, strata, n_val_bins, seed=_derive(seed, 1), fixed=None if fixed is None else fixed["val"]
    )
    inner_bin = _sub_bins(
        bin_counts,
        strata,
        params["inner_folds"] or 0,
        seed=_derive(seed, 2),
        fixed=None if fixed is None else fixed["inner"],
    )
    pieces = []
    for fold in range(n_folds):
        at_test = item_test[fold] & labelled
        test_group = np.zeros(len(groups), dtype=bool)
        test_group[group_of_item[at_test]] = True
        pool = has_label & ~test_group
        dropped = labelled & test_group[group_of_item] & ~at_test
        if dropped.any():
            logger.warning(
                "Fold %d: %d item(s) of %d %s(s) seen at the held-out site are left out of training.",
                fold,
                int(dropped.sum()),
                len(np.unique(group_of_item[dropped])),
                by,
            )
        if sites is not None and not at_test.any():
            warnings.warn(f"Fold {fold}: site {sites[fold]!r} has no labelled item to test on.", stacklevel=2)
        group_role = np.full(len(groups), _ABSENT)
        group_role[~has_label] = _UNLABELLED
        group_role[test_group] = _TEST
        group_role[pool] = _TRAIN
        if n_val_bins:
            val = pool & (val_bin == fold % n_val_bins)
            group_role[val] = _VAL
            if not val.any():
                warnings.warn(
                    f"Fold {fold} has no validation {by}s: too few {by}s for val_size={val_size}.", stacklevel=2
                )
        item_role = group_role[group_of_item]
        item_role[~labelled & has_label[group_of_item]] = _ABSENT  # unlabelled items of labelled patients
        item_role[dropped] = _ABSENT
        pieces.append((fold, OUTER, item_role))
        for inner in range(params["inner_folds"] or 0):
            role = np.where(pool & (inner_bin == inner), _VAL, np.where(pool, _TRAIN, _ABSENT))[group_of_item]
            role[~labelled] = _ABSENT
            pieces.append((fold, inner, role))

    table = _assemble(manifest, pieces)
    if by == "study":
        _warn_patients_cross(table)
    params.update(
        folds=n_folds,
        sites=sites,
        classes=classes,
        grown_from=None if previous is None else previous.attrs.get("split", {}).get("digest"),
    )
    table.attrs["split"] = params
    logger.info("Split %d item(s) of %d %s(s) into %d fold(s).", len(manifest), len(groups), by, n_folds)
    return table


def fold_items(split: pd.DataFrame, fold: int, *, inner: int = OUTER) -> dict[str, list[str]]:
    """Item ids of each role in one fold: what training asks before each fit.

    Returns a dict with the keys ``train``, ``val`` and ``test`` (empty lists
    when a part is empty), plus ``unlabelled`` when the fold has such items.

    Raises
    ------
    ConfigurationError
        When the split has no such fold (the message lists the ones it has).
    """
    rows = split[(split["fold"] == fold) & (split["inner"] == inner)]
    if rows.empty:
        available = sorted(
            {(int(f), int(i)) for f, i in split[["fold", "inner"]].drop_duplicates().itertuples(index=False)}
        )
        raise ConfigurationError(
            f"The split has no fold={fold} with inner={inner}. Available (fold, inner) pairs: {available}."
        )
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for role, items in rows.groupby("role", sort=False)["item_id"]:
        out[str(role)] = items.astype(str).tolist()
    return out


def split_by_site(manifest: pd.DataFrame, *, folds: int = 5, seed: int = 0, val_size: float = 0.2) -> pd.DataFrame:
    """One patient-level split per site, stacked: every site then has train, validation and test patients.

    A federated site trains and selects its local model on its own patients, so each
    needs a validation part; a split of the pooled cohort can leave a small site without one.
    """
    parts = [split_manifest(rows, folds=folds, seed=seed, val_size=val_size)
             for _, rows in manifest.groupby("site", sort=True)]
    split = pd.concat(parts, ignore_index=True)
    split.attrs = {"split": {**parts[0].attrs.get("split", {}), "per_site": True}}
    return split




def _with_gate(manifest: pd.DataFrame, *, gate_size: float, previous: pd.DataFrame | None, seed: int, by: str,
               label_sep: str | None, **options: object) -> pd.DataFrame:
    """Lock a class-stratified share of the patients away as the gate set, then split the others."""
    manifest = _check_manifest(manifest, by=by)
    key = BY[by]
    if previous is not None and (previous["role"] == "gate").any():
        gate = set(previous.loc[previous["role"] == "gate", "patient_key"].astype(str))
        is_gate = manifest["patient_key"].astype(str).isin(gate).to_numpy()
        previous = previous[previous["role"] != "gate"]
    else:
        groups, group_of_item = np.unique(manifest[key].to_numpy(dtype=str), return_inverse=True)
        counts, _ = _class_counts(manifest["label"], group_of_item, len(groups), label_sep=label_sep)
        labelled = counts.sum(axis=1) > 0
        bins = np.full(len(groups), _ABSENT)
        bins[labelled] = assign_groups(counts[labelled], max(2, round(1 / gate_size)), seed=_derive(seed, 3))
        is_gate = (bins == 0)[group_of_item]
    table = split_manifest(manifest[~is_gate], seed=seed, by=by, label_sep=label_sep, previous=previous, **options)
    gate_items = manifest[is_gate]
    folds = sorted(int(f) for f in table["fold"].unique())
    rows = pd.DataFrame({
        "item_id": np.tile(gate_items["item_id"].to_numpy(dtype=str), len(folds)),
        "patient_key": np.tile(gate_items["patient_key"].to_numpy(dtype=str), len(folds)),
        "fold": np.repeat(np.array(folds, dtype=np.int16), len(gate_items)),
        "inner": np.full(len(gate_items) * len(folds), OUTER, dtype=np.int16),
        "role": "gate",
    })
    attrs = {**table.attrs["split"], "gate_size": gate_size,
             "gate_patients": int(gate_items["patient_key"].nunique())}
    table = pd.concat([table, rows], ignore_index=True).astype(SPLIT_COLUMNS)
    table.attrs["split"] = attrs
    logger.info("Locked %d patient(s) away as the gate set.", attrs["gate_patients"])
    return table


def gate_patients(split: pd.DataFrame) -> list[str]:
    """The patients of the split's gate set (sorted; empty when it has none)."""
    return sorted(set(split.loc[split["role"] == "gate", "patient_key"].astype(str)))


def outer_folds(split: pd.DataFrame) -> list[int]:
    """The split's outer folds: together their test parts hold every patient once (nested splits add inner folds)."""
    return sorted(int(f) for f in split.loc[split["inner"] == OUTER, "fold"].unique())


def _check_params(**params: object) -> dict:
    folds, seed, by = params["folds"], params["seed"], params["by"]
    val_size, inner_folds, label_sep = params["val_size"], params["inner_folds"], params["label_sep"]
    site_holdout, leave_site_out = params["site_holdout"], params["leave_site_out"]
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ConfigurationError(
            f"The 'seed' parameter of split_manifest must be an int in [0, 2**32). Got {seed!r} instead."
        )
    if by not in BY:
        raise ConfigurationError(f"The 'by' parameter of split_manifest must be one of {list(BY)}. Got {by!r} instead.")
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real) or not 0 <= val_size <= 0.5:
        raise ConfigurationError(
            f"The 'val_size' parameter of split_manifest must be a float in the range [0, 0.5]. "
            f"Got {val_size!r} instead."
        )
    if inner_folds is not None and (not _is_int(inner_folds) or inner_folds < 2):
        raise ConfigurationError(
            f"The 'inner_folds' parameter of split_manifest must be None or an int >= 2. Got {inner_folds!r} instead."
        )
    if label_sep is not None and (not isinstance(label_sep, str) or not label_sep):
        raise ConfigurationError(
            f"The 'label_sep' parameter of split_manifest must be None or a non-empty string. "
            f"Got {label_sep!r} instead."
        )
    if site_holdout is not None and leave_site_out:
        raise ConfigurationError(
            "Pass either site_holdout=SITE (one fold) or leave_site_out=True (one fold per site), not both."
        )
    site_mode = site_holdout is not None or bool(leave_site_out)
    if site_mode and folds is not None:
        raise ConfigurationError(
            f"folds={folds!r} was given with a site hold-out, whose folds are the held-out sites. Pass folds=None."
        )
    if not site_mode:
        folds = 5 if folds is None else folds
        if not _is_int(folds) or folds < 2:
            raise ConfigurationError(
                f"The 'folds' parameter of split_manifest must be an int >= 2. Got {folds!r} instead."
            )
    mode = "site-holdout" if site_holdout is not None else "leave-site-out" if leave_site_out else "kfold"
    return {
        "mode": mode,
        "folds": None if site_mode else int(folds),
        "seed": int(seed),
        "by": by,
        "val_size": float(val_size),
        "site_holdout": site_holdout,
        "inner_folds": None if inner_folds is None else int(inner_folds),
        "label_sep": label_sep,
    }


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_manifest(manifest: pd.DataFrame, *, by: str) -> pd.DataFrame:
    if not isinstance(manifest, pd.DataFrame):
        raise ManifestError(f"split_manifest needs a pandas DataFrame; got {type(manifest).__name__}.")
    required = ["item_id", "patient_key", "label", "site", *([BY[by]] if by != "patient" else [])]
    missing = [c for c in required if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"The manifest lacks the column(s) {missing} needed to split by {by}; got {list(manifest.columns)}."
        )
    if manifest.empty:
        raise ManifestError("The manifest has no rows; there is nothing to split.")
    repeated = manifest["item_id"].duplicated()
    if repeated.any():
        raise ManifestError(f"'item_id' must be unique; {int(repeated.sum())} row(s) repeat an earlier item_id.")
    for column in dict.fromkeys(["patient_key", BY[by], "site"]):
        absent = manifest[column].isna()
        if absent.any():
            raise ManifestError(
                f"'{column}' is missing for {int(absent.sum())} row(s); every item needs one to be split."
            )
    return manifest.reset_index(drop=True)


def _class_counts(
    labels: pd.Series, group_of_item: np.ndarray, n_groups: int, *, label_sep: str | None
) -> tuple[np.ndarray, list[str]]:
    """Per-group item counts by class (single-label) or by label plus the item count (multi-label)."""
    present = labels.notna().to_numpy()
    if label_sep is None:
        classes, code = np.unique(labels[present].to_numpy(dtype=str), return_inverse=True)
        counts = np.zeros((n_groups, len(classes)))
        np.add.at(counts, (group_of_item[present], code), 1)
        return counts, classes.tolist()
    hot = labels[present].astype(str).str.get_dummies(sep=label_sep)
    classes = sorted(hot.columns)
    per_item = np.column_stack([hot[classes].to_numpy(dtype=float), np.ones(int(present.sum()))])
    counts = np.zeros((n_groups, len(classes) + 1))
    np.add.at(counts, group_of_item[present], per_item)
    return counts, classes


def _check_enough(
    counts: np.ndarray, classes: list[str], n_bins: int, *, unit: str, what: str, label_sep: str | None
) -> None:
    """Raise when there are fewer groups than folds; warn when a class is that rare (as scikit-learn does)."""
    if len(counts) < n_bins:
        raise ConfigurationError(f"Cannot split {len(counts)} labelled {unit} into {what}: need at least one per fold.")
    holders = (counts[:, : len(classes)] > 0).sum(axis=0)
    rarest = int(np.argmin(holders))
    if holders[rarest] < n_bins:
        kind = "label" if label_sep else "class"
        warnings.warn(
            f"The least populated {kind} {classes[rarest]!r} has only {int(holders[rarest])} {unit}, "
            f"which is less than {what}; some test folds will lack it.",
            UserWarning,
            stacklevel=3,
        )


def _held_out_sites(manifest: pd.DataFrame, params: dict) -> list[str]:
    sites = sorted(manifest["site"].astype(str).unique())
    if params["mode"] == "site-holdout":
        if params["site_holdout"] not in sites:
            raise ConfigurationError(
                f"site_holdout={params['site_holdout']!r} is not a site of this manifest; its sites: {sites}."
            )
        return [params["site_holdout"]]
    if len(sites) < 2:
        raise ConfigurationError(f"leave_site_out needs at least 2 sites; the manifest has {sites}.")
    return sites


def _derive(seed: int, purpose: int) -> int:
    """An independent seed for the validation and inner-fold assignments."""
    return int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])


def _assign(counts: np.ndarray, n_bins: int, *, seed: int, fixed: np.ndarray | None) -> np.ndarray:
    """Bins for every group; groups with a fixed bin (>= 0) keep it and weigh on the rest."""
    if fixed is None:
        return assign_groups(counts, n_bins, seed=seed)
    known = fixed >= 0
    initial = np.zeros((n_bins, counts.shape[1]))
    np.add.at(initial, fixed[known], counts[known])
    out = fixed.copy()
    out[~known] = assign_groups(counts[~known], n_bins, seed=seed, initial=initial)
    return out


def _sub_bins(
    counts: np.ndarray, strata: np.ndarray, n_bins: int, *, seed: int, fixed: np.ndarray | None
) -> np.ndarray:
    """Split each stratum (an outer test fold) into ``n_bins`` balanced bins, once for all folds.

    Fold ``f`` then validates on bin ``f mod n_bins`` of every other fold: a
    union of balanced pieces is balanced, and every group is assigned twice
    in all (test fold, bin) instead of once per fold, which is what keeps
    100,000 items to seconds. Groups outside every stratum get ``-1``.
    """
    bins = np.full(len(strata), _ABSENT)
    if not n_bins:
        return bins
    for stratum in np.unique(strata[strata >= 0]):
        members = strata == stratum
        bins[members] = _assign(
            counts[members],
            n_bins,
            seed=_derive(seed, int(stratum) + 3),
            fixed=None if fixed is None else fixed[members],
        )
    return bins


def _previous_placement(
    previous: pd.DataFrame,
    manifest: pd.DataFrame,
    group_of_item: np.ndarray,
    n_groups: int,
    params: dict,
    n_val_bins: int,
) -> dict:
    """Where an earlier split put each group: test fold, validation bin, inner bin (``-1``: not placed)."""
    old = previous.attrs.get("split")
    if not old:
        raise ConfigurationError("The previous split carries no parameters; read it with clinical.splits.read_split.")
    keys = ("mode", "folds", "by", "val_size", "inner_folds", "label_sep")
    differ = {k: (old.get(k), params[k]) for k in keys if old.get(k) != params[k]}
    if differ:
        raise ConfigurationError(
            "A growing cohort must be split with the previous split's parameters; "
            f"these differ (previous, now): {differ}."
        )
    position = pd.Index(manifest["item_id"].astype(str)).get_indexer(previous["item_id"].astype(str))
    known = position >= 0
    group = group_of_item[position[known]]
    fold = previous["fold"].to_numpy()[known]
    inner = previous["inner"].to_numpy()[known]
    role = previous["role"].astype(str).to_numpy()[known]

    test = (inner == OUTER) & (role == "test")
    clash = pd.Series(fold[test]).groupby(group[test]).nunique()
    if (clash > 1).any():
        raise ConfigurationError(
            f"The previous split does not fit this cohort: {int((clash > 1).sum())} {params['by']}(s) "
            "have items tested in more than one fold (were keys merged?). Split the cohort afresh."
        )
    test_fold = np.full(n_groups, _ABSENT)
    test_fold[group[test]] = fold[test]
    val_bin = np.full(n_groups, _ABSENT)
    if n_val_bins:
        is_val = (inner == OUTER) & (role == "val")
        val_bin[group[is_val]] = fold[is_val] % n_val_bins
        # a group never validated sits in the one bin no other fold draws on (only when bins outnumber folds)
        for placed in np.flatnonzero((test_fold >= 0) & (val_bin < 0)):
            used = {f % n_val_bins for f in range(params["folds"]) if f != test_fold[placed]}
            free = sorted(set(range(n_val_bins)) - used)
            val_bin[placed] = free[0] if free else _ABSENT
    inner_bin = np.full(n_groups, _ABSENT)
    in_val = (inner >= 0) & (role == "val")
    inner_bin[group[in_val]] = inner[in_val]
    logger.info("Keeping %d %s(s) where the previous split put them.", int((test_fold >= 0).sum()), params["by"])
    return {"fold": test_fold, "val": val_bin, "inner": inner_bin}


def _assemble(manifest: pd.DataFrame, pieces: list[tuple[int, int, np.ndarray]]) -> pd.DataFrame:
    names = np.array(["train", "val", "test", "unlabelled"], dtype=object)
    item_ids = manifest["item_id"].to_numpy(dtype=str)
    patients = manifest["patient_key"].to_numpy(dtype=str)
    frames = []
    for fold, inner, role in pieces:
        keep = role >= 0
        frames.append(
            pd.DataFrame(
                {
                    "item_id": item_ids[keep],
                    "patient_key": patients[keep],
                    "fold": np.full(int(keep.sum()), fold, dtype=np.int16),
                    "inner": np.full(int(keep.sum()), inner, dtype=np.int16),
                    "role": names[role[keep]],
                }
            )
        )
    return pd.concat(frames, ignore_index=True).astype(SPLIT_COLUMNS)


def _warn_patients_cross(table: pd.DataFrame) -> None:
    roles = table[table["role"] != "unlabelled"].groupby(["fold", "inner", "patient_key"])["role"].nunique()
    crossing = roles[roles > 1]
    if len(crossing):
        warnings.warn(
            f"Split by study: {crossing.index.get_level_values('patient_key').nunique()} patient(s) have studies in "
            "more than one role of the same fold, so a model may see a test patient in training. "
            "check_no_leakage refuses this split unless levels=('study_key', 'series_key').",
            UserWarning,
            stacklevel=3,
        )
