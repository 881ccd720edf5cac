"""The six studies the platform redoes, one function each: ``run_study("petct", out)``.

Each study runs its arms on the synthetic analogue by default (``size="tiny"`` for the tests,
``"full"`` for the figures in ``docs/studies.md``), or on the user's ingested cohort
(``cohort=``; ``docs/studies.md`` says what each study needs in it), and ends with a table laid
out like the paper's (:class:`~clinical.workflows.studies.arms.StudyResult`), one summary figure,
and, with a tracker, one MLflow run holding every arm's runs.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from clinical.errors import ConfigurationError
from clinical.tracking import MlflowTracker
from clinical.workflows.studies.arms import StudyResult

__all__ = ["STUDIES", "STUDY_SIZES", "StudyResult", "run_study"]

#: Study name → module holding its ``run`` and ``TITLE``.
STUDIES = {
    "bpd": "clinical.workflows.studies.bpd",
    "petct": "clinical.workflows.studies.petct",
    "brain-mr": "clinical.workflows.studies.brain_mr",
    "retinopathy": "clinical.workflows.studies.retinopathy",
    "papyri": "clinical.workflows.studies.papyri",
    "kimianet": "clinical.workflows.studies.kimianet",
}
#: ``tiny``: seconds to a minute, what the tests run; ``full``: the figures of docs/studies.md (minutes on CPU).
STUDY_SIZES = ("tiny", "full")


def run_study(
    name: str,
    out: str | Path,
    *,
    size: str = "tiny",
    cohort: str | Path | None = None,
    seed: int = 0,
    tracker: MlflowTracker | None = None,
    ray_address: str | None = None,
    **options: Any,
) -> StudyResult:
    """Run study ``name``'s arms into ``out`` and return its table (also ``out/table.md`` and ``out/table.csv``).

    Parameters
    ----------
    size
        One of :data:`STUDY_SIZES`: the synthetic cohort and the training budget.
    cohort
        An ingested cohort to run on instead of the synthetic analogue.
    tracker
        With a tracker, the study opens one MLflow run and every arm nests under it.
    ray_address
        Train every arm's folds as tasks of this Ray cluster (see :func:`~clinical.workflows.cross_validate`);
        the arms still run one after the other. A study that does not cross-validate through it (kimianet)
        refuses it.
    options
        Study-specific settings (see each study's ``run``); an unknown one raises ``ConfigurationError``.
    """
    if name not in STUDIES:
        raise ConfigurationError(f"unknown study {name!r}; choose one of {sorted(STUDIES)}.")
    if size not in STUDY_SIZES:
        raise ConfigurationError(f"size must be one of {list(STUDY_SIZES)}; got {size!r}.")
    module = importlib.import_module(STUDIES[name])
    parameters = inspect.signature(module.run).parameters
    allowed = [p for p in parameters if p not in ("out", "size", "cohort", "seed", "tracker", "ray_address")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigurationError(f"study {name!r} has no option {', '.join(unknown)}; its options: {allowed}.")
    if ray_address is not None:
        if "ray_address" not in parameters:
            raise ConfigurationError(f"study {name!r} trains its arms in this process; it cannot run on a cluster.")
        options["ray_address"] = ray_address
    if tracker is not None:
        tracker = tracker.open_study(name, tags={"clinical.study_size": size})
    return module.run(Path(out), size=size, cohort=cohort, seed=seed, tracker=tracker, **options)
