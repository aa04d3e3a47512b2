"""The local HTTP endpoint: MLflow-compatible `/invocations`, `/health` and `/feedback` in front of one pyfunc.

Every predicted document gets a prediction id; the last predictions are kept in memory so feedback can refer
to them by id alone. Bad requests get a 4xx JSON `{"error": ...}`; nothing a client sends can crash the server.
"""
from __future__ import annotations

import functools
import hmac
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock

import mlflow
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from serving.follow import ModelSlot
from serving.scoring import PayloadError, client_message, decode_json, is_client_error, parse_request, predict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A pyfunc with the registry coordinates it was resolved to (an alias becomes a concrete version)."""

    pyfunc: object
    name: str
    version: str

    @property
    def info(self) -> dict:
        return {"name": self.name, "version": self.version}


def load_model(model_uri: str) -> LoadedModel:
    """Load `models:/name@alias` or `models:/name/N` and remember which version is served."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = mlflow.MlflowClient()
    if model_uri.startswith("models:/"):
        resolved = get_model_name_and_version(client, model_uri)
        if len(resolved) == 1:  # models:/m-<id> (a logged model, not a registered version)
            return LoadedModel(mlflow.pyfunc.load_model(model_uri), resolved[0], "")
        name, version = resolved
        uri = f"models:/{name}/{version}"
    else:
        name, version, uri = model_uri, "", model_uri
    return LoadedModel(mlflow.pyfunc.load_model(uri), name, str(version))


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
    api_key: str | None = None  # never logged; read from the environment variable the CLI names
    max_body_bytes: int = 1_048_576
    feedback_db: str | None = None  # SQLAlchemy URL of the feedback store (None: its default)
    remember: int = 10_000  # predictions kept for feedback by id


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Rejected(Exception):
    """A request refused before it is read (auth, size); answered with its status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(model: LoadedModel | ModelSlot, settings: EndpointSettings = EndpointSettings()) -> FastAPI:
    """The app over one model, or over a slot whose model a DeploymentFollower swaps: each request reads the
    slot once, so it is answered by one model from start to end."""
    slot = model if isinstance(model, ModelSlot) else ModelSlot(model)
    app = FastAPI(title="dual-encoder classifier", docs_url=None, redoc_url=None, openapi_url=None)
    recent = RecentPredictions(settings.remember)

    @functools.lru_cache(maxsize=1)
    def feedback_store():
        """Opened on first feedback, so a server without feedback traffic never touches the database."""
        from mlprojects.config import feedback_db_url
        from serving.feedback import FeedbackStore

        return FeedbackStore(settings.feedback_db or feedback_db_url())

    def store_feedback(record: dict) -> None:
        from serving.feedback import FeedbackRecord

        feedback_store().add(FeedbackRecord(**record), label_names=list(record["scores"]) or None)

    async def read_body(request: Request) -> bytes:
        """The body; Rejected when the request is unauthorised or too large."""
        if settings.api_key and not _authorised(request, settings.api_key):
            raise Rejected(401, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise Rejected(413, f"body of {declared} bytes exceeds the limit of {settings.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise Rejected(413, f"body exceeds the limit of {settings.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    @app.get("/ping")
    def health() -> dict:
        return {"status": "ok", "model": slot.current.info}

    @app.post("/invocations")
    async def invocations(request: Request):
        body = await read_body(request)
        model = slot.current
        try:
            frame, params = parse_request(body)
            predictions = await run_in_threadpool(predict, model.pyfunc, frame, params)
        except PayloadError as exc:
            return error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - a request must never take the server down
            if is_client_error(exc):
                return error(400, client_message(exc))
            log.exception("prediction failed")
            return error(500, "prediction failed on the server; see the server log")
        texts = _texts(frame, model.pyfunc)
        for p, text in zip(predictions, texts):
            recent.add(p["prediction_id"], {"text": text, "labels": p["labels"], "scores": p["scores"]})
        return {"predictions": predictions, "model": model.info}

    @app.post("/feedback")
    async def feedback(request: Request):
        body = await read_body(request)
        try:
            record = feedback_record(decode_json(body), recent, slot.current)
            await run_in_threadpool(store_feedback, record)
        except PayloadError as exc:
            return error(400, str(exc))
        except ValueError as exc:  # FeedbackRejected: the store's own checks (known labels, duplicate feedback...)
            return error(422, str(exc))
        return JSONResponse({"stored": True, "prediction_id": record["prediction_id"]}, status_code=201)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected):
        return error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # pragma: no cover - last line of defence
        log.exception("unhandled error")
        return error(500, "internal error; see the server log")

    return app


def _authorised(request: Request, key: str) -> bool:
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def _texts(frame, pyfunc) -> list[str]:
    """The texts the model scored, joined from its own text columns as in training: what feedback will store."""
    from registry.contract import input_texts

    schema = pyfunc.metadata.get_input_schema()
    return input_texts(frame, [n for n in (schema.input_names() if schema else []) if n != "text"])


FEEDBACK_FIELDS = ("prediction_id", "score", "corrected_labels", "source", "text", "predicted_labels", "scores")


def feedback_record(payload: dict, recent: RecentPredictions, model: LoadedModel) -> dict:
    """A feedback-store record from a request: what was predicted comes from memory, or from the request."""
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
    known = recent.get(prediction_id)
    if known is None:
        if not isinstance(payload.get("text"), str) or not isinstance(payload.get("predicted_labels"), list):
            raise PayloadError(f"prediction {prediction_id} is not in this server's memory: send 'text' and "
                               "'predicted_labels' with the feedback")
        scores = payload.get("scores") or {}
        if not isinstance(scores, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()):
            raise PayloadError("'scores' must map label names to numbers")
        known = {"text": payload["text"], "labels": payload["predicted_labels"], "scores": scores}
    return {"prediction_id": prediction_id, "model_name": model.name, "model_version": model.version,
            "text": known["text"], "predicted_labels": known["labels"], "scores": known["scores"],
            "score": score, "corrected_labels": corrected, "source": payload.get("source") or "endpoint"}

