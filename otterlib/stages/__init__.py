"""One function per notebook stage: what ``notebooks/0N_*.ipynb`` call, so the notebooks stay thin.

Each stage reads a :class:`~otterlib.config.Profile`, writes its outputs where :mod:`otterlib.layout`
says, and returns plain data (dicts, dataclasses, DataFrames) for the notebook to display. One module
per stage: :mod:`.setup` (00), :mod:`.training_data` (01), :mod:`.eval_sets` (02), :mod:`.training` (03),
:mod:`.evaluation` (04), :mod:`.results` (05), :mod:`.noise_study` (06).
"""
from otterlib.stages.eval_sets import (eval_set_thumbnails, goi_label_checks, load_eval_set, prepare_eval_sets,
                                      summarize_eval_set, trivial_baselines)
from otterlib.stages.evaluation import evaluate_run
from otterlib.stages.noise_study import run_noise_study
from otterlib.stages.results import (build_results, noisy_matching_analysis, otter_matching, results_facts,
                                     trained_settings)
from otterlib.stages.setup import setup
from otterlib.stages.training import (read_epochs, read_log, retrieval_table, run_curves, run_facts, setting_curves,
                                      train_run)
from otterlib.stages.training_data import download_table, failure_table, metadata_counts, prepare_training_data

__all__ = ["setup", "prepare_training_data", "download_table", "failure_table", "metadata_counts",
           "prepare_eval_sets", "load_eval_set", "summarize_eval_set", "goi_label_checks", "trivial_baselines",
           "eval_set_thumbnails", "train_run", "read_log", "read_epochs", "retrieval_table", "run_facts", "run_curves",
           "setting_curves", "evaluate_run", "results_facts", "build_results", "otter_matching",
           "noisy_matching_analysis", "trained_settings",
           "run_noise_study"]
