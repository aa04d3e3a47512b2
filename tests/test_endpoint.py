"""The local endpoint as users meet it: `python -m serving serve` on 127.0.0.1, real HTTP requests."""

from __future__ import annotations

import json

import pytest
import requests

from registry.contract import LIMITS
from serving.endpoint import RecentPredictions, feedback_record, load_model
from serving.feedback import FeedbackStore
from serving.scoring import PayloadError, decode_json, parse_request
from tests.serving_model import build_served_model, running_endpoint

API_KEY = "local-test-key-5f2c"
LONG = LIMITS.max_description_chars
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    return build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    """The endpoint with an API key (from an environment variable) and a 4 KiB body limit."""
    # the key as a mounted secret gives it, with a trailing newline: the server strips it
    with running_endpoint(
        served,
        tmp_path_factory.mktemp("feedback"),
        "--api-key-env",
        "SERVE_KEY",
        "--max-body-bytes",
        "4096",
        env={"SERVE_KEY": API_KEY + "\n"},
    ) as endpoint:
        yield endpoint


def invoke(server, payload, headers=HEADERS, **kwargs) -> requests.Response:
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return requests.post(
        f"{server['url']}/invocations",
        data=data,
        timeout=60,
        headers={"Content-Type": "application/json", **headers},
        **kwargs,
    )


def check_contract(answer: dict, n: int, labels: set[str] | None = None, label_set: str = "model") -> None:
    assert answer["model"] == {"name": "tiny-served", "version": "1"}
    predictions = answer["predictions"]
    assert len(predictions) == n and len({p["prediction_id"] for p in predictions}) == n
    for p in predictions:
        assert p["top_label"] in p["scores"] and set(p["labels"]) <= set(p["scores"])
        assert p["scores"][p["top_label"]] == max(p["scores"].values())
        assert all(0 <= s <= 1 for s in p["scores"].values())
        assert p["label_set"] == label_set
        if labels:
            assert set(p["scores"]) == labels


TEXTS = ["Is VAT due on consulting invoices to Germany for 2022?", "Payroll tax memo to the board"]
PAYLOADS = {
    "dataframe_records": {"dataframe_records": [{"text": t} for t in TEXTS]},
    "dataframe_split": {"dataframe_split": {"columns": ["title", "body"], "data": [[t, "body"] for t in TEXTS]}},
    "inputs": {"inputs": {"text": TEXTS}},
    "instances": {"instances": [{"text": t} for t in TEXTS]},
    "azure input_data split": {"input_data": {"columns": ["text"], "index": [0, 1], "data": [[t] for t in TEXTS]}},
    "azure input_data texts": {"input_data": TEXTS},
    "azure input_data columns": {"input_data": {"text": TEXTS}},
}


def test_health_is_open_and_names_the_served_version(server):
    answer = requests.get(f"{server['url']}/health", timeout=10).json()
    assert answer == {"status": "ok", "model": {"name": "tiny-served", "version": "1"}}


@pytest.mark.parametrize("form", list(PAYLOADS))
def test_every_payload_format_is_scored_with_the_contract(server, form):
    response = invoke(server, PAYLOADS[form])
    assert response.status_code == 200, response.text
    check_contract(response.json(), len(TEXTS))


def test_zero_shot_labels_as_a_mapping_in_params(server):
    fruit = {"apple": "Apples and orchards.", "bank": "Banks, loans and interest."}
    response = invoke(
        server, {"dataframe_records": [{"text": TEXTS[0]}], "params": {"label_descriptions": fruit, "threshold": 0.5}}
    )
    assert response.status_code == 200, response.text
    check_contract(response.json(), 1, set(fruit), "request")
    p = response.json()["predictions"][0]
    assert p["labels"] == [l for l, s in p["scores"].items() if s >= 0.5]


