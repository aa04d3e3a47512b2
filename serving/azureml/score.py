"""Azure ML scoring script (copied into the deployment's code directory next to `scoring.py`).

An explicit script instead of Azure's no-code MLflow deployment, which breaks with MLflow 3 models. `init()`
loads the MLflow pyfunc from AZUREML_MODEL_DIR once; `run(raw)` reads MLflow's or Azure ML's request formats
and answers with the platform's contract: {"predictions": [{prediction_id, labels, top_label, scores}], "model"}.
Bad requests get a 400 with {"error": ...}.
"""

import logging
import os
import sys

import mlflow

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # scoring.py sits next to this file
from scoring import answer, failure  # noqa: E402

try:
    from azureml_inference_server_http.api.aml_response import AMLResponse
except ImportError:  # older inference servers
    from azureml.contrib.services.aml_response import AMLResponse

MODEL_SUBDIR = "model"
model = None
model_info = {}


def init():
    global model, model_info
    root = os.environ["AZUREML_MODEL_DIR"]
    path = os.path.join(root, MODEL_SUBDIR) if os.path.isdir(os.path.join(root, MODEL_SUBDIR)) else root
    model = mlflow.pyfunc.load_model(path)
    model_info = {"name": os.environ.get("MODEL_NAME", ""), "version": os.environ.get("MODEL_VERSION", "")}
    logging.info("loaded %s version %s", model_info["name"], model_info["version"])


def run(raw_data):
    try:
        _, predictions = answer(model, raw_data)
    except Exception as exc:  # noqa: BLE001 - answer every bad request, keep serving
        status, message = failure(exc)
        return AMLResponse({"error": message}, status, json_str=True)
    return AMLResponse({"predictions": predictions, "model": model_info}, 200, json_str=True)
