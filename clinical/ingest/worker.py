"""What a worker process runs for one unit: decode it, save its arrays, return its rows; it never raises.

A module of its own so that a spawned worker imports the decoders and not the engine's pandas
(:mod:`clinical.ingest.engine` runs these in its pool, :mod:`clinical.ingest.shards` on Ray).
"""

from __future__ import annotations

import hashlib
import os
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from clinical.errors import ConfigurationError, IngestError, UnsupportedFileError
from clinical.ingest.decode import decode
from clinical.ingest.dicom import scrub_message
from clinical.ingest.options import IngestOptions
from clinical.ingest.reasons import Reason, code_of
from clinical.ingest.units import Unit

__all__ = ["ARRAYS", "Outcome", "ready", "run_unit", "run_unit_alone", "unit_rejections"]

#: The cohort's folder of decoded arrays.
ARRAYS = "arrays"

#: A unit's item rows and rejection rows (one of the two empty).
Outcome = tuple[list[dict], list[dict]]


def ready() -> None:
    """A pool's initializer, so that a worker imports this module (the scan and the decoders with it) on start."""


def run_unit(unit: Unit, options: IngestOptions, cohort: str) -> Outcome:
    """Decode one unit into items (arrays saved) or rejections (one per file); never raises."""
    items: list[dict] = []
    decoding = decode(unit, options)
    try:
        for item in decoding:
            item_id = hashlib.sha256(f"{unit.source_digest}:{item.position}".encode()).hexdigest()[:24]
            path = _save_array(Path(cohort), item_id, item.array)
            items.append({
                "item_id": item_id,
                "unit_id": unit.unit_id,
                "kind": item.kind,
                "path": path,
                "source": list(unit.files),
                "shape": [int(s) for s in item.array.shape],
                "spacing": [float(s) for s in item.spacing],
                "source_digest": unit.source_digest,
                **item.extra,
            })
        if not items:
            raise UnsupportedFileError("the file holds no image")
    except (IngestError, ConfigurationError) as error:
        return [], unit_rejections(unit, decoding.stage, str(error), code_of(error, stage=decoding.stage))
    except MemoryError:
        return [], unit_rejections(unit, decoding.stage, "out of memory while decoding", Reason.OUT_OF_MEMORY)
    except Exception as error:  # one bad unit must never stop the ingest; message scrubbed of quoted values
        reason = f"unexpected {type(error).__name__}: {scrub_message(error)}"
        return [], unit_rejections(unit, decoding.stage, reason, code_of(error, stage=decoding.stage))
    return items, []


def run_unit_alone(unit: Unit, options: IngestOptions, cohort: str, send: Connection) -> None:
    """A process of its own for one unit (a suspect in a worker's death): decode it and send its outcome."""
    send.send(run_unit(unit, options, cohort))
    send.close()


def unit_rejections(unit: Unit, stage: str, reason: str, code: Reason) -> list[dict]:
    """One rejection row per file of ``unit``."""
    return [{"unit_id": unit.unit_id, "file": name, "stage": stage, "reason": reason, "code": str(code)}
            for name in unit.files]


def _save_array(cohort: Path, item_id: str, array: np.ndarray) -> str:
    relative = f"{ARRAYS}/{item_id[:2]}/{item_id}.npy"
    target = cohort / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{item_id}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.ascontiguousarray(array))
    tmp.replace(target)
    return relative
