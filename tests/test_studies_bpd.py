"""The BPD study at ``--size tiny`` through the CLI, and the study machinery every study shares.

Checks that the arms are the paper's (initialisation × recipe × CutMix, one factor at a time around the
reference), that every number in the table is what its name says (pooled value inside its patient CI,
the paired test against the reference equal to the corrected t-test of the fold scores), that the
pretraining cohorts share no patient with the study cohort, and that the registry, the CLI and
prefect.yaml name the same six studies. The tracked run (one MLflow study run, every arm nested) is
checked in test_pipelines.py, where the study runs as a Prefect deployment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clinical.cli import main
from clinical.cli.study import NAMES
from clinical.cohort import read_manifest
from clinical.errors import ConfigurationError
from clinical.evaluation import compare_folds
from clinical.workflows.studies import STUDIES, run_study
from clinical.workflows.studies.arms import ArmResult, study_table
from clinical.workflows.studies.bpd import REFERENCE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bpd(module_tmp) -> tuple[Path, str]:
    out = module_tmp("bpd")
    assert main(["study", "bpd", "--out", str(out), "--size", "tiny"]) == 0
    return out, (out / "table.md").read_text()


def test_the_table_has_the_papers_arms_and_its_numbers_are_what_they_say(bpd):
    out, markdown = bpd
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 6 and table["arm"].iloc[0] == REFERENCE
    assert {"random init, progressive, CutMix", "supervised other cohort, progressive, CutMix",
            "SSL in-domain, full fine-tuning, CutMix", "SSL in-domain, progressive, no CutMix"} <= set(table["arm"])
    assert (table["n_folds"] == 3).all()
    for metric in ("auroc", "balanced_accuracy", "f1"):
        finite = table[np.isfinite(table[f"{metric}_pooled"])]
        assert (finite[f"{metric}_low"] <= finite[f"{metric}_pooled"] + 1e-12).all()
        assert (finite[f"{metric}_pooled"] <= finite[f"{metric}_high"] + 1e-12).all()
    others = table[table["arm"] != REFERENCE]
    assert table.loc[table["arm"] == REFERENCE, "p_vs_reference"].isna().all()
    assert others["p_vs_reference"].between(0, 1).all()
    assert ((others["diff_low"] <= others["diff_vs_reference"]) & (others["diff_vs_reference"]
                                                                   <= others["diff_high"])).all()
    for arm in table["arm"]:
        assert f"| {arm} |" in markdown
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pretrained" / "simclr.pt").is_file()


def test_no_pretraining_cohort_shares_a_patient_with_the_study(bpd):
    out, _ = bpd
    study = set(read_manifest(out / "cohort")["patient_key"])
    for name in ("corpus", "other-cohort"):
        assert not study & set(read_manifest(out / name)["patient_key"]), name


def test_the_paired_test_is_the_corrected_t_test_of_the_fold_scores():
    pooled = pd.DataFrame({"metric": ["auroc"], "value": [0.7], "low": [0.6], "high": [0.8]})
    base = ArmResult("a", {"auroc": [0.70, 0.80, 0.75]}, pooled, n_train=[40] * 3, n_test=[20] * 3)
    other = ArmResult("b", {"auroc": [0.60, 0.78, 0.65]}, pooled, n_train=[40] * 3, n_test=[20] * 3)
    table = study_table([base, other], metrics=["auroc"], reference="a").set_index("arm")
    expected = compare_folds([0.60, 0.78, 0.65], [0.70, 0.80, 0.75], n_train=40, n_test=20)
    assert table.loc["b", "diff_vs_reference"] == pytest.approx(expected.difference)
    assert table.loc["b", "p_vs_reference"] == pytest.approx(expected.p_value)
    assert table.loc["b", "auroc_mean"] == pytest.approx(np.mean([0.60, 0.78, 0.65]))
    with pytest.raises(ConfigurationError, match="distinct names"):
        study_table([base, base], metrics=["auroc"])
    with pytest.raises(ConfigurationError, match="reference arm 'c'"):
        study_table([base, other], metrics=["auroc"], reference="c")


def test_unknown_studies_sizes_and_cohorts_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown study 'bdp'"):
        run_study("bdp", tmp_path)
    with pytest.raises(ConfigurationError, match="size must be one of"):
        run_study("bpd", tmp_path, size="huge")
    with pytest.raises(ConfigurationError, match="not an ingested cohort"):
        run_study("bpd", tmp_path / "out", cohort=tmp_path)
    with pytest.raises(ConfigurationError, match=r"no option ct_signal; its options: \['model', 'corpus'"):
        run_study("bpd", tmp_path / "out", ct_signal=False)


def test_the_cli_hands_a_studys_own_options_through_as_json_values(tmp_path, capsys):
    assert main(["study", "kimianet", "--out", str(tmp_path), "--option", "finding-focus=0.1", "--option",
                 "nope=true"]) == 2
    assert "no option nope; its options: ['finding_strength', 'finding_focus']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "kimianet", "--out", str(tmp_path), "--option", "finding_focus"])


def test_the_registry_the_cli_and_prefect_yaml_name_the_same_six_studies():
    assert set(NAMES) == set(STUDIES) and len(STUDIES) == 6
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    studies = {d["parameters"]["name"]: d for d in deployments if d["entrypoint"] == "pipelines/studies.py:study_flow"}
    assert set(studies) == set(STUDIES)
    assert all(d["name"] == name for name, d in studies.items())
