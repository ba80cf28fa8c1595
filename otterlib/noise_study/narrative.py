"""The closing text of notebook 06, written from the study's numbers (they choose every verdict and comparison).

Every statement is computed from :func:`~otterlib.noise_study.results.verdict_table`,
:func:`~otterlib.noise_study.results.metric_table` and :func:`~otterlib.noise_study.results.precision_table`:
the verdict of every FH@1 cell (paired bootstrap over seeds and images, and the fixed tolerance rule), how
OTTER's advantage moves with noise, data efficiency, and whether the mechanism works (target precision at
the end of training against chance, with its interval over seeds; mass rescued for wrong-caption pairs).
"""
from __future__ import annotations

import pandas as pd

from otterlib.noise_study.results import StudyResults, metric_table, precision_table, verdict_table
from otterlib.report import EVAL_SET_LABELS, METHOD_LABELS

PLURALS: dict[str, str] = {"win": "wins", "tie": "ties", "loss": "losses"}


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _signed(x: float) -> str:
    return f"{x:+.1f}"


def _tally(v: pd.DataFrame, column: str) -> str:
    """``"2 wins, 9 ties, 1 loss"`` of a verdict column."""
    counts = v[column].value_counts()
    return ", ".join(f"{n} {o if n == 1 else PLURALS[o]}" for o in PLURALS for n in [int(counts.get(o, 0))])


def _cell_lines(v: pd.DataFrame) -> list[str]:
    lines = []
    for r in v.itertuples():
        lines.append(f"- p = {r.noise:g}, {r.size:,} pairs, {EVAL_SET_LABELS.get(r.eval_set, r.eval_set)}: OTTER "
                     f"{r.otter:.1f} vs {_label(r.best_baseline)} {r.baseline:.1f} → {_signed(r.diff)} points "
                     f"[95 % CI {_signed(r.low)}, {_signed(r.high)}]: **{r.verdict}** (fixed rule: {r.fixed_rule})")
    return lines


def _noise_trend(v: pd.DataFrame) -> str:
    means = v.groupby("noise", sort=True)["diff"].mean()
    trend = " → ".join(f"{_signed(d)} (p = {p:g})" for p, d in means.items())
    change = means.iloc[-1] - means.iloc[0]
    direction = ("rises" if change > 0 else "falls") if abs(change) >= 0.05 else "stays level"
    steps = means.diff().iloc[1:]
    monotonic = bool((steps >= 0).all() or (steps <= 0).all())
    return (f"Averaged over sizes and eval sets, OTTER − best baseline on FH@1 goes {trend} points: it "
            f"{direction} from the cleanest to the noisiest data ({_signed(change)} points)"
            + ("." if monotonic else ", but not monotonically.")
            + " These averages carry no interval; the per-cell verdicts above say which differences are "
              "significant.")


def _data_efficiency(table: pd.DataFrame, sizes: list[int]) -> list[str]:
    small, large = min(sizes), max(sizes)
    lines = []
    for (eval_set, noise), g in table.groupby(["eval_set", "noise"], sort=False):
        otter_small = g[(g["method"] == "otter") & (g["size"] == small)]["mean"].iloc[0]
        base_large = g[(g["method"] != "otter") & (g["size"] == large)].sort_values("mean").iloc[-1]
        reaches = "reaches" if otter_small >= base_large["mean"] else "does not reach"
        lines.append(f"{EVAL_SET_LABELS.get(eval_set, eval_set)}, p = {noise:g}: OTTER with {small:,} pairs "
                     f"{otter_small:.1f}, {reaches} the best baseline with {large:,} pairs "
                     f"({_label(base_large['method'])} {base_large['mean']:.1f}).")
    return lines


def _versus(a: pd.Series, b: pd.Series) -> str:
    """How interval a (``end_low``..``end_high``) stands to interval b: ``above``, ``below`` or ``level with``."""
    return "above" if a["end_low"] > b["end_high"] else "below" if a["end_high"] < b["end_low"] else "level with"


