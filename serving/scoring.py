"""The one request answerer of the local endpoint and the Azure ML scoring script: parse -> predict -> errors.

Accepts MLflow's scoring payloads (`dataframe_records`, `dataframe_split`, `instances`, `inputs`, with
`params`) and Azure ML's (`input_data` as a split frame, records, columns or a list of texts). Parsing of
MLflow's forms is MLflow's own (`mlflow.pyfunc.scoring_server.infer_and_parse_data`). Needs only pandas and
mlflow-skinny, and imports nothing of ours: `score.py` carries a copy of this file, alone, into the Azure
deployment (the model's answer is taken as the contract gives it; its label sets are checked by the model).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data

log = logging.getLogger(__name__)

MLFLOW_FORMATS = ("dataframe_records", "dataframe_split", "instances", "inputs")
AZURE_FORMAT = "input_data"
PARAMS_KEY = "params"


class PayloadError(ValueError):
    """The request body cannot be read as a scoring request; answered with `status` (400) and this message."""

    status = 400


class TooManyRows(PayloadError):
    """More documents in one request than the server scores at once."""

    status = 413


class TooManyLabels(PayloadError):
    """A label set larger than the server embeds for one request."""

    status = 422


def answer(model, body: bytes | str | dict, max_rows: int | None = None, max_labels: int | None = None):
    """(the documents as read, one prediction each) for a scoring request; a PayloadError (or the model's own
    error) when it cannot be answered: `failure` says with what."""
    frame, params = parse_request(body, max_rows, max_labels)
    return frame, predict(model, frame, params)


def failure(exc: Exception) -> tuple[int, str]:
    """(status, message) for a request that could not be answered: the request's fault is a 4xx saying why;
    anything else a 500, its cause in the server's log and not in the answer."""
    if isinstance(exc, PayloadError):
        return exc.status, str(exc)
    if is_client_error(exc):
        return 400, client_message(exc)
    log.error("prediction failed", exc_info=exc)
    return 500, "prediction failed on the server; see the server log"


def _json(text: str, what: str) -> Any:
    """`text` decoded, or a PayloadError naming `what` (nesting too deep for the parser, or not JSON at all)."""
    try:
        return json.loads(text)
    except (RecursionError, ValueError) as exc:  # ValueError: JSONDecodeError, an integer too long to convert
        first_line = str(exc).split("\n")[0][:200]
        why = "nested too deeply" if isinstance(exc, RecursionError) else f"not valid JSON: {first_line}"
        raise PayloadError(f"{what} is {why}") from None


def decode_json(body: bytes | str) -> dict:
    """The body as a JSON object, or a PayloadError saying why not (empty, not UTF-8, not JSON, not an object)."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"body is not valid UTF-8: {exc}") from None
    if not body.strip():
        raise PayloadError('empty body: send a JSON object such as {"dataframe_records": [{"text": "..."}]}')
    payload = _json(body, "body")
    if not isinstance(payload, dict):
        raise PayloadError(f"body must be a JSON object, got {type(payload).__name__}")
    return payload


def parse_request(
    body: bytes | str | dict, max_rows: int | None = None, max_labels: int | None = None
) -> tuple[pd.DataFrame, dict]:
    """(input frame, pyfunc params) from a scoring request in MLflow's or Azure ML's format; more than
    `max_rows` documents or `max_labels` labels are refused before anything is parsed or embedded."""
    payload = body if isinstance(body, dict) else decode_json(body)
    formats = [k for k in (*MLFLOW_FORMATS, AZURE_FORMAT) if k in payload]
    if len(formats) != 1:
        raise PayloadError(
            f"the body needs exactly one of {[*MLFLOW_FORMATS, AZURE_FORMAT]}; got keys {sorted(payload)}"
        )
    params = _params(payload.get(PARAMS_KEY))
    if formats[0] == AZURE_FORMAT:
        data = _azure_input(payload[AZURE_FORMAT])
        params = {**_params(data.pop(PARAMS_KEY, None)), **params}
    else:
        data = {formats[0]: payload[formats[0]]}
    _check_limits(data, params, max_rows, max_labels)
    frame = _mlflow_parse(data)
    if len(frame) == 0:
        raise PayloadError("no documents in the request")
    if max_rows is not None and len(frame) > max_rows:
        raise TooManyRows(f"the request has {len(frame)} documents; this server scores at most {max_rows} per request")
    return frame, params


def _check_limits(data: dict, params: dict, max_rows: int | None, max_labels: int | None) -> None:
    """Refuse oversized work from the payload's shape alone (counting, not parsing)."""
    value = next(v for k, v in data.items() if k != PARAMS_KEY)
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        rows = len(value["data"])
    elif isinstance(value, dict):
        rows = max((len(v) for v in value.values() if isinstance(v, list)), default=1)
    else:
        rows = len(value) if isinstance(value, list) else 1
    if max_rows is not None and rows > max_rows:
        raise TooManyRows(f"the request has {rows} documents; this server scores at most {max_rows} per request")
    descriptions = params.get("label_descriptions")
    if isinstance(descriptions, str):
        descriptions = _json(descriptions, "params.label_descriptions")
    if max_labels is not None and isinstance(descriptions, dict) and len(descriptions) > max_labels:
        raise TooManyLabels(
            f"label_descriptions has {len(descriptions)} labels; this server embeds at most {max_labels} per request"
        )


