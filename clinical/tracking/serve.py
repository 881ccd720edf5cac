"""``clinical serve``: MLflow's scoring app, behind the limits it lacks, on uvicorn.

``mlflow models serve`` cannot be made to hold for a gateway: it answers 500
for a request without a Content-Type (before the model is called) and for JSON
nested deeply enough to exhaust the recursion limit; it reads any body in full;
its timeout answers 504 while the worker thread computes on; and an error
raised by the model reaches the client either prefixed with the request's data
(``MlflowException``) or as a generic message with the reason in a stack trace
that shows server paths (anything else). None of this can be changed from
inside the model.

:func:`build_app` therefore wraps :func:`mlflow.pyfunc.scoring_server.init`
— the same parsing, routes (``/invocations``, ``/ping``, ``/health``,
``/version``) and answers for valid requests — in one ASGI layer that, for
``/invocations``:

1. refuses a missing or non-JSON Content-Type with 415, before the body;
2. refuses a body over ``max_body_bytes`` with 413, reading it only to discard it;
3. lets ``concurrency`` requests past at a time (the others wait, their bodies unread);
4. refuses JSON that does not parse or nests deeper than ``max_depth`` with 400;
5. sets a deadline that the model checks between rows and batches, so work stops
   soon after MLflow's 504 at ``timeout`` seconds;
6. answers every error with ``{"error_code", "message"}`` only: the model's own
   reason for a refused request (:class:`~clinical.tracking.pyfunc.InvalidRequestError`)
   as ``INVALID_PARAMETER_VALUE`` (400), a fixed text for what MLflow refused, and
   no stack trace, server path or payload ever.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from clinical.errors import ConfigurationError
from clinical.tracking.pyfunc import FILE_COLUMN, InvalidRequestError, RequestTimeoutError, request_deadline

__all__ = ["ServeSettings", "build_app", "serve_model"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_EXAMPLE = f'{{"dataframe_split": {{"columns": ["{FILE_COLUMN}"], "data": [["<base64 of a file>"]]}}}}'
#: Bodies up to this size are read and discarded after a 413, so that the client reads the answer rather than
#: a reset connection; larger ones are cut off.
_DRAIN_LIMIT = 1 << 30

#: What the model said about the request being served, written by :class:`_RecordingModel` in MLflow's worker
#: thread (which runs in a copy of this context, so it shares the dict).
_outcome: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("serve_outcome", default=None)


@dataclass(frozen=True)
class ServeSettings:
    """The HTTP limits of :func:`build_app`; the model's own limits are :class:`~clinical.tracking.ServingLimits`.

    Parameters
    ----------
    max_body_bytes
        Largest request body; more is answered 413.
    max_depth
        Deepest JSON nesting (a valid request nests 4 deep).
    timeout
        Seconds one request may take, waiting included; after it, 504 and the work stops at the next row or batch.
    concurrency
        Requests parsed and predicted at once; the others wait with their bodies unread (bounding memory).
    max_connections
        Open connections uvicorn accepts; beyond them it answers 503.
    """

    max_body_bytes: int = 64 << 20
    max_depth: int = 16
    timeout: float = 60.0
    concurrency: int = 2
    max_connections: int = 128

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_depth", "concurrency", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"The serve setting {name!r} must be a positive integer. Got {value!r}.")
        if not self.timeout > 0:
            raise ConfigurationError(f"The serve setting 'timeout' must be positive seconds. Got {self.timeout!r}.")


class _RecordingModel:
    """The pyfunc model as MLflow's app sees it, noting why a prediction failed for the outer layer."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.metadata = model.metadata

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        from mlflow.exceptions import MlflowException

        outcome = _outcome.get()
        record = outcome if outcome is not None else {}
        try:
            return self._model.predict(data, params=params)
        except InvalidRequestError as error:
            record["refused"] = str(error)
            raise
        except RequestTimeoutError:
            record["timeout"] = "stopped"
            raise
        except MlflowException:  # MLflow's schema enforcement; its message lists what was sent
            record["refused"] = (
                f"The request does not match the model's input: one string column {FILE_COLUMN!r} of "
                f"base64-encoded files, e.g. {_EXAMPLE}."
            )
            raise
        except Exception:
            logger.exception("The model failed on a request")  # the trace stays in the server log
            record["failed"] = "model"
            raise


