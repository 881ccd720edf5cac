"""What one fit returns and writes next to its checkpoints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clinical.evaluation.report import summarize_folds
from clinical.training.config import TrainConfig

__all__ = ["FitResult", "load_result", "summarize"]


@dataclass
class FitResult:
    """The outcome of one fit (one fold).

    Attributes
    ----------
    fold
        Split fold trained on.
    classes
        Class names in class-index order.
    best_epoch, best_score
        Epoch (0-based) of the chosen model and its validation AUROC at ``config.monitor_level``.
    epochs_run
        Epochs trained, counting those before a resume.
    stopped_early
        True when early stopping ended the run before ``config.epochs``.
    history
        One dict per epoch: the metrics and schedule state given to the callbacks.
    val_metrics, test_metrics
        ``clinical.evaluation.score`` of the best model on the fold's validation and test
        items at the monitored level (``test_metrics`` is empty when the fold has no test part).
    val_predictions, test_predictions
        Predictions frames of the best model (item level).
    out
        Run folder: ``config.json``, ``result.json``, ``checkpoints/{last,best}.pt``,
        ``predictions_{val,test}.parquet``.
    """

    fold: int
    classes: list[str]
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    val_predictions: pd.DataFrame
    test_predictions: pd.DataFrame | None
    config: TrainConfig
    out: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_checkpoint(self) -> Path:
        return self.out / "checkpoints" / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no frames)."""
        return {
            "fold": self.fold,
            "classes": self.classes,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "val_metrics": self.val_metrics,
            "test_metrics": self.test_metrics,
            "history": self.history,
            "config": self.config.model_dump(mode="json"),
            **self.extra,
        }

    def save(self) -> None:
        """Write ``result.json`` and the prediction frames into :attr:`out`."""
        (self.out / "result.json").write_text(json.dumps(self.summary(), indent=2, default=_plain))
        self.val_predictions.to_parquet(self.out / "predictions_val.parquet", index=False)
        if self.test_predictions is not None:
            self.test_predictions.to_parquet(self.out / "predictions_test.parquet", index=False)


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"Not JSON-serialisable: {type(value).__name__}")


def load_result(out: str | Path) -> FitResult:
    """Read back what :meth:`FitResult.save` wrote into a run folder (later stages read files, not objects)."""
    out = Path(out)
    summary = json.loads((out / "result.json").read_text())
    test = out / "predictions_test.parquet"
    known = {"fold", "classes", "best_epoch", "best_score", "epochs_run", "stopped_early", "history", "val_metrics",
             "test_metrics", "config"}
    return FitResult(
        fold=summary["fold"],
        classes=summary["classes"],
        best_epoch=summary["best_epoch"],
        best_score=summary["best_score"],
        epochs_run=summary["epochs_run"],
        stopped_early=summary["stopped_early"],
        history=summary["history"],
        val_metrics=summary["val_metrics"],
        test_metrics=summary["test_metrics"],
        val_predictions=pd.read_parquet(out / "predictions_val.parquet"),
        test_predictions=pd.read_parquet(test) if test.is_file() else None,
        config=TrainConfig.model_validate(summary["config"]),
        out=out,
        extra={k: v for k, v in summary.items() if k not in known},
    )


def summarize(results: Sequence[FitResult], *, part: str = "test") -> dict[str, dict[str, float]]:
    """Mean ± SD over folds of each metric of ``part`` (``"test"`` or ``"val"``); see
    :func:`clinical.evaluation.summarize_folds`."""
    return summarize_folds([r.test_metrics if part == "test" else r.val_metrics for r in results])
