"""The served model against the raw network, on the same DICOM inputs, in the same run.

1. Latency: p50 and p95 of one-image requests to ``mlflow models serve``
   (DICOM bytes in, probabilities out: decode, window, resize, forward)
   against the network's forward pass alone on the same preprocessed image.
2. Load: 20 concurrent clients for 60 s on 127.0.0.1; counts answers by
   status class and requires zero 5xx.

Run: ``python -m benchmarks bench_serving`` (about 3 minutes with set-up).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from benchmarks.report import emit
from clinical.cohort import read_manifest
from clinical.cohort.synthetic import generate_cohort
from clinical.ingest import ingest
from clinical.splits import split_manifest
from clinical.tracking import save_classifier
from clinical.tracking.runs import load_registered
from clinical.tracking.server import free_port, wait_until_up
from clinical.training import TrainConfig, fit

CLIENTS = 20
LOAD_SECONDS = 60.0
LATENCY_REQUESTS = 200


def main() -> None:
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
        files = [task / manifest["source"].iloc[i][0] for i in range(len(manifest))]
        payloads = [json.dumps({"dataframe_split": {"columns": ["file"], "data": [[base64.b64encode(
            f.read_bytes()).decode()]]}}).encode() for f in files]

        network, spec = load_registered(str(model_dir))
        image = torch.rand(1, spec["in_channels"], *spec["image_size"])
        raw = _latencies(lambda: _forward(network, image), LATENCY_REQUESTS)

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
             "--host", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/invocations"
            wait_until_up(f"http://127.0.0.1:{port}", path="/ping", timeout=300)
            served = _latencies(lambda: _post(url, payloads[0]), LATENCY_REQUESTS)
            for q in (50, 95):
                emit(f"serving_latency_p{q}", ours=float(np.percentile(served, q)) * 1e3,
                     baseline=float(np.percentile(raw, q)) * 1e3, unit="ms", higher_is_better=False,
                     note="served: DICOM bytes→probabilities over HTTP; baseline: network forward only")
            counts = _load(url, payloads)
            total = sum(counts.values())
            emit("serving_load_20_clients", ours=total / LOAD_SECONDS, baseline=1.0 / float(np.median(raw)),
                 unit="requests/s", higher_is_better=True, clients=CLIENTS, seconds=LOAD_SECONDS,
                 answers=counts, zero_5xx=counts.get("5xx", 0) == 0,
                 note="baseline: one forward pass at a time in process")
            if counts.get("5xx", 0) or counts.get("error", 0):
                raise SystemExit(f"server errors under load: {counts}")
        finally:
            server.terminate()
            server.wait(timeout=30)


def _forward(network: torch.nn.Module, image: torch.Tensor) -> None:
    with torch.inference_mode():
        network(image)


def _latencies(call, n: int) -> np.ndarray:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _load(url: str, payloads: list[bytes]) -> dict[str, int]:
    """CLIENTS threads post in a loop until LOAD_SECONDS pass; answers counted by status class."""
    counts: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + LOAD_SECONDS

    def client(index: int) -> None:
        i = index
        while time.monotonic() < stop:
            try:
                status = f"{_post(url, payloads[i % len(payloads)]) // 100}xx"
            except (urllib.error.URLError, OSError):
                status = "error"
            with lock:
                counts[status] = counts.get(status, 0) + 1
            i += CLIENTS

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts



if __name__ == "__main__":
    main()
