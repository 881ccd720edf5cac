"""The served model against the same model in process, on the same DICOM input, same threads, in the same run.

Both sides run the same pyfunc — base64 decode, DICOM read and windowing,
the evaluation preset, one batched forward pass under ``torch.inference_mode``
— on the same one-file request, with ``torch.set_num_threads(THREADS)``,
each warmed up first. The served side goes through ``clinical serve`` (MLflow's
scoring app behind its limits, uvicorn, JSON over HTTP on 127.0.0.1); the
in-process side calls ``model.predict(frame)`` from as many threads as there
are clients. At 1, 4 and 20 concurrent clients: p50 and p95 latency and
throughput, as served / in-process ratios. Goal: served p50 ≤ 1.15× in
process at one client; throughput at 20 clients ≥ 0.8×. The 20-client served
run also counts answers by status class and requires zero 5xx.

Run: ``python -m benchmarks bench_serving`` (about 3 minutes with set-up).
``CLINICAL_BENCH_THREADS`` sets the threads (default 1: the client threads of
the served side need the other core of a two-core machine).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from benchmarks.report import emit
from clinical.cohort import read_manifest
from clinical.cohort.synthetic import generate_cohort
from clinical.ingest import ingest
from clinical.splits import split_manifest
from clinical.tracking import save_classifier
from clinical.tracking.server import free_port, wait_until_up
from clinical.training import TrainConfig, fit

THREADS = int(os.environ.get("CLINICAL_BENCH_THREADS", "1"))
CLIENTS = (1, 4, 20)
SECONDS = 10.0
WARMUP = 10


def main() -> None:
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_cohort(root / "src", size="tiny", seed=0, tasks=("radiographs",))
        task = root / "src" / "radiographs"
        ingest([task], root / "cohort", labels=task / "labels.csv", key="bench", workers=0, progress=False)
        manifest = read_manifest(root / "cohort")
        config = TrainConfig.build(model="resnet18", image_size=(224, 224), epochs=1, batch_size=8)
        result = fit(config, manifest=manifest, cohort_dir=root / "cohort",
                     split=split_manifest(manifest, folds=2, seed=0), fold=0, out=root / "run")
        model_dir = save_classifier(result, root / "model")
        encoded = base64.b64encode(sorted(task.rglob("*.dcm"))[0].read_bytes()).decode()
        frame = pd.DataFrame({"file": [encoded]})
        body = json.dumps({"dataframe_split": {"columns": ["file"], "data": [[encoded]]}}).encode()

        os.environ["CLINICAL_SERVE_THREADS"] = str(THREADS)
        model = mlflow.pyfunc.load_model(str(model_dir))
        in_process = {n: _run(lambda: (model.predict(frame), 200)[1], n) for n in CLIENTS}

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "clinical", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
             "--threads", str(THREADS)],
            env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}", path="/ping", timeout=300)
            served = {n: _run(lambda: _post(port, body), n) for n in CLIENTS}
        finally:
            server.terminate()
            server.wait(timeout=30)

    note = (f"served: clinical serve, DICOM base64 JSON over HTTP; baseline: the same pyfunc's predict in process; "
            f"{THREADS} torch thread(s) both sides, warmed up, {SECONDS:g} s per level")
    for n in CLIENTS:
        ours, base = served[n], in_process[n]
        for q in (50, 95):
            emit(f"serving_latency_p{q}_{n}_clients", ours=ours[f"p{q}"] * 1e3, baseline=base[f"p{q}"] * 1e3,
                 unit="ms", higher_is_better=False, clients=n, note=note)
        emit(f"serving_throughput_{n}_clients", ours=ours["throughput"], baseline=base["throughput"],
             unit="requests/s", higher_is_better=True, clients=n, answers=ours["answers"],
             zero_5xx=not ours["answers"].get("5xx", 0), note=note)
    errors = {k: v for n in CLIENTS for k, v in served[n]["answers"].items() if k != "2xx"}
    if errors:
        raise SystemExit(f"the server answered other than 200: {errors}")


def _run(call: Callable[[], int], clients: int) -> dict:
    """``clients`` threads call ``call`` for SECONDS after WARMUP calls each; latencies, throughput, status classes."""
    latencies: list[float] = []
    answers: dict[str, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    window: list[float] = []

    def client() -> None:
        for _ in range(WARMUP):
            call()
        barrier.wait()
        if not window:
            with lock:
                window[:] = window or [time.monotonic() + SECONDS]
        stop = window[0]
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                status = f"{call() // 100}xx"
            except OSError as error:
                status = type(error).__name__
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                answers[status] = answers.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times = np.asarray(latencies)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)),
            "throughput": len(times) / SECONDS, "answers": answers}


def _post(port: int, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


if __name__ == "__main__":
    main()