BAD = [
    (b"", 400, "empty body"),
    (b"\xff\xfe\x00garbage", 400, "not valid UTF-8"),
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    ({"records": []}, 400, "needs exactly one of"),
    ({"dataframe_records": [], "inputs": {}}, 400, "needs exactly one of"),
    ({"dataframe_records": []}, 400, "no documents"),
    ({"dataframe_records": "text"}, 400, "cannot read the input"),
    ({"dataframe_records": [{"summary": "x"}]}, 400, "needs a 'text' column"),
    ({"inputs": {"text": [1, 2]}}, 400, "must be a string, got int"),
    ({"input_data": 7}, 400, "input_data must be"),
    ({"input_data": ["x"], "params": [1]}, 400, "params must be a JSON object"),
    ({"input_data": ["x"], "params": {"threshold": 3}}, 400, "threshold must be in (0, 1)"),
    ({"input_data": ["x"], "params": {"threshold": "high"}}, 400, "threshold"),
    ({"input_data": ["x"], "params": {"label_descriptions": "{oops"}}, 400, "not valid JSON"),
    ({"input_data": ["x"], "params": {"label_descriptions": {"a": 1}}}, 400, "label_descriptions must be"),
    ({"input_data": ["x"], "params": {"label_descriptions": {"a": " "}}}, 400, "without a text description: ['a']"),
    ({"input_data": ["x"], "params": {"label_descriptions": {"A": "x.", "a": "y."}}}, 400, "twice: 'A' and 'a'"),
    ({"input_data": ["x"], "params": {"label_descriptions": '{"a": "x.", "a": "y."}'}}, 400, "repeats the label"),
    (
        {"input_data": ["x"], "params": {"label_descriptions": {"a": "x" * (LONG + 1)}}},
        400,
        f"longer than {LONG} characters",
    ),
    (
        {"input_data": ["x"], "params": {"label_descriptions": {"VAT": "Vehicle tax.", "fruit": "Apples."}}},
        400,
        "own label(s) ['VAT'] other descriptions",
    ),
]


