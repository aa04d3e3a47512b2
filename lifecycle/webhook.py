"""What an MLflow registry webhook delivery means: is it authentic and fresh, and which model must be reconciled.

MLflow OSS 3.x (`mlflow server` on a SQL store) signs each delivery the Standard Webhooks way
(https://www.standardwebhooks.com; `mlflow/webhooks/delivery.py`): headers `X-MLflow-Delivery-Id`,
`X-MLflow-Timestamp` (Unix seconds) and `X-MLflow-Signature: v1,<base64 HMAC-SHA256>` over
`<delivery id>.<timestamp>.<raw body>`, keyed by the webhook's secret as UTF-8 bytes. The body is
`{"entity", "action", "timestamp", "data": {...}}`. Pure functions: no I/O, unit-tested on hand-made deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from registry import conventions as C

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"

# The registry events that can change what the controller must do: a new version, an alias set or removed (the
# challenger, or a champion moved by hand), and a version tag the controller reads (the monitor's verdict).
EVENTS = (
    "model_version.created",
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version_tag.set",
)
TAGS_THAT_MATTER = frozenset({C.TAG_MONITOR_VERDICT})


class Refused(Exception):
    """A delivery that is not acted on; `status` is the HTTP answer (401, 400, 403, 422)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The `X-MLflow-Signature` value MLflow sends for this delivery."""
    content = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(headers: dict[str, str], body: bytes, secret: str, now: float, tolerance_s: float) -> str:
    """The delivery id of an authentic delivery signed within `tolerance_s` of `now`; Refused(401) otherwise.
    `headers` are matched case-insensitively; several space-separated `v1,<sig>` entries are allowed (rotation)."""
    lower = {k.lower(): v for k, v in headers.items()}
    delivery_id, timestamp = lower.get(DELIVERY_HEADER.lower(), ""), lower.get(TIMESTAMP_HEADER.lower(), "")
    signatures = lower.get(SIGNATURE_HEADER.lower(), "")
    if not signatures:
        raise Refused(401, f"unsigned delivery (no {SIGNATURE_HEADER} header)")
    if not delivery_id or not timestamp.isdigit():
        raise Refused(401, f"delivery without a {DELIVERY_HEADER} or a numeric {TIMESTAMP_HEADER}")
    age = now - int(timestamp)
    if abs(age) > tolerance_s:
        raise Refused(401, f"stale delivery: signed {age:+.0f} s from now, tolerance {tolerance_s:g} s (replay?)")
    expected = sign(secret, delivery_id, timestamp, body)
    if not any(hmac.compare_digest(given.encode(), expected.encode()) for given in signatures.split()):
        raise Refused(401, "bad signature: not signed with this listener's secret, or the body was altered")
    return delivery_id


@dataclass(frozen=True)
class Event:
    kind: str  # entity.action, e.g. model_version.created
    model: str
    detail: str  # what happened, for the log
    acts: bool = True  # False: a tag the controller does not read (answered, nothing to do)


def parse(body: bytes, managed: frozenset[str] | set[str]) -> Event:
    """The event a verified body carries; Refused(400) when malformed, 422 when not a registry event this
    listener handles, 403 when about a model it does not manage."""
    try:
        payload = json.loads(body)
        kind = f"{payload['entity']}.{payload['action']}"
        data = payload["data"]
        model = data["name"]
    except (ValueError, KeyError, TypeError):
        raise Refused(400, "not an MLflow webhook payload: JSON with entity, action and data.name expected") from None
    if not isinstance(model, str):
        raise Refused(400, "data.name must be a string")
    if kind not in EVENTS:
        raise Refused(422, f"unhandled event {kind[:100]!r}; this listener handles {', '.join(EVENTS)}")
    if model not in managed:
        raise Refused(403, f"model {model[:200]!r} is not managed by this listener ({', '.join(sorted(managed))})")
    version = data.get("version")
    if kind == "model_version_tag.set":
        key = data.get("key")
        return Event(kind, model, f"tag {key} set on version {version}", acts=key in TAGS_THAT_MATTER)
    if kind.startswith("model_version_alias."):
        return Event(
            kind,
            model,
            f"alias {data.get('alias')} {payload['action']}" + (f" on version {version}" if version else ""),
        )
    return Event(kind, model, f"version {version} created")