def _mechanism(prec: pd.DataFrame, noise: float, size: int) -> list[str]:
    cell = prec[(prec["noise"] == noise) & (prec["size"] == size)].set_index("method")
    if "otter" not in cell.index:
        return []
    o = cell.loc["otter"]
    ratio = o["end"] / o["chance"] if o["chance"] > 0 else float("inf")
    lines = [f"At p = {noise:g} with {size:,} pairs, OTTER's target precision goes from {o['start']:.3f} at the "
             f"first step to {o['end']:.3f} at the last (95 % interval over seeds {o['end_low']:.3f}–"
             f"{o['end_high']:.3f}; {ratio:.1f}× chance {o['chance']:.3f}; InfoNCE 0 by definition, LS = chance)."]
    if o["end_low"] > o["chance"]:
        lines.append("OTTER's off-diagonal targets find true matches above chance at the end of training.")
    else:
        lines.append("OTTER's off-diagonal targets are not distinguishable from a uniform spread at the end of "
                     "training (the interval reaches chance): the mechanism fails at its first step here, so "
                     "OTTER's targets carry no more information than label smoothing's.")
    if "kd" in cell.index:
        kd = cell.loc["kd"]
        lines.append(f"KD's softmax targets end at {kd['end']:.3f} ({kd['end_low']:.3f}–{kd['end_high']:.3f}), "
                     f"{_versus(kd, o)} OTTER's.")
    others = "; ".join(f"{_label(m)} {cell.loc[m, 'true_mass']:.3f} / {cell.loc[m, 'false_mass']:.3f}"
                       for m in ("kd", "label_smoothing", "infonce") if m in cell.index)
    lines.append(f"Per row, OTTER's target puts {o['true_mass']:.3f} of its mass on pairs that match and "
                 f"{o['false_mass']:.3f} on pairs that do not ({others}).")
    if pd.notna(o["wrong_rescue"]):
        lines.append(f"For wrong-caption pairs with a true match in the batch, OTTER's target puts "
                     f"{o['wrong_rescue']:.3f} of the row's mass on true matches (a uniform spread of its "
                     f"off-diagonal mass: {o['wrong_rescue_uniform']:.3f}).")
    return lines


def closing_text(res: StudyResults) -> str:
    """Markdown paragraphs summarising the study from its numbers."""
    cfg = res.config
    v1 = verdict_table(res, ks=[1])
    vall = verdict_table(res)
    table = metric_table(res, k=1)
    prec = precision_table(res)
    n_seeds, n_images = int(v1["seeds"].iloc[0]), sorted(set(v1["images"]))
    parts = [
        f"**Result (generated from the numbers).** {len(cfg['seeds'])} seeds per cell, {cfg['steps']:,} steps at batch "
        f"{cfg['batch_size']}; eval images per set: {', '.join(map(str, n_images))}. A cell is a tie when the 95 % "
        f"paired-bootstrap interval of OTTER − best baseline (resampling {n_seeds} seeds and the eval images) "
        f"contains 0; the paper-style rule calls a tie within {cfg['tie_tolerance']} points.",
        f"On FH@1, OTTER − best baseline is {_tally(v1, 'verdict')} of {len(v1)} cells by the statistical rule "
        f"({_tally(v1, 'fixed_rule')} by the fixed rule). Over every FH@k cell: {_tally(vall, 'verdict')} of "
        f"{len(vall)} (fixed rule: {_tally(vall, 'fixed_rule')}).",
        "\n".join(_cell_lines(v1)),
        _noise_trend(v1),
        "Data efficiency (FH@1): " + " ".join(_data_efficiency(table, cfg["sizes"])),
    ]
    for noise in (max(cfg["noise_levels"]), min(cfg["noise_levels"])):
        parts.append(" ".join(_mechanism(prec, noise, max(cfg["sizes"]))))
    return "\n\n".join(p for p in parts if p)
