"""The route a practitioner would take instead of `sft`: SetFit (contrastive fine-tuning of the sentence-transformer
body on pairs, then a logistic-regression head) on the same MiniLM. Runs in its own environment, so neither the
project nor CI depends on setfit:

    python3 -m venv ../setfit-venv
    ../setfit-venv/bin/pip install torch==2.13.0 setfit   # torch: the version of the project's venv
    ../setfit-venv/bin/python bench/setfit_route.py IN.json OUT.json

IN.json: encoder (a sentence-transformers directory), fit_texts, fit_labels (label indices), test_texts, seed,
threads, recipe (setfit `TrainingArguments` fields; {} is setfit's default recipe). OUT.json: test scores (one
column per label index), the number of contrastive pairs and steps, seconds to train and to predict.
bench_sft.py writes IN.json and scores OUT.json (`--setfit-python`).
"""

import json
import sys
import tempfile
import time

import setfit
import torch
from datasets import Dataset
from setfit import SetFitModel, Trainer, TrainingArguments


def main(in_path: str, out_path: str) -> None:
    job = json.loads(open(in_path).read())
    torch.set_num_threads(job["threads"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:  # no checkpoints (nothing selects one) in the caller's folder
        args = TrainingArguments(
            seed=job["seed"], output_dir=scratch, save_strategy="no", report_to="none", **job["recipe"]
        )
        trainer = Trainer(
            model=SetFitModel.from_pretrained(job["encoder"]),
            args=args,
            train_dataset=Dataset.from_dict({"text": job["fit_texts"], "label": job["fit_labels"]}),
        )
        trainer.train()
    trained = time.perf_counter()
    scores = trainer.model.predict_proba(job["test_texts"], as_numpy=True)
    result = {
        "setfit_version": setfit.__version__,
        "scores": scores.tolist(),
        "pairs": len(trainer.st_trainer.train_dataset),
        "steps": trainer.st_trainer.state.global_step,
        "train_s": trained - started,
        "predict_s": time.perf_counter() - trained,
    }
    open(out_path, "w").write(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
