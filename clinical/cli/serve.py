"""``clinical serve models:/NAME@alias``: the registered model over HTTP, with the limits a gateway needs."""

from __future__ import annotations

import argparse
import os

__all__ = ["add_parser"]

#: Flags that set the served model's own limits (read by the pyfunc from the environment when it loads).
_MODEL_LIMITS = {
    "max_rows": "CLINICAL_SERVE_MAX_ROWS",
    "max_file_mb": "CLINICAL_SERVE_MAX_FILE_BYTES",
    "batch_size": "CLINICAL_SERVE_BATCH_SIZE",
    "threads": "CLINICAL_SERVE_THREADS",
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "serve",
        help="serve a registered model: MLflow's scoring app behind body, content-type, nesting and time limits",
        description="Serve MODEL (models:/NAME@alias, runs:/ID/model or a folder) at /invocations with MLflow's "
        "scoring app, the same request format as `mlflow models serve`, behind the limits that command lacks: "
        "every malformed request gets a 4xx with the reason, never a stack trace or the payload.",
    )
    parser.add_argument("model", metavar="MODEL", help="models:/NAME@alias, runs:/ID/model or a model folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", "-p", type=int, default=5001, help="port (default: 5001)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request, then 504 (default: 60)")
    parser.add_argument("--max-body-mb", type=int, default=64, help="largest request body in MiB (default: 64)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="requests decoded and predicted at once; others wait unread (default: 2)")
    parser.add_argument("--max-rows", type=int, help="files per request (default: the model's, 64)")
    parser.add_argument("--max-file-mb", type=int, help="largest file in MiB (default: the model's, 64)")
    parser.add_argument("--batch-size", type=int, help="rows per forward pass (default: the model's, 16)")
    parser.add_argument("--threads", type=int,
                        help="torch threads for the forward pass (default: torch's, one per physical core)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Set the model's limits, build the app and serve until interrupted."""
    from clinical.workflows import ServeSettings, serve_model

    for name, variable in _MODEL_LIMITS.items():
        value = getattr(args, name)
        if value is not None:
            os.environ[variable] = str(value << 20 if name == "max_file_mb" else value)
    settings = ServeSettings(max_body_bytes=args.max_body_mb << 20, timeout=args.timeout,
                             concurrency=args.concurrency)
    serve_model(args.model, host=args.host, port=args.port, settings=settings)
    return 0