@pytest.mark.parametrize("payload,status,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_requests_get_a_json_4xx_saying_what_is_wrong(server, payload, status, message):
    response = invoke(server, payload)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_limits_and_auth_and_the_server_survives(server):
    huge = {"dataframe_records": [{"text": "x" * 5000}]}
    assert invoke(server, huge).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000

    chunked = requests.post(f"{server['url']}/invocations", data=chunks(), headers=HEADERS, timeout=30)
    assert chunked.status_code == 413 and "limit" in chunked.json()["error"]

    assert invoke(server, PAYLOADS["inputs"], headers={}).status_code == 401
    assert invoke(server, PAYLOADS["inputs"], headers={"X-API-Key": "wrong"}).status_code == 401
    assert invoke(server, PAYLOADS["inputs"], headers={"X-API-Key": API_KEY}).status_code == 200
    assert server["proc"].poll() is None
    assert invoke(server, PAYLOADS["inputs"]).status_code == 200


@pytest.mark.parametrize(
    "body,message",
    [
        ({"score": 4}, "prediction_id"),
        ({"prediction_id": "abc", "score": 9}, "integer from 1 to 5"),
        ({"prediction_id": "abc", "score": True}, "integer from 1 to 5"),
        ({"prediction_id": "abc", "score": 3, "corrected_labels": "vat"}, "list of label names"),
        ({"prediction_id": "abc", "score": 3, "mood": "happy"}, "unknown feedback field"),
        ({"prediction_id": "never-predicted", "score": 3}, "not in this server's memory"),
        (
            {"prediction_id": "p", "score": 3, "text": "x", "predicted_labels": [], "scores": 5},
            "map label names to numbers",
        ),
        (
            {"prediction_id": "p", "score": 3, "text": "x", "predicted_labels": [], "scores": {"vat": None}},
            "map label names to numbers",
        ),
    ],
)
def test_bad_feedback_is_refused_with_a_reason(server, body, message):
    response = requests.post(f"{server['url']}/feedback", json=body, headers=HEADERS, timeout=30)
    assert response.status_code == 400 and message in response.json()["error"]


def test_feedback_on_a_prediction_lands_in_the_store(server):
    feedback = pytest.importorskip("serving.feedback", reason="the feedback store is not in this build")
    answer = invoke(server, {"dataframe_records": [{"text": "VAT refund question for 2023"}]}).json()
    pid = answer["predictions"][0]["prediction_id"]
    label = answer["predictions"][0]["top_label"]
    url = f"{server['url']}/feedback"
    stored = requests.post(
        url, json={"prediction_id": pid, "score": 2, "corrected_labels": [label]}, headers=HEADERS, timeout=30
    )
    assert stored.status_code == 201, stored.text
    again = requests.post(url, json={"prediction_id": pid, "score": 5}, headers=HEADERS, timeout=30)
    assert again.status_code == 422 and "already has feedback" in again.json()["error"]
    unknown = invoke(server, {"dataframe_records": [{"text": "Payroll memo"}]}).json()["predictions"][0]
    bad = requests.post(
        url,
        json={"prediction_id": unknown["prediction_id"], "score": 4, "corrected_labels": ["not_a_label"]},
        headers=HEADERS,
        timeout=30,
    )
    assert bad.status_code == 422 and "not_a_label" in bad.json()["error"]
    rows = feedback.FeedbackStore(server["db"]).query(model_name="tiny-served")
    assert list(rows["prediction_id"]) == [pid]
    row = rows.iloc[0]
    assert (row["score"], row["model_name"], str(row["model_version"]), row["text"]) == (
        2,
        "tiny-served",
        "1",
        "VAT refund question for 2023",
    )
    # title/body in any order: the stored text is what the model scored, "title. body" as in training
    split = invoke(server, {"dataframe_records": [{"body": "Is it deductible?", "title": "Home office"}]}).json()
    pid2 = split["predictions"][0]["prediction_id"]
    assert requests.post(url, json={"prediction_id": pid2, "score": 4}, headers=HEADERS, timeout=30).status_code == 201
    rows = feedback.FeedbackStore(server["db"]).query(model_name="tiny-served")
    assert rows.set_index("prediction_id").loc[pid2, "text"] == "Home office. Is it deductible?"


@pytest.mark.parametrize("route", ["/invocations", "/feedback"])
@pytest.mark.parametrize(
    "body",
    [b"[" * 2000 + b"]" * 2000, b'{"inputs": {"text": ' + b"[" * 1900 + b"]" * 1900 + b"}}"],
    ids=["nested array", "nested value"],
)  # within this server's 4 KiB body limit
def test_deeply_nested_json_is_a_400(server, route, body):
    response = requests.post(f"{server['url']}{route}", data=body, headers=HEADERS, timeout=60)
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"], response.text


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        '{"x": ' + "9" * 5000 + "}",
        '{"input_data": ["x"], "params": {"label_descriptions": "' + "[" * 5000 + '"}}',
    ],
)
def test_decoding_never_raises_anything_but_a_payload_error(body):
    with pytest.raises(PayloadError):
        parse_request(decode_json(body), max_rows=10, max_labels=10)


@pytest.mark.parametrize(
    "payload,message",
    [
        (
            {"dataframe_records": [{"text": "a"}, {"title": "VAT", "body": "invoice"}]},
            "document 2: 'text' must be a string",
        ),
        ({"dataframe_records": [{"text": ["a", "b"]}]}, "must be a string, got list"),
        ({"dataframe_records": [{"text": {"a": 1}}]}, "must be a string, got dict"),
        ({"dataframe_records": [{"title": "VAT", "body": None}]}, "'body' must be a string, got nothing"),
        ({"input_data": [{"text": "a"}, {"text": None}]}, "document 2"),
    ],
)
def test_rows_of_another_schema_or_non_text_values_are_refused(server, payload, message):
    response = invoke(server, payload)
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_row_and_label_caps(server):
    too_many = invoke(server, {"inputs": {"text": ["a"] * 257}})
    assert too_many.status_code == 413 and "at most 256" in too_many.json()["error"]
    labels = {f"l{i}": "d" for i in range(65)}
    too_wide = invoke(server, {"inputs": {"text": ["a"]}, "params": {"label_descriptions": labels}})
    assert too_wide.status_code == 422 and "at most 64" in too_wide.json()["error"]
    assert invoke(server, {"inputs": {"text": ["a"] * 256}}).status_code == 200


