"""The local HTTP endpoint: MLflow-compatible `/invocations`, `/health` and `/feedback` in front of one pyfunc.

Every predicted document gets a prediction id; the last predictions are kept in memory so feedback can refer
to them by id alone. Bad requests get a 4xx JSON `{"error": ...}`; nothing a client sends can crash the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from threading import Lock

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from registry.contract import LABEL_SET, input_texts
from registry.loading import load_pyfunc
from registry.locations import feedback_db_url
from registry.lookup import registered_version
from serving.access_log import AccessLog
from serving.fast_route import INTERNAL_ERROR, FastRoute
from serving.feedback import FeedbackStore, FeedbackWriter
from serving.follow import ModelSlot
from serving.inference_log import InferenceLog
from serving.scoring import PayloadError, answer, decode_json, failure
from validation.feedback_rules import scores_ok

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A pyfunc with the coordinates feedback is filed under: a registered model's name and version (an alias
    becomes a concrete version), or for an unregistered model its URI and its logged-model (else run) id."""

    pyfunc: object
    name: str
    version: str
    labels: tuple[str, ...] = ()  # the model's own label set: feedback on a forgotten prediction is checked against it

    @property
    def info(self) -> dict:
        return {"name": self.name, "version": self.version}


def load_model(model_uri: str) -> LoadedModel:
    """Load `models:/name@alias`, `models:/name/N`, `models:/m-<id>`, `runs:/...` or a path."""
    resolved = registered_version(model_uri)
    if resolved is not None:
        name, version = resolved
        pyfunc = load_pyfunc(f"models:/{name}/{version}")
    else:  # not a registered version: models:/m-<id> (a logged model), runs:/..., a local path
        pyfunc = load_pyfunc(model_uri)
        name = model_uri
        version = getattr(pyfunc.metadata, "model_id", None) or pyfunc.metadata.run_id or "unregistered"
    return LoadedModel(pyfunc, name, str(version), own_labels(pyfunc))


def own_labels(pyfunc) -> tuple[str, ...]:
    """The label set the model answers with (its scores' keys), read once by scoring one probe text."""
    out = pyfunc.predict(pd.DataFrame({"text": ["label set probe"]}))
    return tuple(out.iloc[0]["scores"])


class RecentPredictions:
    """Bounded memory of what was predicted, so `/feedback` needs only a prediction id and a score."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = Lock()

    def add(self, prediction_id: str, record: dict) -> None:
        with self._lock:
            self._items[prediction_id] = record
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, prediction_id: str) -> dict | None:
        with self._lock:
            return self._items.get(prediction_id)


@dataclass(frozen=True)
class EndpointSettings:
    """Limits bound one request's work: a body, its documents and labels, its time; the CLI reads these defaults."""

    api_key: str | None = None  # never logged; read from the environment variable the CLI names
    max_body_bytes: int = 1_048_576
    feedback_db: str | None = None  # SQLAlchemy URL of the feedback store (None: its default)
    remember: int = 10_000  # predictions kept for feedback by id
    max_rows: int = 256  # documents per request (413 above): MiniLM scores ~60 short documents per CPU-second
    max_labels: int = 64  # label_descriptions per request (422 above), within every label set's (contract.LIMITS)
    request_timeout_s: float = 60.0  # a prediction still running after this is answered 503
    max_pending: int = 64  # predictions admitted at once (running or queued); more are answered 503 at once
    body_timeout_s: float = 30.0  # the whole body must arrive within this (408)
    header_timeout_s: float = 10.0  # a connection must send its request head within this, or is closed
    inference_log: str | None = None  # SQLAlchemy URL of the inference log; None: none kept (the CLI keeps one)
    log_text: str = "text"  # text | hash: what the inference log keeps of each document
    log_retention_days: float = 30.0  # inference-log rows older than this are deleted


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Rejected(Exception):
    """A request refused before it is read (auth, size); answered with its status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client disconnected before its body was complete (after the bytes in its argument)."""


