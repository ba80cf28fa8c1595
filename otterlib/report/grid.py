"""What the results table holds: methods, metrics and eval sets with their labels, and the expected cells.

The paper's count is settings × eval sets × {FH@1, FH@5, FH@10} ("42 evaluations on 7 different
dataset/architecture settings x 6 metrics"); mAP is reported beside it and never counted. A :class:`Grid`
is that expectation for one profile, so a table can say which cells are missing instead of dropping them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from otterlib.config import Profile

METHOD_ORDER: tuple[str, ...] = ("infonce", "label_smoothing", "kd", "otter")
BASELINES: tuple[str, ...] = ("infonce", "label_smoothing", "kd")
METHOD: str = "otter"
METHOD_LABELS: dict[str, str] = {"infonce": "InfoNCE", "label_smoothing": "LS", "kd": "KD", "otter": "OTTER",
                                 "clip_rn50": "CLIP RN50 (400M pairs, reference)",
                                 "random": "random ranking (chance, exact)",
                                 "constant": "best constant ranking (class frequency)"}
REFERENCE_MODELS: tuple[str, ...] = ("clip_rn50",)
"""Reference rows every table shows per eval set (as missing when the profile does not evaluate them)."""
TRIVIAL_ORDER: tuple[str, ...] = ("random", "constant")
TALLY_METRICS: tuple[str, ...] = ("fh@1", "fh@5", "fh@10")
"""The paper's metrics per (setting, eval set): what the tally counts."""
TABLE_METRICS: tuple[str, ...] = (*TALLY_METRICS, "map")
METRIC_LABELS: dict[str, str] = {"fh@1": "FH@1", "fh@2": "FH@2", "fh@5": "FH@5", "fh@10": "FH@10", "map": "mAP"}
EVAL_SET_LABELS: dict[str, str] = {"goi": "GOI", "in10k": "IN10K"}


def label(name: str) -> str:
    """The display name of a method, metric or eval set (the name itself when it has none)."""
    return METHOD_LABELS.get(name) or METRIC_LABELS.get(name) or EVAL_SET_LABELS.get(name) or name


def method_order(methods: Iterable[str]) -> list[str]:
    """``methods`` in the paper's order (InfoNCE, LS, KD, OTTER), others after them alphabetically."""
    present = set(methods)
    known = [m for m in (*TRIVIAL_ORDER, *REFERENCE_MODELS, *METHOD_ORDER) if m in present]
    return known + sorted(present - set(known))


@dataclass(frozen=True)
class Grid:
    """The cells a profile's table should hold: every setting (with its provenance) × eval set × method."""

    settings: tuple[str, ...]
    provenance: Mapping[str, str]
    """``published`` or ``reconstructed`` per setting (:class:`otterlib.config.SettingConfig`)."""
    eval_sets: tuple[str, ...]
    methods: tuple[str, ...] = METHOD_ORDER
    references: tuple[str, ...] = REFERENCE_MODELS

    @classmethod
    def from_profile(cls, profile: Profile) -> "Grid":
        return cls(settings=tuple(s.name for s in profile.settings),
                   provenance={s.name: s.provenance for s in profile.settings},
                   eval_sets=tuple(s.name for s in profile.eval.sets),
                   methods=tuple(method_order(profile.methods)),
                   references=tuple(dict.fromkeys([*REFERENCE_MODELS, *profile.eval.references])))

    @property
    def baselines(self) -> tuple[str, ...]:
        """The methods OTTER is compared with."""
        return tuple(m for m in self.methods if m != METHOD)

    @property
    def n_evaluations(self) -> int:
        """The paper's count for this grid: settings × eval sets × FH@{1, 5, 10} (42 for 7 settings)."""
        return len(self.settings) * len(self.eval_sets) * len(TALLY_METRICS)
