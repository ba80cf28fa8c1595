"""Every artefact of 05, written from eval rows into one folder (``results/<profile>/tables/``).

``comparison.csv`` (tidy: every line × metric with intervals and published numbers, percent), ``tally.csv``,
the Markdown sections ``table.md``, ``tally.md`` and ``closing.md`` (05 shows them one by one) and
``comparison.md`` (all of them in one document), ``comparison.png`` (bars) and ``difference.png`` (OTTER − best
baseline per cell).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from otterlib.report import figures
from otterlib.report.closing import RunFacts, closing_paragraph
from otterlib.report.grid import METHOD, TABLE_METRICS, TALLY_METRICS, Grid, label
from otterlib.report.intervals import method_intervals
from otterlib.report.tables import (column_order, eval_set_markdown, published_markdown, results_table, saturated,
                                    table_caption, tally_markdown)
from otterlib.report.tally import TieRules, tally, tally_summary

PROTOCOLS: dict[str, str] = {"paper": "paper (the official candidate lists; IN10K labels with their ancestors)",
                             "clean": "clean (duplicate names merged, leaf-only IN10K labels)"}


@dataclass(frozen=True)
class Report:
    """What :func:`write_tables` computed and where it wrote it."""

    table: pd.DataFrame
    """:func:`~otterlib.report.tables.results_table` (percent)."""
    tally: pd.DataFrame
    """:func:`~otterlib.report.tally.tally` over FH@1/5/10 and mAP (percent)."""
    saturating: dict[str, list[str]]
    summary: str
    closing: str
    paths: dict[str, Path]


def _set_heading(eval_set: str, info: Mapping[str, Mapping[str, object]]) -> str:
    facts = info.get(eval_set)
    if not facts:
        return f"### {label(eval_set)}"
    return (f"### {label(eval_set)}: {int(facts['images']):,} images, {int(facts['candidate classes']):,} candidate "
            f"classes, {float(facts['labels per image']):.2f} labels per image")


def table_document(report: Report, grid: Grid, facts: RunFacts, rules: TieRules,
                   eval_sets: Mapping[str, Mapping[str, object]]) -> str:
    """``table.md``: what the data and protocol are, then per eval set its table, then the caption."""
    parts = [f"Data: **{facts.data_label}**. Protocol: {PROTOCOLS.get(facts.protocol, facts.protocol)}. Settings "
             f"(provenance of the paper's numbers for them): "
             + ", ".join(f"{s} ({grid.provenance.get(s, '')})" for s in grid.settings) + "."]
    for eval_set in grid.eval_sets:
        block = report.table[report.table["eval_set"] == eval_set]
        parts += [_set_heading(eval_set, eval_sets), eval_set_markdown(block, report.saturating.get(eval_set, []))]
    return "\n\n".join([*parts, table_caption(report.table, rules.level)])


def tally_document(report: Report, grid: Grid) -> str:
    """``tally.md``: the summary line, the grid of the paper's counted cells, and the mAP grid beside it."""
    t = report.tally
    return "\n\n".join([report.summary, tally_markdown(t[t["tallied"]], TALLY_METRICS, grid.eval_sets),
                         "mAP, reported beside the paper's count (not tallied):",
                         tally_markdown(t[~t["tallied"]], ["map"], grid.eval_sets)])


def comparison_document(sections: Mapping[str, str], grid: Grid, published: pd.DataFrame, title: str) -> str:
    """``comparison.md``: the table, the tally, published numbers when no setting has them beside ours, and
    the closing paragraph."""
    parts = [f"# Zero-shot multi-label recognition: {title}", "## The comparison table", sections["table"],
             f"## {label(METHOD)} − best baseline per cell (points)", sections["tally"]]
    if not set(published["setting"]) & set(grid.settings):
        parts += ["## Published numbers (FH@k, percent; facebookresearch/OTTER README)",
                  "None of this profile's settings has published numbers; the README row is shown for reference "
                  "only: other data, encoders and scale than the runs above, so not comparable with them.",
                  published_markdown(published)]
    return "\n\n".join([*parts, "## What these numbers say", sections["closing"]]) + "\n"


def write_tables(rows: pd.DataFrame, grid: Grid, out_dir: Path, facts: RunFacts, rules: TieRules = TieRules(),
                 published: pd.DataFrame | None = None, eval_sets: Mapping[str, Mapping[str, object]] | None = None,
                 title: str = "") -> Report:
    """Compute the table, intervals, tally and closing paragraph from the eval rows of one protocol mode and
    write every artefact to ``out_dir``. ``eval_sets``: per set its images, candidate classes and labels per
    image (:func:`~otterlib.report.rows.eval_set_summary`), for the headings."""
    published = published if published is not None else rows.iloc[:0].assign(source="")
    intervals = method_intervals(rows, facts.protocol, rules.level, rules.n_boot, rules.seed)
    table = results_table(rows, grid, intervals, published)
    t = tally(rows, grid, rules, mode=facts.protocol)
    saturating = saturated(table)
    closing = closing_paragraph(t, table, saturating, facts, grid, rules)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("comparison.csv", "tally.csv", "table.md", "tally.md", "closing.md",
                                               "comparison.md", "comparison.png", "difference.png")}
    table.round(3).to_csv(paths["comparison.csv"], index=False)
    t.round(3).to_csv(paths["tally.csv"], index=False)
    report = Report(table, t, saturating, tally_summary(t, rules), closing, paths)
    sections = {"table": table_document(report, grid, facts, rules, eval_sets or {}),
                "tally": tally_document(report, grid), "closing": closing}
    for name, text in sections.items():
        paths[f"{name}.md"].write_text(text + "\n")
    paths["comparison.md"].write_text(comparison_document(sections, grid, published, title or facts.profile))
    if table[table["kind"] == "trained"]["value"].notna().any():
        headline = column_order(sorted({m for ms in saturating.values() for m in ms}), TABLE_METRICS)
        figures.plot_comparison(table, paths["comparison.png"], headline)
    else:
        del paths["comparison.png"]
    figures.plot_difference_heatmap(t, paths["difference.png"], TABLE_METRICS, rules.level)
    return report


def read_tally_summary(tables_dir: Path) -> str:
    """The summary line of ``tables_dir/tally.md`` (e.g. "6 of 12 evaluations available. OTTER vs ...")."""
    lines = [line for line in (Path(tables_dir) / "tally.md").read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{tables_dir / 'tally.md'} is empty; rerun 05_results")
    return lines[0]
