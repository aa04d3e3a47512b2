# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
PIP_QUIET := 2>&1 | { grep -vE "is ignored: it is neither a file nor a directory" || true; }
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: install demo lint test test-slow java ui clean azmlinfsrv-venv

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(PIP_QUIET)
	$(PY) -m pip install -q torch==2.13.0 $(PIP_QUIET)   # the CPU wheel, before anything can pull CUDA builds
	$(PY) -m pip install -q -e ".[test]" $(PIP_QUIET)
	touch $@

install: $(VENV)/.installed java

# pyspark needs a Java runtime: install OpenJDK 17 when it is missing and we may (root + apt), else say how.
java:
	@if ! command -v java >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Java not found: installing openjdk-17-jre-headless for pyspark"; \
	    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	  else \
	    echo "WARNING: no Java runtime; Spark batch scoring and its tests need Java 17 (e.g. apt-get install openjdk-17-jre-headless)"; \
	  fi; \
	fi

demo: install
	mlflow run . -e pipeline --env-manager local --experiment-name tax-doc-classifier

lint: install  # ruff's rules and format, configured in pyproject.toml
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install lint
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

ui:
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000

clean:  # back to a fresh demo: tracking store, artifacts, feedback store, inference log, local deployments, the demo's Ray results
	rm -rf mlflow.db mlartifacts mlruns .pytest_cache feedback.db feedback.db-* inference_log.db inference_log.db-* deployments ray_results

# Microsoft's Azure ML inference server in a venv of its own (its opentelemetry pins clash with ours), with the
# champion's scoring requirements: runs serving/azureml/score.py locally as Azure does. Slow the first time.
azmlinfsrv-venv: install
	$(PY) -m serving.azureml.inference_venv .venv-azmlinfsrv --model models:/$(or $(MODEL),tax-doc-classifier)@champion
