"""The results of a profile, built from its eval rows: tables, intervals, the tally, figures, closing text.

Everything is derived from the files the evaluation wrote (CLIP_benchmark-style JSON lines and per-unit score
files), so a table can always be rebuilt from ``results/``. Values are fractions in the rows and percent in
the tables. One module per job:

* :mod:`.grid`: methods, metrics, eval sets, their labels, and the cells a profile should have;
* :mod:`.rows`: reading eval rows, published numbers and score files (hits per image, AP per class);
* :mod:`.intervals`: the bootstrap interval of every trained number;
* :mod:`.tally`: OTTER against the best baseline per cell, by the interval rule and the fixed rule;
* :mod:`.tables`: the tidy table and its Markdown (missing cells shown, provenance, trivial/reference lines);
* :mod:`.figures`: bars, the difference heat map, the matching figure, the off-diagonal histogram;
* :mod:`.matching`: the noisy-matching statistics and their definitions;
* :mod:`.closing`: the generated closing paragraph;
* :mod:`.artefacts`: writing all of it to ``results/<profile>/tables/``.
"""
from otterlib.report.artefacts import Report, read_tally_summary, write_tables
from otterlib.report.closing import RunFacts, closing_paragraph
from otterlib.report.figures import (_pyplot, _save, plot_comparison, plot_difference_heatmap, plot_matching,
                                     plot_off_diagonal_histogram, plot_thumbnails)
from otterlib.report.grid import (EVAL_SET_LABELS, METHOD_LABELS, METHOD_ORDER, METRIC_LABELS, TABLE_METRICS,
                                  TALLY_METRICS, Grid, label)
from otterlib.report.intervals import method_intervals
from otterlib.report.matching import batch_matching_stats, statistics_markdown
from otterlib.report.rows import (HitVectors, Units, align, collect_rows, eval_set_summary, load_hits, read_published,
                                  read_rows, save_hits, seed_units)
from otterlib.report.tables import published_markdown, results_table, saturated
from otterlib.report.tally import TieRules, tally, tally_summary

__all__ = ["Report", "read_tally_summary", "write_tables", "RunFacts", "closing_paragraph", "plot_comparison", "plot_difference_heatmap",
           "plot_matching", "plot_off_diagonal_histogram", "plot_thumbnails", "EVAL_SET_LABELS", "METHOD_LABELS", "METHOD_ORDER",
           "METRIC_LABELS", "TABLE_METRICS", "TALLY_METRICS", "Grid", "label", "method_intervals",
           "batch_matching_stats", "statistics_markdown", "HitVectors", "Units", "align", "collect_rows",
           "eval_set_summary", "load_hits", "read_published", "read_rows", "save_hits", "seed_units",
           "published_markdown", "results_table", "saturated", "TieRules", "tally", "tally_summary",
           "_pyplot", "_save"]
