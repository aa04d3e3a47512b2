"""The webhook listener's parts: signature and freshness checks against MLflow's own signer, what an event
means, the pass scheduler (coalescing, lease retry), and the receiver over real HTTP on 127.0.0.1 refusing bad
deliveries without falling over. The end-to-end run against `mlflow server` is in test_listener_mlflow.py."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest
import requests

from lifecycle.listener import Passes, Receiver
from lifecycle.webhook import Refused, parse, sign, verify
from registry import conventions as C

SECRET = "listener-test-secret"


def delivery(payload: dict | bytes, secret: str = SECRET, at: float | None = None, delivery_id: str | None = None):
    """(headers, body) of a delivery signed as MLflow signs it."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    delivery_id, timestamp = delivery_id or str(uuid.uuid4()), str(int(at if at is not None else time.time()))
    return {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign(secret, delivery_id, timestamp, body),
        "Content-Type": "application/json",
    }, body


def event(entity: str, action: str, **data) -> dict:
    return {"entity": entity, "action": action, "timestamp": "2026-01-01T00:00:00+00:00", "data": data}


CREATED = event("model_version", "created", name="clf", version="3", source="models:/m-1", run_id="r", tags={})


def test_signature_is_the_one_mlflow_sends():
    from mlflow.webhooks.delivery import _generate_hmac_signature  # MLflow's signer (private): what it really sends

    body = json.dumps(CREATED)
    assert sign(SECRET, "d-1", "1700000000", body.encode()) == _generate_hmac_signature(
        SECRET, "d-1", "1700000000", body
    )
    # computed by hand: echo -n 'i.1.{}' | openssl dgst -sha256 -hmac k -binary | base64
    assert sign("k", "i", "1", b"{}") == "v1,FJE3OLqp7mx+VSBPABGJaoIRvJFuB9i1nQ6SWWOd00k="


def test_verify_accepts_a_fresh_authentic_delivery_and_refuses_the_rest():
    now = 1_800_000_000
    headers, body = delivery(CREATED, at=now - 10, delivery_id="d-1")
    assert verify(headers, body, SECRET, now, 300) == "d-1"
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify(lower, body, SECRET, now, 300) == "d-1"  # header names are case-insensitive
    rotated = {**headers, "X-MLflow-Signature": "v1,b2xk " + headers["X-MLflow-Signature"]}
    assert verify(rotated, body, SECRET, now, 300) == "d-1"  # several signatures: one valid is enough

    def refused(h, b=body, secret=SECRET) -> str:
        with pytest.raises(Refused) as exc:
            verify(h, b, secret, now, 300)
        assert exc.value.status == 401
        return str(exc.value)

    assert "unsigned" in refused({k: v for k, v in headers.items() if k != "X-MLflow-Signature"})
    assert "bad signature" in refused(headers, secret="another secret")
    assert "bad signature" in refused(headers, b=body.replace(b'"3"', b'"4"'))  # body altered after signing
    assert "stale" in refused(*delivery(CREATED, at=now - 301))
    assert "stale" in refused(*delivery(CREATED, at=now + 301))  # from the future: a wrong clock or a forgery
    assert "numeric" in refused({**headers, "X-MLflow-Timestamp": "yesterday"})


def test_parse_says_which_model_to_reconcile_and_refuses_what_it_does_not_handle():
    managed = {"clf"}
    assert parse(json.dumps(CREATED).encode(), managed).model == "clf"
    alias = parse(
        json.dumps(event("model_version_alias", "created", name="clf", alias="challenger", version="3")).encode(),
        managed,
    )
    assert alias.acts and alias.detail == "alias challenger created on version 3"
    verdict = parse(
        json.dumps(
            event("model_version_tag", "set", name="clf", version="2", key=C.TAG_MONITOR_VERDICT, value="degraded")
        ).encode(),
        managed,
    )
    assert verdict.acts
    other_tag = parse(
        json.dumps(
            event("model_version_tag", "set", name="clf", version="2", key="eval.f1_macro", value="0.5")
        ).encode(),
        managed,
    )
    assert not other_tag.acts  # the controller's own writes: answered, nothing to do

    def status(body: bytes) -> int:
        with pytest.raises(Refused) as exc:
            parse(body, managed)
        return exc.value.status

    assert status(json.dumps(event("prompt", "created", name="clf")).encode()) == 422
    assert status(json.dumps(event("model_version", "deleted", name="clf")).encode()) == 422
    assert status(json.dumps({**CREATED, "data": {**CREATED["data"], "name": "other"}}).encode()) == 403
    assert status(b"not json") == 400
    assert status(json.dumps({"entity": "model_version"}).encode()) == 400
    assert status(json.dumps(event("model_version", "created", name=["clf"])).encode()) == 400


