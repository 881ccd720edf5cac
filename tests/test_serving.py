"""`clinical serve` on 127.0.0.1: every malformed request a 4xx with its reason, bounded memory, safe loads."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
from conftest import mlflow_tracking

from clinical.cohort import read_manifest
from clinical.errors import ConfigurationError
from clinical.splits import split_manifest, write_split
from clinical.tracking import CHAMPION, InvalidRequestError, MlflowTracker, register_run_model, save_classifier
from clinical.tracking.pyfunc import RequestTimeoutError, request_deadline
from clinical.tracking.server import free_port, wait_until_up
from clinical.training import TrainConfig
from clinical.workflows import train_fold

CONFIG = dict(model="resnet18", image_size=(32, 32), epochs=1, batch_size=16, lr=3e-3, seed=0)
NAME = "serving-test"
#: Generous: the served resnet18 at 32 × 32 holds a few hundred MiB; a bound breaks only if memory grows with load.
RSS_BOUND = 3 << 30


@pytest.fixture(scope="module")
def champion(small_radiographs: Path, module_tmp):
    with mlflow_tracking(module_tmp("mlflow-serving")):
        split = module_tmp("split") / "split.parquet"
        write_split(split_manifest(read_manifest(small_radiographs), folds=3, seed=0), split)
        run = train_fold(TrainConfig.build(**CONFIG), cohort_dir=small_radiographs, split_path=split, fold=0,
                         out=module_tmp("fold0"), tracker=MlflowTracker("serving-test"))
        version, alias = register_run_model(run.run_id, NAME)
        assert alias == CHAMPION
        yield version


@pytest.fixture(scope="module")
def served(champion, module_tmp):
    """`clinical serve models:/NAME@champion` in its own process; yields (port, psutil.Process)."""
    port = free_port()
    log = module_tmp("serve-log") / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "clinical", "serve", f"models:/{NAME}@{CHAMPION}", "--host", "127.0.0.1",
             "--port", str(port), "--max-rows", "16", "--threads", "1", "--timeout", "30"],
            env={**os.environ}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}", path="/ping", timeout=300)
            yield port, psutil.Process(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def dicom_files(small_synthetic_radiographs: Path) -> list[str]:
    files = sorted((small_synthetic_radiographs / "radiographs").rglob("*.dcm"))[:8]
    return [base64.b64encode(f.read_bytes()).decode() for f in files]


def _npy(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype == object)
    return base64.b64encode(buffer.getvalue()).decode()


def _table(*values: str, column: str = "file") -> bytes:
    return json.dumps({"dataframe_split": {"columns": [column], "data": [[v] for v in values]}}).encode()


def _huge_npy_header() -> str:
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 32, 32), dtype=np.float32))
    header["shape"] = (1, 200_000, 200_000)  # claims 149 GiB, carries 4 KiB
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return base64.b64encode(buffer.getvalue() + b"\0" * 4096).decode()


def _post(port: int, body: bytes, headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, bytes]:
    """POST /invocations with exactly these headers (http.client adds no Content-Type of its own)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/invocations", body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


JSON = {"Content-Type": "application/json"}
SECRET = "Doe^Jane-1234567"

#: name → (body, headers, status class or code, words the top-level message must hold)
MALFORMED = {
    "no content type": (lambda: _table("AAAA"), {}, 415, "Content-Type"),
    "text/csv": (lambda: b"file\nAAAA\n", {"Content-Type": "text/csv"}, 415, "application/json"),
    "nested 100,000 deep": (lambda: b'{"dataframe_split": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON, 400,
                            "nests deeper"),
    "not JSON": (lambda: b'{"dataframe_split": [', JSON, 400, "not valid JSON"),
    "5,000 rows in 190 MB": (lambda: _table(*["A" * 38_000] * 5_000), JSON, 413, "larger than"),
    "5,000 small rows": (lambda: _table(*["AAAA"] * 5_000), JSON, 400, "5000 rows"),
    "wrong column": (lambda: _table(SECRET, column="image"), JSON, 400, "column 'file'"),
    "two columns": (lambda: json.dumps({"dataframe_split": {"columns": ["file", SECRET],
                                                            "data": [["AAAA", "x"]]}}).encode(), JSON, 400, "Row 0"),
    "no format key": (lambda: json.dumps({"nonsense": SECRET}).encode(), JSON, 400, "dataframe_split"),
    "bad base64": (lambda: _table("not base64!"), JSON, 400, "not valid base64"),
    "plain text file": (lambda: _table(base64.b64encode(SECRET.encode()).decode()), JSON, 400, "Row 0"),
    "NaN npy": (lambda: _table(_npy(np.full((1, 32, 32), np.nan, dtype=np.float32))), JSON, 400, "NaN"),
    "inf npy": (lambda: _table(_npy(np.full((1, 32, 32), np.inf, dtype=np.float64))), JSON, 400, "infinite"),
    "bool npy": (lambda: _table(_npy(np.ones((1, 32, 32), dtype=bool))), JSON, 400, "dtype"),
    "complex npy": (lambda: _table(_npy(np.ones((1, 32, 32), dtype=np.complex64))), JSON, 400, "dtype"),
    "datetime npy": (lambda: _table(_npy(np.zeros((1, 32, 32), dtype="datetime64[s]"))), JSON, 400, "dtype"),
    "object npy (pickle)": (lambda: _table(_npy(np.array([SECRET, None], dtype=object))), JSON, 400, "dtype"),
    "npy header claims 149 GiB": (lambda: _table(_huge_npy_header()), JSON, 400, "claims"),
    "wrong shape npy": (lambda: _table(_npy(np.zeros((3, 8), dtype=np.float32))), JSON, 400, "shape"),
}


