"""What a pipeline run is asked to do, validated before any work starts (Prefect renders it as a form)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clinical.ingest.options import MAX_DEFAULT_WORKERS
from clinical.workflows import TrainConfig

__all__ = ["PipelineSettings"]


class PipelineSettings(BaseModel):
    """One cohort-to-champion run: sources, where results go, and the recipe of each stage."""

    model_config = ConfigDict(extra="forbid")

    # sources and where the stages write
    sources: list[str] = Field(description="folders or files to ingest (DICOM, NIfTI, slides, photographs)")
    labels: str | None = Field(None, description="labels CSV (see clinical.ingest.labels)")
    sites: str | None = Field(None, description="sites CSV; else InstitutionName, else the folder")
    workdir: str = Field(description="where the cohort, split, backbone and runs are written")
    ingest_options: dict[str, Any] = Field(
        default_factory=dict, description="extra clinical.ingest.ingest options (defaults: clinical.ingest.DEFAULTS)"
    )
    ingest_workers: int | None = Field(
        None, ge=0, description=f"ingest processes; None: one per CPU, at most {MAX_DEFAULT_WORKERS}"
    )

    # PACS to pull from before ingest (None: ingest `sources`); credentials from CLINICAL_PACS_USER/_PASSWORD
    pacs: str | None = Field(None, description="dicomweb+http://host:port/dicom-web or dimse://AET@host:port")
    pacs_since: str | None = Field(None, description="first study date YYYY-MM-DD (None: any)")
    pacs_until: str | None = Field(None, description="last study date YYYY-MM-DD (None: any)")
    pacs_modalities: list[str] = Field(default_factory=list, description="modalities in study, e.g. CR, DX")
    pacs_accessions: str | None = Field(None, description="CSV with an accession_number column")
    pacs_patients: str | None = Field(None, description="CSV with a patient_id column")

    # split and audit
    folds: int = Field(3, ge=2)
    seed: int = 0
    split_by: Literal["patient", "study"] = "patient"
    gate_size: float = Field(0.15, ge=0, lt=0.5, description="share of patients locked away for the promotion gate")
    audit_inflation: bool = Field(True, description="measure what an item-level split would have inflated")

    # self-supervised pretraining (None: start from `train.pretrained` or from scratch)
    pretrain_method: Literal["simclr", "byol"] | None = "simclr"
    pretrain_epochs: int = Field(5, ge=1)
    pretrain_batch_size: int = Field(64, ge=2)

    # fine-tuning recipe (clinical.training.TrainConfig fields)
    train: dict[str, Any] = Field(default_factory=dict)

    # tracking and registry
    experiment: str = "clinical"
    model_name: str = Field("clinical-classifier", description="registered model name in MLflow")
    final_model: Literal["refit", "best-fold"] = Field(
        "refit", description="the model registered: refit on every development patient, or the best fold's"
    )
    gate_margin: float | None = Field(
        None, description="promote when the 95% CI lower bound of the AUROC gain on the gate set exceeds this (None: 0)"
    )
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples for the CIs")

    @field_validator("train")
    @classmethod
    def _valid_recipe(cls, value: dict[str, Any]) -> dict[str, Any]:
        TrainConfig.build(**value)  # raises ConfigurationError naming the field
        return value

    def recipe(self, *, pretrained: str | None) -> TrainConfig:
        """The fine-tuning recipe, starting from ``pretrained`` when pretraining ran."""
        values = dict(self.train)
        if pretrained is not None:
            values["pretrained"] = pretrained
        return TrainConfig.build(**values)

    def path(self, *parts: str) -> str:
        return str(Path(self.workdir).joinpath(*parts))
