"""Per-site tables and the figures: they render, save as PNG and say what the numbers say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evaluation_helpers import clustered_binary, multiclass_items
from matplotlib.figure import Figure

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation import (
    apply_temperature,
    evaluate,
    per_site,
    plot_calibration,
    plot_confusion,
    plot_forest,
    plot_pr,
    plot_roc,
    save_figure,
)
from clinical.evaluation.sites import ALL_SITES, SITE_GAP

BINARY = ["no BPD", "BPD"]
THREE = ["glioma", "meningioma", "pituitary"]


@pytest.fixture(scope="module")
def binary() -> pd.DataFrame:
    return clustered_binary(np.random.default_rng(21), n_patients=90, items_per_patient=3, sites=("A", "B", "C"))


@pytest.fixture(scope="module")
def site_table(binary) -> pd.DataFrame:
    return per_site(binary, BINARY, n_boot=200, seed=0)


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_per_site_table_has_every_site_the_pool_and_the_gap(binary, site_table):
    assert list(site_table.columns) == ["site", "metric", "value", "low", "high", "n", "n_patients", "p_value",
                                        "aggregate"]
    assert set(site_table["site"]) == {"A", "B", "C", ALL_SITES, SITE_GAP}
    auroc = site_table[site_table["metric"] == "auroc"].set_index("site")
    for site in ("A", "B", "C"):
        expected = evaluate(binary[binary["site"] == site], BINARY, n_boot=10)["auroc"][0]
        assert auroc.loc[site, "value"] == pytest.approx(expected)
        assert auroc.loc[site, "n"] == 30
    assert auroc.loc[ALL_SITES, "value"] == pytest.approx(evaluate(binary, BINARY, n_boot=10)["auroc"][0])
    per = auroc.loc[["A", "B", "C"], "value"]
    assert auroc.loc[SITE_GAP, "value"] == pytest.approx(per.max() - per.min())
    assert auroc.loc[SITE_GAP, "low"] < auroc.loc[SITE_GAP, "value"] < auroc.loc[SITE_GAP, "high"]
    assert 0 <= auroc.loc[SITE_GAP, "p_value"] <= 1 and auroc.loc[["A", ALL_SITES], "p_value"].isna().all()
    with pytest.raises(PredictionsError, match="'site' column"):
        per_site(binary.drop(columns="site"), BINARY)


def test_a_site_where_the_model_fails_is_found_by_the_gap_and_the_heterogeneity_test():
    frame = clustered_binary(
        np.random.default_rng(5), n_patients=450, items_per_patient=2, shift=2.0, sites=("A", "B", "C")
    )
    at_c = frame["site"] == "C"
    frame.loc[at_c, "prob_1"] = np.random.default_rng(6).random(int(at_c.sum()))  # no signal at site C
    frame["prob_0"] = 1 - frame["prob_1"]
    table = per_site(frame, BINARY, n_boot=500, seed=1, metrics=["auroc"]).set_index("site")
    assert table.loc[SITE_GAP, "low"] > 0 and table.loc[SITE_GAP, "p_value"] < 0.01


def test_roc_legend_shows_the_auroc_and_ci_of_evaluate(binary, tmp_path):
    figure = plot_roc(
        {
            "in-domain": binary,
            "ImageNet": binary.assign(prob_1=binary["prob_1"] ** 2, prob_0=1 - binary["prob_1"] ** 2),
        },
        BINARY,
    )
    assert isinstance(figure, Figure)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    expected = evaluate(binary, BINARY, n_boot=200, seed=0).formatted()["auroc"]
    assert legend[0] == f"in-domain: AUROC {expected}"
    assert _is_png(save_figure(figure, tmp_path / "figures" / "roc.png"))


def test_every_figure_renders_and_saves(binary, site_table, tmp_path):
    three = multiclass_items(np.random.default_rng(22), n=150)
    overconfident = binary.assign(prob_1=binary["prob_1"] ** 3 / (binary["prob_1"] ** 3 + binary["prob_0"] ** 3))
    overconfident["prob_0"] = 1 - overconfident["prob_1"]
    figures = {
        "pr": plot_pr(binary, BINARY, level="item"),
        "roc_multiclass": plot_roc(three, THREE),
        "calibration": plot_calibration(
            {"raw": overconfident, "scaled": apply_temperature(overconfident, 3.0)}, BINARY
        ),
        "calibration_multiclass": plot_calibration(three, THREE),
        "confusion": plot_confusion(binary, BINARY, threshold=0.4),
        "confusion_multiclass": plot_confusion(three, THREE),
        "forest": plot_forest(site_table, metric="auroc"),
    }
    for name, figure in figures.items():
        assert _is_png(save_figure(figure, tmp_path / f"{name}.png")), name
    assert "AUPRC" in figures["pr"].axes[0].get_legend().get_texts()[0].get_text()
    assert len(figures["roc_multiclass"].axes[0].get_legend().get_texts()) == 4  # 3 classes + chance
    labels = [t.get_text() for t in figures["forest"].axes[0].get_yticklabels()]
    assert labels == ["A (n=30)", "B (n=30)", "C (n=30)", "all sites (n=90)"]


def test_plots_refuse_what_they_cannot_draw(binary, site_table):
    three = multiclass_items(np.random.default_rng(23), n=60)
    with pytest.raises(ConfigurationError, match="binary tasks"):
        plot_roc({"a": three, "b": three}, THREE)
    with pytest.raises(PredictionsError, match="only one class"):
        plot_roc(binary[binary["label"] == 1], BINARY)
    with pytest.raises(ConfigurationError, match="no rows for metric"):
        plot_forest(site_table, metric="kappa")