@pytest.mark.servers
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_request_is_a_4xx_with_its_reason_and_nothing_else(served, case: str):
    port, _ = served
    make, headers, expected, words = MALFORMED[case]
    status, raw = _post(port, make(), headers)
    assert status == expected, (case, status, raw[:500])
    answer = json.loads(raw)
    assert set(answer) == {"error_code", "message"}, answer
    assert words in answer["message"], answer["message"]
    if (status == 400 and case.endswith("npy")) or case in ("bad base64", "wrong column", "5,000 small rows"):
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    text = raw.decode()
    for leak in ("Traceback", "site-packages", ".py", str(Path.home()), sys.prefix, SECRET, "Doe"):
        assert leak not in text, (case, leak)


@pytest.mark.servers
def test_valid_requests_are_answered_with_probabilities(served, dicom_files: list[str]):
    port, _ = served
    status, raw = _post(port, _table(*dicom_files), JSON)
    assert status == 200, raw[:500]
    predictions = json.loads(raw)["predictions"]
    assert len(predictions) == len(dicom_files)
    assert all(abs(sum(p.values()) - 1.0) < 1e-5 for p in predictions)
    status, raw = _post(port, _table(_npy(np.random.default_rng(0).random((1, 32, 32), dtype=np.float32))), JSON)
    assert status == 200, raw[:500]


@pytest.mark.servers
@pytest.mark.slow
def test_a_bounded_mixed_load_gets_no_5xx_and_bounded_memory(served, dicom_files: list[str],
                                                             record_property: pytest.RecordProperty):
    port, process = served
    bodies = [(_table(*dicom_files[:4]), JSON)] * 3 + [
        (_table("not base64!"), JSON), (_table("AAAA"), {}),
        (MALFORMED["NaN npy"][0](), JSON), (MALFORMED["5,000 rows in 190 MB"][0](), JSON),
        (MALFORMED["nested 100,000 deep"][0](), JSON),
    ]
    clients, seconds = 20, 30.0  # the load the issue names: 20 clients for 30 s, loopback only
    counts: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    peak = [process.memory_info().rss]

    def client(index: int) -> None:
        i = index
        while time.monotonic() < stop:
            body, headers = bodies[i % len(bodies)]
            try:
                status = f"{_post(port, body, headers, timeout=120)[0] // 100}xx"
            except OSError as error:
                status = type(error).__name__
            with lock:
                counts[status] = counts.get(status, 0) + 1
            i += clients

    def watch() -> None:
        while time.monotonic() < stop + 5:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)] + [threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record_property("serving_peak_rss_mib", peak[0] >> 20)
    record_property("serving_answers", counts)
    print(f"\nserving under load: answers {counts}, peak server RSS {peak[0] >> 20} MiB")
    assert counts.get("2xx", 0) > 0 and counts.get("4xx", 0) > 0, counts
    assert set(counts) <= {"2xx", "4xx"}, counts
    assert peak[0] < RSS_BOUND, peak[0] >> 20


@pytest.mark.servers
def test_many_rows_run_in_batches_in_process_and_a_passed_deadline_stops_the_work(champion, dicom_files: list[str]):
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    frame = pd.DataFrame({"file": (dicom_files * 5)[:40]})  # three forward passes of at most 16
    probabilities = model.predict(frame)
    assert probabilities.shape == (40, 2) and np.isfinite(probabilities.to_numpy()).all()
    np.testing.assert_allclose(probabilities.iloc[:8].to_numpy(), probabilities.iloc[8:16].to_numpy(), atol=1e-6)
    token = request_deadline.set(time.monotonic() - 1.0)
    try:
        with pytest.raises(RequestTimeoutError):
            model.predict(frame)
    finally:
        request_deadline.reset(token)
    with pytest.raises(InvalidRequestError, match="at most 64"):
        model.predict(pd.DataFrame({"file": ["AAAA"] * 65}))


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: the proof that a load executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_crafted_pickle_in_a_checkpoint_is_refused_not_run(tmp_path: Path):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir()
    import torch

    torch.save({"model": {}, "extra": _Payload(marker)}, checkpoint)
    with pytest.raises(ConfigurationError, match="weights only"):
        save_classifier(SimpleNamespace(best_checkpoint=checkpoint), tmp_path / "model")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the same file, as the served model's weights would be read
        torch.load(checkpoint, weights_only=True)
    assert not marker.exists()
