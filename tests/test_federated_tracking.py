"""Site-level fine-tuning against the champion, and the federated global model in MLflow."""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_federated_simulation import CLASSES, federation_data, recipe  # noqa: F401 - the module fixture

from clinical.federated.settings import RunSettings
from clinical.tracking import (
    LocalMlflowServer,
    MlflowTracker,
    alias_version,
    load_registered,
    register_run_model,
    site_alias,
)
from clinical.workflows import site_finetune, track_federation, train_fold

NAME = "federated-test"


@pytest.fixture(scope="module")
def registry(module_tmp, federation_data):  # noqa: F811
    cohort, split_path, _ = federation_data
    root = module_tmp("mlflow")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    with LocalMlflowServer(root / "server") as server:
        os.environ["MLFLOW_TRACKING_URI"] = server.uri
        run = train_fold(recipe(epochs=1, schedule="full"), cohort_dir=cohort, split_path=split_path, fold=0,
                         out=root / "champion", tracker=MlflowTracker("federated-tests"))
        version, alias = register_run_model(run.run_id, NAME)
        assert alias == "champion"
        yield root, version
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def test_site_finetune_registers_the_site_alias_only_when_better(registry, federation_data):  # noqa: F811
    root, champion = registry
    cohort, split_path, sites = federation_data
    config = recipe(epochs=2, unfreeze_every=1, max_trainable_groups=2)
    kept = site_finetune(sites[0], f"models:/{NAME}@champion", cohort, split_path, config=config,
                         out=root / "site-kept", experiment="federated-tests", margin=2.0)
    assert not kept.promoted and kept.version is None
    assert alias_version(NAME, site_alias(sites[0])) is None
    promoted = site_finetune(sites[0], f"models:/{NAME}@champion", cohort, split_path, config=config,
                             out=root / "site-promoted", experiment="federated-tests", margin=-2.0)
    assert promoted.promoted and promoted.alias.startswith("site-")
    assert alias_version(NAME, promoted.alias) == promoted.version
    assert alias_version(NAME, "champion") == champion
    assert "auroc" in promoted.reason


def test_global_model_is_tracked_and_registered(registry, federation_data, tmp_path):  # noqa: F811
    from mlflow.tracking import MlflowClient

    cohort, split_path, _ = federation_data
    net, _ = load_registered(f"models:/{NAME}@champion")
    torch.save(net.state_dict(), tmp_path / "global.pt")
    settings = RunSettings(train_config=recipe(), classes=CLASSES, num_rounds=2, out_dir=str(tmp_path))
    full = 44723624
    rounds = [{"round": r, "trainable_groups": groups, "bytes_sent": {"1": sent, "2": sent},
               "bytes_sent_total": 2 * sent, "full_model_bytes": full, "bytes_per_site_fraction": sent / full,
               "accepted": ["1", "2"], "rejected": {}, "failed": {}, "evaluate_metrics": {"val-auroc": 0.7}}
              for r, groups, sent in ((1, ["head"], 4104), (2, ["stage4", "head"], 33_587_208))]
    (tmp_path / "federated.json").write_text(json.dumps({"settings": settings.run_config(),
                                                         "full_model_bytes": full,
                                                         "groups": ["stem", "stage1", "stage2", "stage3", "stage4",
                                                                    "head"], "rounds": rounds}))
    registered = track_federation(tmp_path, cohort_dir=cohort, split_path=split_path, name=NAME + "-global",
                                  experiment="federated-tests")
    assert registered.alias == "champion" and registered.version == "1"
    assert "auroc" in registered.test_metrics
    assert (tmp_path / "model" / "MLmodel").exists()
    # the bytes curve: one value per round, and its plot with the run
    client = MlflowClient()
    curve = sorted((m.step, m.value) for m in client.get_metric_history(registered.run_id, "bytes_fraction"))
    assert curve == [(0, pytest.approx(4104 / full)), (1, pytest.approx(33_587_208 / full))]
    assert "plots/bytes_per_round.png" in {a.path for a in client.list_artifacts(registered.run_id, "plots")}