class _Guard:
    """The ASGI layer in front of MLflow's scoring app (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != "/invocations" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if content_type.split(";")[0].strip().lower() != "application/json":
            got = f"got {content_type[:60]!r}" if content_type else "the request has none"
            await _drain(receive, _DRAIN_LIMIT)
            await _answer(send, 415, "BAD_REQUEST", f"Send Content-Type: application/json ({got}) and a body "
                          f"such as {_EXAMPLE}.")
            return
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _drain(receive, _DRAIN_LIMIT)
            await _answer(send, 413, "REQUEST_LIMIT_EXCEEDED", _too_large(limit))
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.concurrency)
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.settings.timeout)
        except TimeoutError:
            await _answer(send, 503, "TEMPORARILY_UNAVAILABLE",
                          f"The server is busy: no slot within {self.settings.timeout:g} s. Retry later.")
            return
        try:
            await self._serve(scope, receive, send, started)
        finally:
            self._slots.release()

    async def _serve(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        body = await _read_body(receive, self.settings.max_body_bytes)
        if body is None:
            await _answer(send, 413, "REQUEST_LIMIT_EXCEEDED", _too_large(self.settings.max_body_bytes))
            return
        problem = await asyncio.to_thread(_json_problem, body, self.settings.max_depth)
        if problem:
            await _answer(send, 400, "MALFORMED_REQUEST", f"{problem} Send a body such as {_EXAMPLE}.")
            return
        remaining = self.settings.timeout - (time.monotonic() - started)
        outcome: dict[str, str] = {}
        tokens = (_outcome.set(outcome), request_deadline.set(time.monotonic() + remaining))
        response = _Captured()
        try:
            await self.app(scope, _replay(body, receive), response.send)
        finally:
            _outcome.reset(tokens[0])
            request_deadline.reset(tokens[1])
        if response.status == 200:
            await response.forward(send)
        elif "refused" in outcome:
            await _answer(send, 400, "INVALID_PARAMETER_VALUE", outcome["refused"])
        elif response.status == 504 or "timeout" in outcome:
            await _answer(send, 504, "DEADLINE_EXCEEDED",
                          f"The request took longer than {self.settings.timeout:g} s and was stopped; "
                          f"send fewer rows per request.")
        elif "failed" in outcome or response.status >= 500:
            await _answer(send, 500, "INTERNAL_ERROR", "The model failed on this request; the server log says why.")
        else:  # MLflow refused the body: its message may quote the request, so it is replaced
            await _answer(send, response.status, "BAD_REQUEST",
                          f"The body is not a table the scoring server can read. Send {_EXAMPLE}.")


class _Captured:
    """An ASGI ``send`` that keeps the response, to be forwarded or replaced."""

    def __init__(self) -> None:
        self.status = 500
        self.messages: list[MutableMapping[str, Any]] = []

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        self.messages.append(message)

    async def forward(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replayed() -> MutableMapping[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The body, or ``None`` once it passes ``limit`` (the rest is read and dropped)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            chunks.clear()
            if message.get("more_body", False):
                await _drain(receive, _DRAIN_LIMIT)
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _drain(receive: Receive, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _json_problem(body: bytes, max_depth: int) -> str | None:
    """Why ``body`` is not a JSON object of at most ``max_depth`` levels, or ``None``."""
    try:
        parsed = json.loads(body)
    except RecursionError:
        return f"The JSON nests deeper than {max_depth} levels."
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "it is not UTF-8"
        return f"The body is not valid JSON ({reason})."
    if not isinstance(parsed, dict):
        return "The body must be a JSON object."
    stack = [(parsed, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            return f"The JSON nests deeper than {max_depth} levels."
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return None


def _too_large(limit: int) -> str:
    return f"The body is larger than {limit / (1 << 20):.1f} MiB; send fewer or smaller files per request."


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def build_app(model: str | Any, settings: ServeSettings | None = None) -> ASGIApp:
    """MLflow's scoring app for ``model`` (a URI such as ``models:/NAME@champion``, or a loaded pyfunc), guarded.

    The pyfunc's own limits (rows, file bytes, threads) come from the model and
    ``CLINICAL_SERVE_*``: set them before this call, which loads the model.
    """
    from mlflow.pyfunc import scoring_server

    from clinical.tracking.versions import load_pyfunc

    settings = settings or ServeSettings()
    loaded = load_pyfunc(model) if isinstance(model, str) else model
    # MLflow reads its timeout when the app is built: the same as ours, so its 504 and our deadline agree.
    os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(max(1, round(settings.timeout)))
    return _Guard(scoring_server.init(_RecordingModel(loaded)), settings)


def serve_model(model_uri: str, *, host: str = "127.0.0.1", port: int = 5001,
                settings: ServeSettings | None = None) -> None:
    """Serve ``model_uri`` with :func:`build_app` on uvicorn until interrupted (one process)."""
    import uvicorn

    settings = settings or ServeSettings()
    app = build_app(model_uri, settings)
    logger.info("Serving %s on http://%s:%d/invocations", model_uri, host, port)
    uvicorn.run(app, host=host, port=port, limit_concurrency=settings.max_connections, timeout_keep_alive=5,
                access_log=False, log_level="info")
