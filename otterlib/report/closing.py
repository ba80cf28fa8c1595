"""The closing paragraph of 05 and ``comparison.md``, generated from the numbers (no sentence fixed per profile).

It says what differs significantly and what does not (both tie rules), the largest effects with their
intervals, how far the methods are from chance and from the trivial baselines, which metrics saturate, and
whether these runs are evidence about the paper's claim. That last judgement is computed from
:class:`RunFacts` (the data, the number of training pairs and steps, the seeds and the protocol of the runs)
against :data:`PAPER_RECIPE`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from otterlib.report.grid import METHOD, Grid, label
from otterlib.report.tables import SATURATION
from otterlib.report.tally import TieRules, counted, counts_text, verdict_counts

ABSTRACT_QUOTE: str = ("Over 42 evaluations on 7 different dataset/architecture settings x 6 metrics, OTTER "
                       "outperforms (32) or ties (2) all baselines in 34 of them")
"""The paper's claim, verbatim from its abstract (arXiv 2112.09445)."""
PAPER_RECIPE: dict[str, int] = {"pairs": 2_911_810, "epochs": 10, "batch_size": 512,
                                "steps": 2_911_810 * 10 // 512}
"""The README row's training: 2,911,810 valid CC3M pairs, 10 epochs at a global batch of 512 (≈ 56,900 steps)."""
REAL_SOURCES: dict[str, str] = {"cc3m": "CC3M", "yfcc15m": "YFCC15M", "wit": "WIT"}
SCALE_FRACTION: float = 0.5
"""Runs with less than this fraction of the paper's pairs or steps are too small to test its claim."""


@dataclass(frozen=True)
class RunFacts:
    """What the runs behind a table were (from the profile and the finished runs' files)."""

    profile: str
    synthetic: bool
    """Training pairs and eval sets come from the offline synthetic world, not from the paper's sources."""
    sources: tuple[str, ...]
    """Training sources of the tabulated settings (``cc3m``, ``yfcc15m``, ``wit``)."""
    train_pairs: int | None
    """Pairs in the training shards (None when unknown)."""
    steps: tuple[int, ...]
    """Optimizer steps of every finished trained run."""
    batch_size: int
    seeds: int
    """Most training seeds of any (setting, method)."""
    protocol: str
    """Eval protocol mode (``paper``: the official candidate lists)."""

    @property
    def data_label(self) -> str:
        """``synthetic (offline world)`` or the real sources, e.g. ``real (CC3M, WIT)``."""
        if self.synthetic:
            return "synthetic (the offline world)"
        return "real (" + ", ".join(REAL_SOURCES.get(s, s) for s in self.sources) + ")"


def _pct(x: float) -> str:
    return f"{x:.1f} %"


def _cell_name(c: pd.Series) -> str:
    return f"{c['setting']} {label(c['eval_set'])} {label(c['metric'])}"


def _effect(c: pd.Series) -> str:
    interval = "" if pd.isna(c["low"]) else f" [{c['low']:+.1f}, {c['high']:+.1f}]"
    verdict = c["verdict"] if pd.notna(c["verdict"]) else f"{c['fixed_verdict']} by the fixed rule (no interval)"
    return (f"{_cell_name(c)}: OTTER {_pct(c['otter'])} vs {label(c['best_baseline'])} {_pct(c['baseline'])}, "
            f"{c['diff']:+.1f} points{interval}, a {verdict}")


def _verdict_sentences(t: pd.DataFrame, grid: Grid, rules: TieRules) -> list[str]:
    available = counted(t)
    out = [f"{len(available)} of {grid.n_evaluations} evaluations (settings × eval sets × FH@1/5/10) are available"
           + (", the rest missing." if len(available) < grid.n_evaluations else ".")]
    if available.empty:
        return out
    with_interval = available[available["verdict"].notna()]
    out.append(f"By the interval rule (a tie when the {100 * rules.level:g} % paired-bootstrap interval of OTTER − "
               f"best baseline contains 0) OTTER has {counts_text(verdict_counts(available, 'verdict'))}"
               + (f" ({len(available) - len(with_interval)} cells have no score files and no interval)"
                  if len(with_interval) < len(available) else "")
               + f"; by the paper-style fixed rule (a tie within ±{rules.tolerance:g} points) "
               f"{counts_text(verdict_counts(available, 'fixed_verdict'))}.")
    significant = with_interval[with_interval["verdict"] != "tie"]
    if significant.empty and not with_interval.empty:
        out.append("No cell differs significantly: every interval contains 0.")
    elif not significant.empty:
        shown = "; ".join(_effect(c) for _, c in significant.head(6).iterrows())
        out.append(f"Significant ({len(significant)}): {shown}" + ("; …" if len(significant) > 6 else "") + ".")
    disagree = with_interval[with_interval["verdict"] != with_interval["fixed_verdict"]]
    if not disagree.empty:
        shown = "; ".join(f"{_cell_name(c)}: {c['fixed_verdict']} by the fixed rule, {c['verdict']} by the interval"
                          for _, c in disagree.head(4).iterrows())
        out.append(f"The two rules disagree on {len(disagree)} cell{'s' if len(disagree) != 1 else ''} ({shown}"
                   f"{'; …' if len(disagree) > 4 else ''}).")
    ties = with_interval[with_interval["verdict"] == "tie"]
    if not ties.empty:
        largest = ties.reindex(ties["diff"].abs().sort_values(ascending=False, kind="stable").index).head(3)
        out.append("The largest differences that are not significant: "
                   + "; ".join(_effect(c) for _, c in largest.iterrows()) + ".")
    map_cells = t[(t["metric"] == "map") & (t["status"] == "available") & t["verdict"].notna()]
    if not map_cells.empty:
        out.append(f"On mAP, which the paper does not count, OTTER has "
                   f"{counts_text(verdict_counts(map_cells, 'verdict'))} of {len(map_cells)} cells by the interval "
                   f"rule.")
    return out


def _chance_sentences(table: pd.DataFrame, saturating: Mapping[str, Sequence[str]]) -> list[str]:
    out = []
    for eval_set, block in table.groupby("eval_set", sort=False):
        headline = [m for m in ("fh@1", "map") if m not in saturating.get(eval_set, [])]
        for metric in headline:
            rows = block[block["metric"] == metric]
            trained = rows[(rows["kind"] == "trained") & rows["value"].notna()]
            if trained.empty:
                continue
            chance = rows[rows["method"] == "random"]["value"].max()
            constant = rows[rows["method"] == "constant"]["value"].max()
            low = trained["low"].fillna(trained["value"])
            above_chance = int((low > chance).sum()) if pd.notna(chance) else None
            sentence = (f"On {label(eval_set)} {label(metric)} the trained methods reach "
                        f"{_pct(trained['value'].min())} to {_pct(trained['value'].max())}")
            if pd.notna(chance):
                sentence += (f", against {_pct(chance)} for a random ranking ({above_chance} of {len(trained)} "
                             f"intervals lie above it)")
            if pd.notna(constant):
                beat = int((low > constant).sum())
                sentence += (f" and {_pct(constant)} for the best constant ranking ({beat} of {len(trained)} "
                             f"intervals lie above that" + ("; no trained model ranks better than the class "
                                                            "frequencies, which ignore the image" if beat == 0 else "")
                             + ")")
            out.append(sentence + ".")
    saturated = {e: ms for e, ms in saturating.items() if ms}
    if saturated:
        out.append("Saturated, and so left out of the headline: " + "; ".join(
            f"{', '.join(label(m) for m in ms)} on {label(e)}" for e, ms in saturated.items())
            + f" (the constant ranking or every trained method reaches {SATURATION:g} %); FH@1 and mAP carry the "
            f"comparison there.")
    return out


def evidence_gaps(facts: RunFacts, available: int, grid: Grid) -> list[str]:
    """Why these runs cannot test the paper's claim (empty when they can), from the facts of the runs."""
    gaps = []
    if facts.synthetic:
        gaps.append("the images, captions and eval labels are synthetic (the offline world), not the paper's "
                    "CC3M/YFCC15M/WIT pairs and the real GOI and IN10K")
    if facts.train_pairs is not None and facts.train_pairs < SCALE_FRACTION * PAPER_RECIPE["pairs"]:
        gaps.append(f"each run saw {facts.train_pairs:,} training pairs, against the paper's "
                    f"{PAPER_RECIPE['pairs']:,} CC3M pairs")
    if facts.steps and max(facts.steps) < SCALE_FRACTION * PAPER_RECIPE["steps"]:
        gaps.append(f"each run took at most {max(facts.steps):,} optimizer steps at batch {facts.batch_size}, against "
                    f"about {PAPER_RECIPE['steps']:,} at batch {PAPER_RECIPE['batch_size']} "
                    f"({PAPER_RECIPE['epochs']} epochs)")
    if facts.protocol != "paper":
        gaps.append(f"the eval protocol is {facts.protocol!r}, not the paper's candidate lists")
    if available < grid.n_evaluations:
        gaps.append(f"only {available} of the grid's {grid.n_evaluations} evaluations exist")
    return gaps


def _evidence_sentences(facts: RunFacts, t: pd.DataFrame, grid: Grid) -> list[str]:
    available = len(counted(t))
    out = [f"The abstract reports, for the paper's own runs: \"{ABSTRACT_QUOTE}\" (34 of 42; its tie rule is not "
           f"stated). That count is the paper's, on its data and models; this table's counts above are of these "
           f"runs and are not comparable with it."]
    gaps = evidence_gaps(facts, available, grid)
    seeds = (f"{facts.seeds} seed{'s' if facts.seeds != 1 else ''} per run"
             + ("; with one seed the intervals cover the eval sample only, not training variation"
                if facts.seeds == 1 else ""))
    if gaps:
        out.append("These runs are not evidence about that claim: " + "; ".join(gaps) + f" ({seeds}). They test that "
                   "the pipeline runs end to end and that the statistics separate what they can.")
    else:
        reconstructed = sum(1 for s in grid.settings if grid.provenance.get(s) == "reconstructed")
        out.append(f"These runs match the paper's data and scale, so they are evidence about its claim ({seeds}"
                   + (f"; {reconstructed} of the {len(grid.settings)} settings are reconstructed, not the paper's: "
                      f"its Table 1 settings are not known" if reconstructed else "") + ").")
    return out


def closing_paragraph(t: pd.DataFrame, table: pd.DataFrame, saturating: Mapping[str, Sequence[str]],
                      facts: RunFacts, grid: Grid, rules: TieRules = TieRules()) -> str:
    """The closing Markdown: ``t`` the tally (:func:`otterlib.report.tally.tally`), ``table`` the results table
    (:func:`otterlib.report.tables.results_table`), ``saturating`` its saturated metrics per eval set."""
    head = (f"**What these numbers say (generated from them).** Data: {facts.data_label}; protocol: "
            f"{facts.protocol}; {METHOD.upper()} against the best of {', '.join(label(b) for b in grid.baselines)} "
            f"in every cell.")
    parts = [" ".join([head, *_verdict_sentences(t, grid, rules)]), " ".join(_chance_sentences(table, saturating)),
             " ".join(_evidence_sentences(facts, t, grid))]
    return "\n\n".join(p for p in parts if p)
