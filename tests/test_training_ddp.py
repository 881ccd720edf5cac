"""DDP on CPU: two processes with the gloo backend train one fold and end with the same model."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pandas as pd
import torch.distributed as dist
import torch.multiprocessing as mp
from test_data_helpers import write_toy_cohort
from test_training_helpers import TINY

from clinical.cohort.manifest import read_manifest
from clinical.splits import split_manifest
from clinical.training import TrainConfig, fit


def _worker(rank: int, world_size: int, port: int, cohort: str, split_path: str, out: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    config = TrainConfig.build(model=TINY, image_size=(16, 16), epochs=3, unfreeze_every=1, batch_size=4,
                               lr=1e-2, warmup_epochs=0, early_stopping_patience=None)
    try:
        result = fit(config, manifest=read_manifest(cohort), cohort_dir=cohort, split=pd.read_parquet(split_path),
                     fold=0, out=out)
        result.val_predictions.to_parquet(Path(out).parent / f"val-rank{rank}.parquet")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_train_in_step(tmp_path):
    manifest = write_toy_cohort(tmp_path / "cohort", patients=12)
    split_manifest(manifest, folds=3, seed=0).to_parquet(tmp_path / "split.parquet")
    args = (2, _free_port(), str(tmp_path / "cohort"), str(tmp_path / "split.parquet"), str(tmp_path / "run"))
    # spawn, not fork: after the rest of the suite the parent holds library threads, and a fork can deadlock on them.
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="spawn")
    rank0 = pd.read_parquet(tmp_path / "val-rank0.parquet")
    rank1 = pd.read_parquet(tmp_path / "val-rank1.parquet")
    pd.testing.assert_frame_equal(rank0, rank1)  # same weights on both ranks after every synchronised step
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert len(list(tmp_path.glob("run/result.json"))) == 1
