"""Pulling from a real Orthanc (started by infra/orthanc.sh) over DICOMweb and DIMSE gives the folder ingest's manifest.

One Orthanc serves the module: the tiny synthetic radiographs (seed 0) are uploaded through
its REST API, pulled back by each protocol and compared with a folder ingest of the same files;
then studies of another cohort (seed 1) are added, and Orthanc is stopped in the middle of a pull.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import requests

from clinical.cli import main
from clinical.cohort import read_manifest
from clinical.cohort.synthetic import generate_cohort, phi_values
from clinical.errors import ConfigurationError, PacsUnavailableError
from clinical.ingest import ingest, keyed_hash, load_key, source_paths
from clinical.ingest.pacs import PacsConfig, StudyQuery, default_staging, pull

KEY = "pacs-test-key"
PASSWORD = "orthanc-test-secret"
USER = "clinical"
SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "orthanc.sh"
#: Every manifest column except ``source`` (a path relative to the source root, which differs by design).
COMPARED = ["item_id", "patient_key", "study_key", "series_key", "site", "modality", "kind", "label", "path",
            "shape", "spacing", "source_digest"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Orthanc:
    """A local Orthanc in a temporary folder, driven through infra/orthanc.sh."""

    def __init__(self, home: Path) -> None:
        self.http_port, self.dicom_port, self.move_port = _free_port(), _free_port(), _free_port()
        self.env = {**os.environ, "ORTHANC_HOME": str(home), "ORTHANC_HTTP_PORT": str(self.http_port),
                    "ORTHANC_DICOM_PORT": str(self.dicom_port), "ORTHANC_AET": "ORTHANC", "ORTHANC_USER": USER,
                    "ORTHANC_PASSWORD": PASSWORD, "CLINICAL_AET": "CLINICAL", "CLINICAL_AE_PORT": str(self.move_port)}

    def script(self, command: str) -> None:
        subprocess.run(["bash", str(SCRIPT), command], env=self.env, check=True, capture_output=True, timeout=120)

    def upload(self, files: list[Path]) -> None:
        with requests.Session() as session:
            session.auth = (USER, PASSWORD)
            for path in files:
                url = f"http://127.0.0.1:{self.http_port}/instances"
                answer = session.post(url, data=path.read_bytes(), timeout=60)
                answer.raise_for_status()

    def config(self, url: str, **options) -> PacsConfig:
        return PacsConfig.from_url(url, username=USER, password=PASSWORD, **options)

    def dicomweb(self, **options) -> PacsConfig:
        return self.config(f"dicomweb+http://127.0.0.1:{self.http_port}/dicom-web", **options)

    def dimse(self, retrieve: str = "get") -> PacsConfig:
        return self.config(f"dimse://ORTHANC@127.0.0.1:{self.dicom_port}?calling=CLINICAL&retrieve={retrieve}"
                           f"&move_port={self.move_port}")


@pytest.fixture(scope="module")
def synthetic(module_tmp) -> Path:
    out = module_tmp("pacs-synthetic")
    generate_cohort(out, size="tiny", seed=0, tasks=("radiographs",))
    return out


@pytest.fixture(scope="module")
def extra(module_tmp) -> list[Path]:
    """Three files of another synthetic cohort: the studies added to the PACS later."""
    out = module_tmp("pacs-extra")
    generate_cohort(out, size="tiny", seed=1, tasks=("radiographs",))
    return sorted((out / "radiographs").rglob("*.dcm"))[:3]


@pytest.fixture(scope="module")
def orthanc(synthetic, module_tmp):
    server = Orthanc(module_tmp("orthanc"))
    server.script("start")
    try:
        server.upload(sorted((synthetic / "radiographs").rglob("*.dcm")))
        yield server
    finally:
        server.script("stop")


@pytest.fixture(scope="module")
def folder_manifest(synthetic, module_tmp) -> pd.DataFrame:
    task = synthetic / "radiographs"
    cohort = module_tmp("pacs-folder") / "cohort"
    ingest([task], cohort, labels=task / "labels.csv", key=KEY, workers=0, progress=False)
    return read_manifest(cohort)


def _pull(config: PacsConfig, cohort: Path, synthetic: Path, **options):
    return pull(config, cohort, labels=synthetic / "radiographs" / "labels.csv", key=KEY, workers=0, progress=False,
                **options)


def _rows(manifest: pd.DataFrame) -> pd.DataFrame:
    table = manifest[COMPARED].astype(str)
    return table.sort_values("item_id").reset_index(drop=True)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse-get", "dimse-move"])
def test_pull_gives_the_folder_manifest(protocol, orthanc, synthetic, folder_manifest, tmp_path):
    config = orthanc.dicomweb() if protocol == "dicomweb" else orthanc.dimse(protocol.removeprefix("dimse-"))
    report = _pull(config, tmp_path / "cohort", synthetic)
    pulled = read_manifest(tmp_path / "cohort")
    assert report.matched == report.fetched == folder_manifest["study_key"].nunique()
    assert report.instances == len(folder_manifest) and not report.failed
    pd.testing.assert_frame_equal(_rows(pulled), _rows(folder_manifest))
    assert pulled["label"].notna().all() and pulled["site"].nunique() == 3
    # sources are pseudonyms of <study>/<series>/<instance>.dcm in the staging folder, all keyed hashes
    paths = source_paths(tmp_path / "cohort")
    assert all(s.startswith("src-") and len(Path(paths[s]).parts) == 3 for files in pulled["source"] for s in files)


def test_query_by_modality_date_and_patients(orthanc, synthetic, tmp_path):
    truth = pd.read_csv(synthetic / "radiographs" / "ground_truth.csv", dtype=str)
    patients = tmp_path / "patients.csv"
    chosen = sorted(truth["patient_id"].unique())[:2]
    pd.DataFrame({"patient_id": chosen}).to_csv(patients, index=False)
    report = _pull(orthanc.dimse(), tmp_path / "by-patient", synthetic, patients_csv=patients)
    assert report.fetched == truth[truth["patient_id"].isin(chosen)]["study_uid"].nunique()

    modality = truth["modality"].iloc[0]
    report = _pull(orthanc.dicomweb(), tmp_path / "by-modality", synthetic, modalities=[modality],
                   since="1900-01-01", until="2100-12-31")
    assert report.fetched == truth[truth["modality"] == modality]["study_uid"].nunique()
    assert _pull(orthanc.dicomweb(), tmp_path / "none", synthetic, until="1900-01-01").matched == 0


def test_stopped_pacs_is_reported_and_a_rerun_completes(orthanc, synthetic, tmp_path):
    cohort = tmp_path / "cohort"
    config = orthanc.dicomweb(retries=1, backoff=0.05, timeout=10)
    try:
        with pytest.raises(PacsUnavailableError) as caught:
            _pull(config, cohort, synthetic, on_study=lambda done, total: done == 3 and orthanc.script("stop"))
        message = str(caught.value)
        assert config.display in message and "rerun" in message and PASSWORD not in message
        assert "3 of " in message
    finally:
        orthanc.script("start")
    report = _pull(config, cohort, synthetic)
    manifest = read_manifest(cohort)
    assert report.skipped == 3 and report.fetched == report.matched - 3
    assert manifest["item_id"].is_unique and len(manifest) == report.matched == report.ingest.found


def test_a_study_that_cannot_be_retrieved_is_rejected_and_the_rest_goes_on(orthanc, synthetic, tmp_path):
    files = {pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID: f
             for f in (synthetic / "radiographs").rglob("*.dcm")}
    last = max(files, key=lambda uid: keyed_hash(load_key(KEY), uid))  # studies are fetched in key order

    def delete_last(done: int, total: int) -> None:
        if done == 1:  # found by the query, gone before its turn
            with requests.Session() as session:
                session.auth = (USER, PASSWORD)
                base = f"http://127.0.0.1:{orthanc.http_port}"
                found = session.post(f"{base}/tools/lookup", data=last, timeout=60).json()
                session.delete(f"{base}/studies/{found[0]['ID']}", timeout=60).raise_for_status()

    try:
        report = _pull(orthanc.dicomweb(), tmp_path / "cohort", synthetic, on_study=delete_last)
    finally:
        orthanc.upload([files[last]])
    assert list(report.failed) == [keyed_hash(load_key(KEY), last)] and "no instances" in report.failed[
        keyed_hash(load_key(KEY), last)]
    assert report.fetched == report.matched - 1 == report.ingest.items


def test_cli_pull_without_phi_or_password_in_logs_state_or_messages(orthanc, synthetic, tmp_path, caplog, capsys,
                                                                    monkeypatch):
    monkeypatch.setenv("CLINICAL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CLINICAL_PSEUDONYM_KEY", KEY)
    monkeypatch.delenv("CLINICAL_PACS_USER", raising=False)
    monkeypatch.delenv("CLINICAL_PACS_PASSWORD", raising=False)
    cohort = tmp_path / "cohort"
    labels = str(synthetic / "radiographs" / "labels.csv")
    with caplog.at_level(logging.DEBUG):
        # DICOMweb without credentials: Orthanc answers 401, the command says so and exits with 2
        assert main(["pull", "--pacs", orthanc.dicomweb().display, "--out", str(cohort), "--labels", labels]) == 2
        assert "refused the credentials" in capsys.readouterr().err
        monkeypatch.setenv("CLINICAL_PACS_PASSWORD", PASSWORD)
        monkeypatch.setenv("CLINICAL_PACS_USER", USER)
        url = f"dimse://ORTHANC@127.0.0.1:{orthanc.dicom_port}?calling=CLINICAL"
        assert main(["pull", "--pacs", url, "--out", str(cohort), "--labels", labels, "--workers", "0"]) == 0
        assert main(["pull", "--pacs", orthanc.dicomweb().display, "--out", str(cohort), "--labels", labels,
                     "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "25 studies matched, 25 already fetched, 0 fetched" in printed
    staging = default_staging(cohort)
    written = caplog.text + printed + (staging / "pull_state.json").read_text() + repr(orthanc.dicomweb())
    written += " ".join(str(p.relative_to(staging)) for p in staging.rglob("*"))
    for value in phi_values(synthetic) | {PASSWORD}:
        assert value not in written
    assert read_manifest(cohort)["label"].notna().all()


def test_config_from_url_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLINICAL_PACS_USER", "someone")
    monkeypatch.setenv("CLINICAL_PACS_PASSWORD", "s3cret")
    config = PacsConfig.from_url("dicomweb+https://pacs.example:8443/dicom-web/?retries=5")
    assert (config.protocol, config.base_url, config.retries) == ("dicomweb", "https://pacs.example:8443/dicom-web", 5)
    assert config.username == "someone" and "s3cret" not in repr(config)
    config = PacsConfig.from_url("dimse://PACS@10.0.0.5:11112?calling=ME&retrieve=move&move_port=4006")
    assert (config.called_aet, config.calling_aet, config.retrieve, config.move_port) == ("PACS", "ME", "move", 4006)
    for bad in ("dicomweb+http://user:s3cret@pacs.example/dicom-web", "ftp://pacs", "dimse://pacs:104",
                "dimse://PACS@pacs:104?bogus=1", "dimse://A_TITLE_LONGER_THAN_16@pacs:104"):
        with pytest.raises(ConfigurationError) as caught:
            PacsConfig.from_url(bad)
        assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="since"):
        StudyQuery.build(since="2024-05-01", until="2024-01-01")
    query = StudyQuery.build(since="2024-01-01", modalities=["cr", "DX"])
    assert query.matches() == [{"StudyDate": "20240101-", "ModalitiesInStudy": "CR"},
                               {"StudyDate": "20240101-", "ModalitiesInStudy": "DX"}]


def test_pipeline_pulls_when_a_pacs_is_configured(orthanc, synthetic, tmp_path, monkeypatch):
    """The task body and the routing in ``ingest_flow``, run without a Prefect server (test_pipelines has one)."""
    from prefect.logging import disable_run_logger

    from pipelines import flows
    from pipelines.pacs import pull_flow, pull_task
    from pipelines.settings import PipelineSettings

    for name, value in (("CLINICAL_PACS_USER", USER), ("CLINICAL_PACS_PASSWORD", PASSWORD),
                        ("CLINICAL_PSEUDONYM_KEY", KEY)):
        monkeypatch.setenv(name, value)
    settings = PipelineSettings(sources=[], workdir=str(tmp_path), pacs=orthanc.dicomweb().display,
                                labels=str(synthetic / "radiographs" / "labels.csv"), ingest_workers=0,
                                pacs_modalities=["CR", "DX"])
    with disable_run_logger():
        result = pull_task.fn(settings.pacs, settings.path("cohort"), since=None, until=None,
                              modalities=settings.pacs_modalities, accessions=None, patients=None,
                              labels=settings.labels, sites=None, options={}, workers=0)
    manifest = read_manifest(result["cohort"])
    assert result["fetched"] == result["items"] == len(manifest) > 0 and result["failed_studies"] == 0
    assert manifest["label"].notna().all()

    called = []
    monkeypatch.setattr(flows, "pull_flow", lambda s: called.append(s) or result)
    assert flows.ingest_flow.fn(settings) is result and called == [settings]
    assert pull_flow.fn.__name__ == "pull_flow"


def test_incremental_pulls_fetch_only_new_studies(orthanc, synthetic, extra, folder_manifest, tmp_path):
    cohort = tmp_path / "cohort"
    first = _pull(orthanc.dicomweb(), cohort, synthetic)
    again = _pull(orthanc.dicomweb(), cohort, synthetic)
    assert again.fetched == 0 and again.skipped == first.fetched and again.ingest.units_run == 0
    assert again.ingest.digest == first.ingest.digest

    orthanc.upload(extra)
    more = _pull(orthanc.dicomweb(), cohort, synthetic)
    manifest = read_manifest(cohort)
    assert (more.fetched, more.instances, more.skipped) == (len(extra), len(extra), first.fetched)
    assert len(manifest) == len(folder_manifest) + len(extra) and manifest["item_id"].is_unique
    assert set(folder_manifest["item_id"]) < set(manifest["item_id"])
