"""The report of a registered model, opened in headless Chromium; and predictions written back into a real Orthanc.

One tiny cross-validated, refit and registered model serves the module (a real MLflow server), and
one Orthanc (infra/orthanc.sh) receives a study of another synthetic cohort for the round trip.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from conftest import mlflow_tracking
from dicomweb_client.api import DICOMwebClient
from mlflow.tracking import MlflowClient
from test_pacs import PASSWORD, USER, Orthanc
from test_training_helpers import TINY

from clinical.cli import main
from clinical.cohort.synthetic import generate_cohort, phi_values
from clinical.ingest import keyed_hash, load_key
from clinical.reporting import read_prediction_sr
from clinical.reporting.model_report import FIGURES, SECTIONS
from clinical.reporting.pdf import browser_command
from clinical.tracking.versions import load_pyfunc
from clinical.training import TrainConfig
from clinical.workflows import (
    CHAMPION,
    MlflowTracker,
    cross_validate,
    predict_to_pacs,
    register_model,
    report_model,
    split_cohort,
)

NAME = "report-test"
RECIPE = dict(model=TINY, image_size=(32, 32), epochs=2, unfreeze_every=1, batch_size=16, lr=3e-3, seed=0,
              early_stopping_patience=None)
#: Records, once the page has loaded, how many images it holds and how many did not decode.
PROBE = ("<script>window.addEventListener('load', () => { const images = [...document.images];"
         " document.body.dataset.images = images.length;"
         " document.body.dataset.broken = images.filter(i => !i.complete || i.naturalWidth === 0).length; });"
         "</script></body>")


@pytest.fixture(scope="module")
def registered(small_radiographs: Path, module_tmp):
    with mlflow_tracking(module_tmp("mlflow-report")):
        split = module_tmp("split") / "split.parquet"
        split_cohort(small_radiographs, split, folds=3, seed=0, gate_size=0.2)
        cv = cross_validate(TrainConfig.build(**RECIPE), cohort_dir=small_radiographs, split_path=split,
                            out=module_tmp("cv"), folds=[0, 1], n_boot=100, final="refit",
                            tracker=MlflowTracker("report-test"))
        yield register_model(cv, NAME, cohort_dir=small_radiographs, split_path=split)


@pytest.mark.servers
def test_the_report_opens_in_a_browser_with_every_section_and_figure_and_no_phi(
    registered, small_synthetic_radiographs: Path, tmp_path: Path
):
    use = "Triage of day-1 chest radiographs for a second reading; not for diagnosis."
    report = report_model(f"models:/{NAME}@{CHAMPION}", tmp_path / "report", intended_use=use,
                          limitations=("Synthetic images only.",))
    html = report.html.read_text()
    assert report.pdf.read_bytes().startswith(b"%PDF") and report.pdf.stat().st_size > 10_000
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE, 1))
    command = browser_command("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), profile=tmp_path / "p")
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-broken="(\d+)"', dom)
    assert body is not None, "the page's script did not run"
    assert (int(body[1]), int(body[2])) == (len(FIGURES), 0)  # three sites, so the forest plot too
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    assert use in dom and "Synthetic images only." in dom and "Calibration slope" in dom
    assert "113100" in dom and "Clean Pixel Data" in dom and "0 patient, 0 series, 0 study" in dom
    assert "CLAIM 2024" in dom and "TRIPOD+AI" in dom and dom.count("cannot") >= 10
    assert 'src="data:image/png;base64,' in html and not re.search(r'(src|href)="(?!data:|#)', html)  # one file
    for value in phi_values(small_synthetic_radiographs):
        assert value not in html
    client = MlflowClient()
    assert {a.path for a in client.list_artifacts(registered.run_id, "report")} == {
        "report/model_report.html", "report/model_report.pdf"}
    assert client.get_model_version(NAME, registered.version).tags["clinical.report"] == "report/model_report.html"

    assert main(["report", f"models:/{NAME}/{registered.version}", "--out", str(tmp_path / "cli"), "--no-pdf",
                 "--no-log"]) == 0
    assert (tmp_path / "cli" / "model_report.html").is_file() and not (tmp_path / "cli" / "model_report.pdf").exists()
    assert main(["report", "models:/no-such-model@champion", "--out", str(tmp_path / "none")]) == 2


@pytest.fixture(scope="module")
def orthanc(module_tmp):
    server = Orthanc(module_tmp("orthanc-report"))
    server.script("start")
    try:
        yield server
    finally:
        server.script("stop")


@pytest.mark.servers
@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_a_new_study_is_pulled_predicted_and_its_sr_stored_retrieved_and_read(
    protocol, registered, orthanc, tmp_path: Path
):
    source = tmp_path / "new-study"
    generate_cohort(source, size="tiny", seed=2 if protocol == "dicomweb" else 3, tasks=("radiographs",))
    files = sorted((source / "radiographs").rglob("*.dcm"))
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    instances = [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID == study]
    orthanc.upload(instances)
    pacs = orthanc.dicomweb() if protocol == "dicomweb" else orthanc.dimse()
    staging = tmp_path / "staging"

    results = predict_to_pacs(pacs, f"models:/{NAME}@{CHAMPION}", staging=staging, key="report-key")
    [result] = [r for r in results if r.study_key == keyed_hash(load_key("report-key"), study)]
    assert result.instances == len(instances)
    model = load_pyfunc(f"models:/{NAME}@{CHAMPION}")
    direct = model.predict(pd.DataFrame({"file": [base64.b64encode(f.read_bytes()).decode() for f in instances]}))

    client = DICOMwebClient(orthanc.dicomweb().base_url)
    client._session.auth = (USER, PASSWORD)
    found = client.search_for_instances(study_instance_uid=study, search_filters={"Modality": "SR"})
    assert len(found) == 1
    sr = client.retrieve_instance(study, found[0]["0020000E"]["Value"][0], found[0]["00080018"]["Value"][0])
    assert sr.SOPInstanceUID == result.sr_uid
    read = read_prediction_sr(sr)
    assert read["model"] == NAME and read["version"] == registered.version
    assert read["probabilities"] == pytest.approx(result.probabilities, abs=1e-9)
    assert read["probabilities"] == pytest.approx(direct.mean(axis=0).to_dict(), abs=1e-6)
    assert sorted(read["references"]) == sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                                                for f in instances)
    path = tmp_path / "sr.dcm"
    sr.save_as(path)
    dumped = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Comprehensive SR" in dumped and "Probability of positive" in dumped and NAME in dumped

    again = predict_to_pacs(pacs, f"models:/{NAME}@{CHAMPION}", staging=staging, key="report-key")
    assert again == []  # a study handled once is not predicted again
