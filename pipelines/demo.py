"""`make demo`: the whole pipeline on the embedded defaults.

Synthetic multi-site radiographs → ingest → patient-level split and leakage
audit → SimCLR pretraining → progressive fine-tuning over the folds →
evaluation with CIs → a registered champion in a local MLflow (SQLite), run
as Prefect flows (Prefect's temporary server unless PREFECT_API_URL is set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from clinical.cli.synth import format_summary
from clinical.cohort.synthetic import generate_cohort
from clinical.evaluation.report import format_metric
from pipelines.settings import PipelineSettings

#: The demo recipe: small enough for about ten minutes on two CPU cores, large enough to mean something.
DEMO_TRAIN = {
    "model": "resnet18",
    "image_size": [64, 64],
    "epochs": 8,
    "unfreeze_every": 2,
    "batch_size": 32,
    "lr": 2e-3,
    "layer_decay": 0.5,
    "cutmix_alpha": 1.0,
    "mix_prob": 0.5,
    "early_stopping_patience": 4,
}


def demo_settings(workdir: Path, *, size: str) -> PipelineSettings:
    """Settings of the demo run; the synthetic cohort is written under ``workdir/synthetic`` first."""
    source = workdir / "synthetic"
    if not (source / "radiographs" / "labels.csv").is_file():
        generate_cohort(source, size=size, seed=0, tasks=("radiographs",))
    print(format_summary(json.loads((source / "summary.json").read_text())))
    return PipelineSettings(
        sources=[str(source / "radiographs")],
        labels=str(source / "radiographs" / "labels.csv"),
        workdir=str(workdir / "pipeline"),
        folds=3,
        pretrain_epochs=3,
        train=DEMO_TRAIN,
        experiment="clinical-demo",
        model_name="clinical-radiographs",
        n_boot=1000,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo", help="where everything is written (default: ./demo)")
    parser.add_argument("--size", default="demo", choices=["tiny", "small", "demo"], help="synthetic cohort size")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # MLflow puts a SQLite store's artifacts in ./mlruns: keep them with the demo
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # slow to start on a busy laptop
    os.environ.setdefault("PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS", "2")  # the next fold starts soon
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(workdir / "prefect-results"))  # cache by outputs
    os.environ.setdefault("PREFECT_RESULTS_DEFAULT_SERIALIZER", "json")  # results are data, never cloudpickle

    from prefect.client.orchestration import get_client  # after the settings above: they shape the temporary server

    from pipelines.flows import cohort_to_champion

    settings = demo_settings(workdir, size=args.size)
    with get_client(sync_client=True) as client:  # folds share two CPU cores: one at a time, as on one GPU
        if not any(limit.tag == "gpu" for limit in client.read_concurrency_limits(limit=100, offset=0)):
            client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
    result = cohort_to_champion(settings)
    _print_summary(result, os.environ["MLFLOW_TRACKING_URI"])
    from clinical.workflows import report_model

    model = result["model"]
    report = report_model(f"models:/{model['name']}/{model['version']}", workdir / "report",
                          intended_use="Demonstration on synthetic radiographs: not for any clinical use.", pdf=None)
    print(f"Report:      {report.html}" + (f" and {report.pdf}" if report.pdf else
                                            " (no PDF: no headless Chromium installed; see infra/system-packages.sh)"))
    return 0


def _print_summary(result: dict, tracking_uri: str) -> None:
    cohort, evaluation, model = result["cohort"], result["evaluation"], result["model"]
    print()
    print(f"Cohort: {cohort['items']} items; ingested {cohort['ingested']} + rejected {cohort['rejected']} "
          f"+ skipped {cohort['skipped']} = found {cohort['found']} files")
    print("Pooled out-of-fold test metrics, patient level, 95% patient-bootstrap CIs:")
    for row in evaluation["table"]:
        print(f"  {row['metric']:<18} {format_metric(row['value'], row['low'], row['high'])}")
    print("Over folds (mean ± SD):")
    for name in ("auroc", "balanced_accuracy", "f1"):
        values = evaluation["summary"].get(name)
        if values:
            print(f"  {name:<18} {values['mean']:.2f} ± {values['sd']:.2f}")
    how = {"refit": "refit on every development patient", "best-fold": "the best fold's model"}[model["final_model"]]
    print(f"Registered: {model['name']} version {model['version']} as @{model['alias']} ({how})")
    if model["decision"]:
        print(f"Gate:        {model['decision']['reason']}")
    else:
        print(f"Gate:        not run: the first version of {model['name']} becomes champion; a later version "
              "faces the gate on the split's gate patients (locked away at split time)")
    print()
    print(f"MLflow UI:   mlflow ui --backend-store-uri {tracking_uri}")
    print("Prefect UI:  infra/prefect-server.sh start  (this run used Prefect's temporary server)")
    print(f"Serve it:    MLFLOW_TRACKING_URI={tracking_uri} "
          f"clinical serve models:/{model['name']}@{model['alias']} --port 5001")


if __name__ == "__main__":
    sys.exit(main())
