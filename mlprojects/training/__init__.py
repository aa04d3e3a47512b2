"""SFT, PBT and GRPO training.

Ray Train's V1 API is selected here, before anything imports ray.train: only its trainers can be tuned by a Tune
Tuner, which PBT over multi-worker trials needs (mlprojects.training.distributed)."""

import os

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")
