"""What a pass over a streamed fit split counts for the training-data gate; plain data, so the code that streams
(Ray workers included) need not import great-expectations."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StreamCounts:
    """What one pass over a streamed fit split counted, every row included (the caller streams; this judges)."""

    rows: int = 0
    empty_text: int = 0  # null or blank after stripping
    no_labels: int = 0
    held_out: int = 0  # rows whose text is also in the validation or test split
    label_rows: dict[str, int] = field(default_factory=dict)  # rows per label value, unknown values included
