"""The real Made With ML dataset and the one split every benchmark uses.

`dataset.csv` (600 projects: id, created_on, title, description, tag) is the public Made With ML course data
(github.com/GokuMohandas/Made-With-ML, `datasets/dataset.csv`, MIT licence); point MADEWITHML_DIR at the folder
holding it. The label descriptions the dual encoder embeds ship beside this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from registry.documents import load_label_descriptions
from registry.locations import REPO_ROOT

DATA_DIR = Path(os.environ.get("MADEWITHML_DIR", REPO_ROOT.parent / "shared" / "data" / "madewithml"))
LABELS = Path(__file__).with_name("madewithml_labels.yaml")
SEED = 42


def load_split(test_size: float = 0.2, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """(train, test, label_descriptions); frames have `text` (title + '. ' + description) and `labels` ([tag])."""
    raw = pd.read_csv(DATA_DIR / "dataset.csv")
    frame = (
        pd.DataFrame(
            {
                "text": (
                    raw["title"].fillna("").str.strip() + ". " + raw["description"].fillna("").str.strip()
                ).str.strip(),
                "labels": raw["tag"].map(lambda t: [t]),
                "tag": raw["tag"],
            }
        )
        .drop_duplicates("text")
        .reset_index(drop=True)
    )
    train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame["tag"])
    return train.reset_index(drop=True), test.reset_index(drop=True), load_label_descriptions(str(LABELS))