def create_app(model: LoadedModel | ModelSlot, settings: EndpointSettings = EndpointSettings()):
    """The ASGI app over one model, or over a slot whose model a DeploymentFollower swaps: each request reads the
    slot once, so it is answered by one model from start to end. `POST /feedback` is answered in plain ASGI in
    front of FastAPI (`FastRoute`), which serves the rest; the access log sees both."""
    slot = model if isinstance(model, ModelSlot) else ModelSlot(model)
    inference_log = (
        InferenceLog(settings.inference_log, settings.log_text == "text", settings.log_retention_days)
        if settings.inference_log
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await run_in_threadpool(feedback_writer.close)  # feedback queued is written before exit
        if inference_log:  # the rows still queued are written before the server exits
            await run_in_threadpool(inference_log.close)

    app = FastAPI(title="dual-encoder classifier", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    recent = RecentPredictions(settings.remember)
    pending = 0  # predictions admitted and not yet answered (read and written on the event loop only)

    # opened with the app: a first /feedback would otherwise pay for the schema (~100 ms)
    feedback_writer = FeedbackWriter(FeedbackStore(settings.feedback_db or feedback_db_url()))

    async def read_body(scope: dict, receive) -> bytes:
        """The body, read in plain ASGI; Rejected when the request is unauthorised, too large, too slow or
        abandoned."""
        if settings.api_key and not _authorised(scope, settings.api_key):
            raise Rejected(401, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise Rejected(413, f"body of {declared} bytes exceeds the limit of {settings.max_body_bytes} bytes")
        chunks: list[bytes] = []

        async def receive_all() -> None:
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone(size)
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                if size > settings.max_body_bytes:
                    raise Rejected(413, f"body exceeds the limit of {settings.max_body_bytes} bytes")
                if not message.get("more_body", False):
                    return

        try:
            await asyncio.wait_for(receive_all(), settings.body_timeout_s)
        except asyncio.TimeoutError:
            raise Rejected(408, f"the body did not arrive within {settings.body_timeout_s:g} s") from None
        except ClientGone as gone:
            client = scope.get("client")
            log.warning(
                "%s disconnected after %d bytes of its %s body; request dropped",
                client[0] if client else "a client",
                gone.args[0],
                scope["path"],
            )
            raise Rejected(400, "client disconnected before the body was complete") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def feedback_answer(scope: dict, receive) -> tuple[int, dict]:
        """(status, JSON body) for one POST /feedback: 201 only once the row is committed."""
        try:
            record, label_names = feedback_record(decode_json(await read_body(scope, receive)), recent, slot.current)
        except (Rejected, PayloadError) as exc:
            return exc.status, {"error": str(exc)}
        reasons = await feedback_writer.submit(record, label_names)  # the store's checks: labels, duplicates...
        if reasons:
            return 422, {"error": "; ".join(reasons)}
        return 201, {"stored": True, "prediction_id": record["prediction_id"]}

    @app.get("/health")
    @app.get("/ping")
    def health() -> dict:
        return {"status": "ok", "model": slot.current.info}

    @app.post("/invocations")
    async def invocations(request: Request):
        nonlocal pending
        body = await read_body(request.scope, request.receive)
        model = slot.current
        if pending >= settings.max_pending:  # shed load: a queue this long only adds latency for everyone
            return JSONResponse(
                {"error": f"server busy: {pending} predictions in progress; retry shortly"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        pending += 1
        started = time.perf_counter()
        try:
            frame, predictions = await asyncio.wait_for(
                run_in_threadpool(answer, model.pyfunc, body, settings.max_rows, settings.max_labels),
                settings.request_timeout_s,
            )
        except asyncio.TimeoutError:
            log.warning("a prediction took longer than %g s", settings.request_timeout_s)
            return error(
                503,
                f"the prediction took longer than {settings.request_timeout_s:g} s; send fewer documents "
                "or labels per request",
            )
        except Exception as exc:  # noqa: BLE001 - a request must never take the server down
            return error(*failure(exc))
        finally:
            pending -= 1
        texts = _texts(frame, model.pyfunc)
        for p, text in zip(predictions, texts):
            recent.add(
                p["prediction_id"],
                {"text": text, "labels": p["labels"], "scores": p["scores"], "model_version": model.version},
            )  # the swap may change the model
        if inference_log:
            at, latency_ms = datetime.now(timezone.utc), 1000 * (time.perf_counter() - started)
            inference_log.append(
                [
                    {
                        "prediction_id": p["prediction_id"],
                        "model_name": model.name,
                        "model_version": model.version,
                        "text": text,
                        "labels": p["labels"],
                        "scores": p["scores"],
                        "label_set": p[LABEL_SET],
                        "latency_ms": latency_ms,
                        "at": at,
                    }
                    for p, text in zip(predictions, texts)
                ]
            )
        return {"predictions": predictions, "model": model.info}

    @app.post("/feedback")  # what FastRoute does not take (a redirect from /feedback/) still gets the same answer
    async def feedback(request: Request):
        status, payload = await feedback_answer(request.scope, request.receive)
        return JSONResponse(payload, status_code=status)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected):
        return error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # pragma: no cover - last line of defence
        log.exception("unhandled error")
        return error(500, INTERNAL_ERROR)

    return AccessLog(FastRoute(app, "/feedback", feedback_answer))


def _header(scope: dict, name: bytes) -> str | None:
    """The first value of header `name` (lower case, as ASGI servers pass names)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _authorised(scope: dict, key: str) -> bool:
    given = _header(scope, b"x-api-key") or ""
    auth = _header(scope, b"authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def _texts(frame, pyfunc) -> list[str]:
    """The texts the model scored, joined from its own text columns as in training: what feedback will store."""
    schema = pyfunc.metadata.get_input_schema()
    return input_texts(frame, [n for n in (schema.input_names() if schema else []) if n != "text"])


FEEDBACK_FIELDS = ("prediction_id", "score", "corrected_labels", "source", "text", "predicted_labels", "scores")


def feedback_record(payload: dict, recent: RecentPredictions, model: LoadedModel) -> tuple[dict, list[str]]:
    """(feedback-store record, the label names it is checked against) from a request: what was predicted comes
    from memory (its labels: those it was scored on), or from the request (the model's own labels)."""
    unknown = set(payload) - set(FEEDBACK_FIELDS)
    if unknown:
        raise PayloadError(f"unknown feedback field(s) {sorted(unknown)}; allowed: {list(FEEDBACK_FIELDS)}")
    prediction_id = payload.get("prediction_id")
    if not isinstance(prediction_id, str) or not prediction_id:
        raise PayloadError("feedback needs a 'prediction_id' (string) from a /invocations answer")
    score = payload.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise PayloadError(f"'score' must be an integer from 1 to 5, got {json.dumps(score)}")
    corrected = payload.get("corrected_labels")
    if corrected is not None and not (isinstance(corrected, list) and all(isinstance(l, str) for l in corrected)):
        raise PayloadError("'corrected_labels' must be a list of label names")
    source = payload.get("source")
    if source is not None and not isinstance(source, str):
        raise PayloadError(f"'source' must be a string, got {type(source).__name__}")
    known = recent.get(prediction_id)
    if known is None:
        if not isinstance(payload.get("text"), str) or not isinstance(payload.get("predicted_labels"), list):
            raise PayloadError(
                f"prediction {prediction_id[:200]} is not in this server's memory: send 'text' and "
                "'predicted_labels' with the feedback"
            )
        scores = payload.get("scores") or {}
        if not scores_ok(scores):
            raise PayloadError("'scores' must map label names to numbers from 0 to 1")
        known, label_names = (
            {"text": payload["text"], "labels": payload["predicted_labels"], "scores": scores},
            list(model.labels),
        )
    else:
        label_names = list(known["scores"])
    record = {
        "prediction_id": prediction_id,
        "model_name": model.name,
        "model_version": known.get("model_version", model.version),  # the version that answered, if known
        "text": known["text"],
        "predicted_labels": known["labels"],
        "scores": known["scores"],
        "score": score,
        "corrected_labels": corrected,
        "source": source or "endpoint",
    }
    return record, label_names