def _azure_input(value: Any) -> dict:
    """Azure ML's `input_data` as the MLflow format it corresponds to."""
    if isinstance(value, dict) and "data" in value:  # split orient: {columns, index, data}
        return {
            "dataframe_split": {k: v for k, v in value.items() if k in ("columns", "index", "data")},
            PARAMS_KEY: value.get(PARAMS_KEY),
        }
    if isinstance(value, dict):  # columns: {"text": [...]}
        return {"inputs": {k: v for k, v in value.items() if k != PARAMS_KEY}, PARAMS_KEY: value.get(PARAMS_KEY)}
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return {"dataframe_records": [{"text": v} for v in value]}
    if isinstance(value, list):
        return {"dataframe_records": value}
    raise PayloadError(
        "input_data must be {columns, data}, {column: [values]}, a list of records or a list of texts; "
        f"got {type(value).__name__}"
    )


def _mlflow_parse(data: dict) -> pd.DataFrame:
    try:
        frame = infer_and_parse_data(data)
    except RecursionError:
        raise PayloadError("cannot read the input as a table: it is nested too deeply") from None
    except (MlflowException, ValueError, TypeError, KeyError, AttributeError) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise PayloadError(
            f"cannot read the input as a table: {message.splitlines()[0] if message else exc!r}"
        ) from None
    if not isinstance(frame, pd.DataFrame):
        try:
            frame = pd.DataFrame(frame)
        except (ValueError, TypeError, RecursionError) as exc:
            raise PayloadError(f"cannot read the input as a table: {exc}") from None
    return frame


def _params(value: Any) -> dict:
    """Pyfunc params; a `label_descriptions` mapping is sent on as JSON (MLflow param schemas have no dict)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"params must be a JSON object, got {type(value).__name__}")
    params = dict(value)
    if isinstance(params.get("label_descriptions"), dict):
        params["label_descriptions"] = json.dumps(params["label_descriptions"])
    return params


def check_texts(model, frame: pd.DataFrame) -> None:
    """Every row carries text in each column the model reads (`text`, else its own text columns): a row of
    another schema, a missing value, a list or an object would otherwise be scored as '' or as its repr."""
    schema = model.metadata.get_input_schema()
    own = [n for n in (schema.input_names() if schema else []) if n != "text"]
    columns = ["text"] if "text" in frame.columns or not own else [c for c in own if c in frame.columns]
    for column in columns:
        if column not in frame.columns:
            continue
        for row, value in enumerate(frame[column], start=1):
            if not isinstance(value, str):
                got = (
                    "nothing (every row needs the same columns)"
                    if value is None or (isinstance(value, float) and value != value)
                    else type(value).__name__
                )
                raise PayloadError(f"document {row}: '{column}' must be a string, got {got}")


def predict(model, frame: pd.DataFrame, params: dict) -> list[dict]:
    """Score and give every document a prediction id (what feedback refers to), before the model's answer."""
    check_texts(model, frame)
    out = model.predict(frame, params=params or None)
    return [{"prediction_id": uuid.uuid4().hex, **row} for row in out.to_dict("records")]


def client_message(exc: Exception) -> str:
    """One readable line: MLflow's schema errors embed the whole input, keep only what is wrong."""
    message = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip()
    if "Failed to enforce schema" in message and "Error:" in message:
        message = "input does not match the model signature: " + message.rsplit("Error:", 1)[1].strip()
    return message.splitlines()[0][:500]


def is_client_error(exc: Exception) -> bool:
    """Errors caused by the request (schema, params, contract) rather than by the server."""
    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() < 500 or "schema" in exc.message.lower() or "param" in exc.message.lower()
    return isinstance(exc, (ValueError, TypeError, KeyError))