def test_passes_coalesce_events_during_a_pass_and_retry_a_busy_lease():
    calls, first_pass_started, release_first = [], threading.Event(), threading.Event()
    busy = {"clf": 1}  # the first pass finds the lease taken

    def run(model: str) -> bool:
        calls.append(model)
        if len(calls) == 1:
            first_pass_started.set()
            release_first.wait(10)
        if busy.get(model):
            busy[model] -= 1
            return False
        return True

    passes = Passes(["clf"], poll_interval_s=3600, retry_s=0.05, run=run)
    worker = threading.Thread(target=passes.loop, daemon=True)
    worker.start()  # every model is due at start
    assert first_pass_started.wait(10)
    for _ in range(5):  # five events while the first pass runs: one more pass, not five
        passes.request("clf")
    release_first.set()
    deadline = time.time() + 10
    while len(calls) < 2 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # room for any extra pass that should not happen
    passes.stop()
    worker.join(10)
    assert not worker.is_alive()
    # pass 1 (lease busy) -> the retry and the coalesced events are one pass 2; the poll is an hour away
    assert calls == ["clf", "clf"]


@pytest.fixture()
def receiver():
    """The receiver on a free 127.0.0.1 port, recording the models it asks to reconcile."""
    asked: list[str] = []
    passes = Passes(["clf"], 3600, 1, run=lambda m: True)
    passes.request = asked.append  # the scheduler is tested above; here only what the receiver asks of it
    server = Receiver(("127.0.0.1", 0), SECRET, passes, tolerance_s=300)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def post(url: str, headers: dict, body: bytes) -> requests.Response:
    return requests.post(f"{url}/webhook", data=body, headers=headers, timeout=10)


def test_receiver_refuses_bad_deliveries_with_the_reason_logged_and_keeps_serving(receiver, caplog):
    url, asked = receiver
    caplog.set_level(logging.INFO, logger="lifecycle")
    good_headers, good_body = delivery(CREATED)
    cases = [
        ({k: v for k, v in good_headers.items() if k != "X-MLflow-Signature"}, good_body, 401, "unsigned"),
        (delivery(CREATED, secret="wrong")[0], good_body, 401, "bad signature"),
        (*delivery(CREATED, at=time.time() - 3600), 401, "stale"),
        (*delivery(event("prompt", "created", name="clf")), 422, "unhandled event"),
        (*delivery({**CREATED, "data": {**CREATED["data"], "name": "not-mine"}}), 403, "not managed"),
        (*delivery(b"{not json"), 400, "not an MLflow webhook payload"),
    ]
    for headers, body, status, reason in cases:
        answer = post(url, headers, body)
        assert answer.status_code == status and reason in answer.json()["error"], (reason, answer.text)
        assert any(reason in r.getMessage() and "refused a delivery" in r.getMessage() for r in caplog.records), reason
    assert asked == []  # nothing refused was acted on
    assert requests.post(f"{url}/webhook", data=b"x" * 2_000_000, timeout=10).status_code == 413
    assert requests.get(f"{url}/nowhere", timeout=10).status_code == 404

    answer = post(url, good_headers, good_body)
    assert answer.status_code == 202 and answer.json() == {"reconciling": "clf"}
    assert post(url, good_headers, good_body).json() == {"duplicate": good_headers["X-MLflow-Delivery-Id"]}
    tag = event("model_version_tag", "set", name="clf", version="3", key="lifecycle.reason", value="x")
    assert post(url, *delivery(tag)).json() == {"ignored": "tag lifecycle.reason set on version 3"}
    assert asked == ["clf"]  # once: the replay and the irrelevant tag did not ask for a pass
    health = requests.get(f"{url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["answers"]["401"] == 3 and health["answers"]["202"] == 1
