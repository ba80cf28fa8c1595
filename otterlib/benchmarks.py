"""Recorded training throughput (``docs/benchmarks.json``): the measurements compute plans are built from.

Schema (``"format": "otterlib-benchmarks/1"``)::

    {"format": "otterlib-benchmarks/1",
     "records": [{"image_encoder": "timm:resnet50", "text_encoder": "declutr-sci-base", "method": "otter",
                  "batch_per_gpu": 64, "image_size": 224, "precision": "bf16", "device": "NVIDIA H200",
                  "gpus": 1, "samples_per_s": 812.5, "measured": "2025-06-01",
                  "command": "python -m otterlib.bench ... --record docs/benchmarks.json", "git": "31e4e25"}]}

One record is one measurement: ``samples_per_s`` training samples per second (forward, backward and optimizer
step, teacher and targets included) of ``gpus`` GPUs of kind ``device`` that each hold ``batch_per_gpu``
samples, at ``image_size`` px in ``precision`` (``bf16`` or ``fp32``). Encoder names are the profile's
(``ModelConfig.image_encoder`` / ``text_encoder``), methods the profile's. ``python -m otterlib.bench
--record PATH`` appends the records of what it measured (synthetic batches: no data loading).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from otterlib.env import REPO_ROOT

BENCHMARKS_PATH: Path = REPO_ROOT / "docs" / "benchmarks.json"
FORMAT: str = "otterlib-benchmarks/1"


@dataclass(frozen=True)
class BenchmarkRecord:
    """One throughput measurement (see the module docstring for the fields)."""

    image_encoder: str
    text_encoder: str
    method: str
    batch_per_gpu: int
    image_size: int
    precision: str
    device: str
    gpus: int
    samples_per_s: float
    measured: str
    command: str
    git: str

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be bf16 or fp32, got {self.precision!r}")
        for name in ("batch_per_gpu", "image_size", "gpus"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.samples_per_s, (int, float)) or not self.samples_per_s > 0:
            raise ValueError(f"samples_per_s must be a number > 0, got {self.samples_per_s!r}")

    @property
    def samples_per_s_per_gpu(self) -> float:
        return self.samples_per_s / self.gpus

    def key(self) -> tuple[str, str, str, int, int, str]:
        """What a plan matches on: (image encoder, text encoder, method, batch per GPU, image size, precision)."""
        return (self.image_encoder, self.text_encoder, self.method, self.batch_per_gpu, self.image_size,
                self.precision)


def load_benchmarks(path: str | Path = BENCHMARKS_PATH) -> list[BenchmarkRecord]:
    """The records of a benchmark file; a malformed file or record is a ValueError naming it (and the index)."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("records"), list):
        raise ValueError(f"{path} is not a benchmark record file (expected {{'format': {FORMAT!r}, 'records': [...]}})")
    names = {f.name for f in fields(BenchmarkRecord)}
    records = []
    for i, rec in enumerate(data["records"]):
        if not isinstance(rec, dict) or set(rec) != names:
            got = set(rec) if isinstance(rec, dict) else type(rec).__name__
            raise ValueError(f"{path}: record {i} must have exactly the fields {sorted(names)}, got {got}")
        try:
            records.append(BenchmarkRecord(**rec))
        except ValueError as err:
            raise ValueError(f"{path}: record {i}: {err}") from None
    return records


def append_records(path: str | Path, records: list[BenchmarkRecord]) -> None:
    """Add ``records`` to the file at ``path`` (created when absent), keeping the records already there and the
    file's other top-level keys (e.g. ``about``)."""
    path = Path(path)
    kept = load_benchmarks(path) if path.is_file() else []
    extra = {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k not in ("format", "records")} \
        if path.is_file() else {}
    doc = {"format": FORMAT, **extra, "records": [asdict(r) for r in kept + list(records)]}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
