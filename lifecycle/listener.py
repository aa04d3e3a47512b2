"""`python -m lifecycle listen`: reconcile a model when the registry says it changed, instead of every 30 s.

An HTTP receiver for MLflow registry webhooks (`lifecycle.webhook` decides what a delivery means) and one worker
that runs the controller's passes. An event makes its model due now; events arriving during a pass coalesce into
one more pass; a model whose lease another controller holds is tried again shortly. Every model is also due
every `poll_interval` seconds, for what no webhook reports: events missed while the listener was down, stage
transitions, feedback that should start a retraining. One worker, so passes never overlap in this process
(MLflow's active experiment is process-wide); the lease keeps other processes out.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter, OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import mlflow

from lifecycle.controller import Controller, run_pass
from lifecycle.webhook import EVENTS, Refused, parse, verify
from registry.errors import PlatformError

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1_048_576
REMEMBERED_DELIVERIES = 10_000


class Passes:
    """When each model's next pass is due, and the loop that runs them one at a time."""

    def __init__(self, models: list[str], poll_interval_s: float, retry_s: float, run: Callable[[str], bool]):
        self.poll_interval_s, self.retry_s, self._run = poll_interval_s, retry_s, run
        self.due = {m: 0.0 for m in models}  # all due at start: catch up on what happened while nobody listened
        self.passes = Counter()
        self._cond = threading.Condition()
        self._stopping = False

    def request(self, model: str) -> None:
        with self._cond:
            self.due[model] = min(self.due.get(model, 0.0), time.time())
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def loop(self) -> None:
        while (model := self._next()) is not None:
            done = self._run(model)
            self.passes[model] += 1
            if not done:
                with self._cond:
                    self.due[model] = min(self.due[model], time.time() + self.retry_s)

    def _next(self) -> str | None:
        """The model due first, once its time comes (None when stopping); its next poll is scheduled, and an event
        arriving during its pass brings that forward again."""
        with self._cond:
            while not self._stopping:
                model, when = min(self.due.items(), key=lambda item: item[1])
                if when <= time.time():
                    self.due[model] = time.time() + self.poll_interval_s
                    return model
                self._cond.wait(when - time.time())
            return None


class Receiver(ThreadingHTTPServer):
    """POST /webhook (MLflow's deliveries) and GET /health; answers at once, the passes run on the worker."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret: str, passes: Passes, tolerance_s: float):
        super().__init__(address, Handler)
        self.secret, self.passes, self.tolerance_s = secret, passes, tolerance_s
        self.managed = frozenset(passes.due)
        self.answers = Counter()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def deliver(self, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        """(HTTP status, answer) for one delivery; Refused for one that is not acted on."""
        delivery = verify(headers, body, self.secret, time.time(), self.tolerance_s)
        event = parse(body, self.managed)
        with self._lock:
            if delivery in self._seen:  # a replay within the tolerance: the pass it asked for is done or due
                return 200, {"duplicate": delivery}
            self._seen[delivery] = None
            while len(self._seen) > REMEMBERED_DELIVERIES:
                self._seen.popitem(last=False)
        if not event.acts:
            log.info("[%s] %s: nothing for the controller", event.model, event.detail)
            return 200, {"ignored": event.detail}
        log.info("[%s] %s (%s): reconciling", event.model, event.detail, event.kind)
        self.passes.request(event.model)
        return 202, {"reconciling": event.model}


class Handler(BaseHTTPRequestHandler):
    server: Receiver
    timeout = 10  # seconds a connection may take to send its request; a stalled one is closed

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/webhook":
            return self._answer(404, {"error": "POST MLflow webhooks to /webhook"})
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._answer(411, {"error": "a Content-Length header is required"})
        if int(length) > MAX_BODY_BYTES:
            return self._answer(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
        body = self.rfile.read(int(length))
        try:
            status, answer = self.server.deliver(dict(self.headers), body)
        except Refused as exc:
            log.warning("refused a delivery from %s with %d: %s", self.client_address[0], exc.status, exc)
            status, answer = exc.status, {"error": str(exc)}
        except Exception:  # noqa: BLE001 - no delivery may take the listener down
            log.exception("a delivery failed")
            status, answer = 500, {"error": "internal error; see the listener's log"}
        self.server.answers[status] += 1
        self._answer(status, answer)

    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/health":
            return self._answer(404, {"error": "GET /health"})
        self._answer(
            200,
            {
                "status": "ok",
                "models": sorted(self.server.managed),
                "answers": {str(k): v for k, v in sorted(self.server.answers.items())},
                "passes": dict(self.server.passes.passes),
            },
        )

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.client_address[0], format % args)


def register_webhook(client: mlflow.MlflowClient, url: str, secret: str) -> str:
    """Point a registry webhook at `url` with `secret` (the existing one for that URL is updated, not doubled);
    its id. Only `mlflow server` delivers webhooks: with a direct database URI nothing will call the listener."""
    existing = [hook for hook in client.list_webhooks() if hook.url == url]
    if existing:
        hook = client.update_webhook(existing[0].webhook_id, events=list(EVENTS), secret=secret, status="ACTIVE")
    else:
        name = "lifecycle-listener-" + url.split("//", 1)[-1].split("/", 1)[0].replace(":", "-")
        hook = client.create_webhook(
            name=name,
            url=url,
            events=list(EVENTS),
            secret=secret,
            description="python -m lifecycle listen: the controller reconciles on each event",
        )
    return hook.webhook_id


def reconcile_model(name: str) -> bool:
    """One controller pass over `name` that never raises (the listener outlives a registry that is down, a model
    not registered yet, a bug in one pass); False when another controller holds the lease."""
    try:
        return run_pass(Controller(name))  # a fresh controller: settings and deploy target as they are now
    except PlatformError as exc:
        print(f"[{name}] error: {exc}", flush=True)
    except Exception:  # noqa: BLE001
        log.exception("[%s] the pass failed; the next event or poll tries again", name)
    return True


def serve(
    models: list[str],
    host: str,
    port: int,
    secret: str,
    poll_interval_s: float,
    retry_s: float,
    tolerance_s: float,
    run: Callable[[str], bool] = reconcile_model,
) -> None:
    """Receive and reconcile until SIGTERM or Ctrl-C; on SIGTERM the pass in progress is finished first."""
    passes = Passes(models, poll_interval_s, retry_s, run)
    server = Receiver((host, port), secret, passes, tolerance_s)
    signal.signal(signal.SIGTERM, lambda *_: passes.stop())
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    print(
        f"listening for MLflow registry webhooks on http://{host}:{port}/webhook for {', '.join(models)}; "
        f"every model is also reconciled every {poll_interval_s:g} s",
        flush=True,
    )
    try:
        passes.loop()
    finally:
        server.shutdown()
        server.server_close()