def test_feedback_on_a_forgotten_prediction_is_checked_against_the_models_labels(server):
    url = f"{server['url']}/feedback"
    label = invoke(server, PAYLOADS["inputs"]).json()["predictions"][0]["top_label"]
    forgotten = {"score": 1, "text": "t", "predicted_labels": [label]}
    cases = [
        ({"prediction_id": "x1", **forgotten, "predicted_labels": ["zzz"], "corrected_labels": ["yyy"]}, "zzz"),
        ({"prediction_id": "x2", **forgotten, "corrected_labels": ["yyy"]}, "yyy"),
        ({"prediction_id": "x3", **forgotten, "scores": {"zzz": 0.4}}, "zzz"),
        ({"prediction_id": "x" * 201, **forgotten}, "longer than 200"),
    ]
    for body, message in cases:
        response = requests.post(url, json=body, headers=HEADERS, timeout=30)
        assert response.status_code == 422 and message in response.json()["error"], response.text
    for body, message in [
        ({"prediction_id": "x4", **forgotten, "scores": {label: float("nan")}}, "from 0 to 1"),
        ({"prediction_id": "x5", **forgotten, "source": {"app": "web"}}, "'source' must be a string"),
    ]:
        response = requests.post(
            url, data=json.dumps(body), headers={**HEADERS, "Content-Type": "application/json"}, timeout=30
        )
        assert response.status_code == 400 and message in response.json()["error"], response.text
    ok = requests.post(
        url, json={"prediction_id": "x6", **forgotten, "scores": {label: 0.7}}, headers=HEADERS, timeout=30
    )
    assert ok.status_code == 201, ok.text


def test_a_client_that_disconnects_mid_body_costs_one_log_line(server):
    import socket
    import time

    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as sock:
            sock.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + API_KEY.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"inputs"'
            )
    time.sleep(1.0)
    assert invoke(server, PAYLOADS["inputs"]).status_code == 200
    log = server["log"].read_text()
    assert "Traceback" not in log
    assert log.count("disconnected after") >= 3


def test_an_unregistered_model_uri_is_served_with_working_feedback(served, tmp_path, monkeypatch):
    """`runs:/...` and `models:/m-<id>` (a logged model) are allowed by --model: feedback is filed under the URI and
    the logged-model id, and checked against the model's own labels."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", served.tracking_uri)
    mlflow.set_tracking_uri(served.tracking_uri)
    version = mlflow.MlflowClient().get_model_version(served.name, served.version)
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.db'}")
    for uri in (version.source, f"runs:/{version.run_id}/model"):
        model = load_model(uri)
        assert model.name == uri and model.version.startswith("m-") and model.labels
        body = {"prediction_id": f"p-{uri}", "score": 3, "text": "t", "predicted_labels": [model.labels[0]]}
        store.add(*feedback_record(body, RecentPredictions(10), model))
    rows = store.query()
    assert list(rows["model_name"]) == [version.source, f"runs:/{version.run_id}/model"]


def test_every_request_is_in_the_access_log_and_the_key_never_is(server):
    invoke(server, {"inputs": {"text": ["access log probe"]}})
    invoke(server, b"{not json")
    log = server["log"].read_text()
    assert '"POST /invocations" 200' in log and '"POST /invocations" 400' in log
    assert "INFO serving.access" in log and API_KEY not in log
