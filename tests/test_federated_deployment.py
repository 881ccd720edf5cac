"""Faults against Flower's real deployment engine: a SuperLink and three SuperNodes on 127.0.0.1.

One site sends NaN in every round and one is killed in the middle of the second
round, where the head and ResNet-50's last bottleneck train; that round completes
with the remaining site, the NaN update is rejected with a logged reason, the
global model stays finite and each site sent at most a fifth of the model.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from test_federated_simulation import CLASSES, federation_data, top_block_recipe  # noqa: F401 - the fixture

from clinical.federated.deployment import LocalFederation, read_summary, run_app
from clinical.federated.settings import RunSettings, SiteSettings


def _wait_for(path: Path, text: str, timeout: float, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{text!r} did not appear {count} time(s) in {path.name} within {timeout:.0f} s")


def test_a_killed_site_and_a_nan_site_leave_a_finite_global_model(federation_data, tmp_path):  # noqa: F811
    cohort, split_path, sites = federation_data
    site_settings = [SiteSettings(cohort_dir=str(cohort), split_path=str(split_path), site=site,
                                  fault="nan" if index == 2 else "") for index, site in enumerate(sites)]
    out = tmp_path / "run"
    settings = RunSettings(train_config=top_block_recipe(), classes=CLASSES, num_rounds=2, min_nodes=2,
                           round_timeout=400.0, out_dir=str(out), evaluate=False)
    with LocalFederation(site_settings, tmp_path / "federation") as federation:
        run = run_app(federation, settings)
        _wait_for(federation.workdir / "flwr-run.log", "configure_train: Sampled 3 nodes", timeout=400, count=2)
        time.sleep(2.0)
        federation.kill_node(0)
        assert run.wait(timeout=600) == 0, federation.log("flwr-run")
        log = federation.log("flwr-run")
    first, record = read_summary(out)["rounds"]
    assert first["trainable_groups"] == ["head"] and len(first["accepted"]) == 2, first
    assert record["trainable_groups"] == ["stage4.2", "head"]
    assert len(record["failed"]) == 1, record
    assert len(record["accepted"]) == 1, record
    (reason,) = record["rejected"].values()
    assert "NaN" in reason
    assert "rejected" in log and "NaN" in log
    state = torch.load(out / "global.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert 0.15 < record["bytes_per_site_fraction"] <= 0.2
