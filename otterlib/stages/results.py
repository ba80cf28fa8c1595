"""Stage 05: comparison tables, tally, intervals and the mechanism figures."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from otterlib import layout
from otterlib.config import Profile, resolve_run


def build_results(profile: Profile) -> dict[str, Any]:
    """Collect every eval row of the profile, write the comparison table, tally and plot; returns them."""
    from otterlib import report

    mode = profile.eval.mode
    all_rows = report.collect_rows(profile.results_root)
    rows = all_rows[all_rows["mode"] == mode]
    if rows.empty:
        raise FileNotFoundError(f"no {mode}-mode eval rows under {profile.results_root}; run 04_evaluate first")
    paths = report.write_tables(rows, layout.tables_dir(profile), title=f"{profile.name} profile, {mode} protocol")
    tally = report.tally(rows)
    return {"rows": rows, "table": report.comparison_table(rows), "tally": tally,
            "summary": report.tally_summary(tally), "paths": paths,
            "eval_sets": report.eval_set_summary(profile.results_root, mode)}


def trained_settings(profile: Profile, method: str) -> list[str]:
    """The settings whose first-seed ``method`` run has finished training (``metrics.json``): what the figures of
    05 can show when settings run on separate machines and only some have finished."""
    return [s.name for s in profile.settings if method in profile.methods
            and (profile.run_dir(s.name, method, profile.seeds_of(s.name)[0]) / "metrics.json").is_file()]


def bootstrap_table(profile: Profile, k: int = 1, n_boot: int = 1000) -> pd.DataFrame:
    """FH@k with a 95% percentile-bootstrap interval per (setting, method, eval set) of each setting's first
    seed, and the paired-bootstrap p-value that OTTER is not better than that method on the same images (paired
    by image id; hits of different image sets raise ValueError)."""
    from otterlib import report

    hits: dict[tuple[str, str, str], report.HitVectors] = {}
    for s in profile.settings:
        for m in profile.methods:
            for set_cfg in profile.eval.sets:
                run_dir = profile.run_dir(s.name, m, profile.seeds_of(s.name)[0])
                path = layout.hits_path(run_dir, set_cfg.name, profile.eval.mode)
                if path.is_file():
                    hits[(s.name, m, set_cfg.name)] = report.load_hits(path)
    rows = []
    for (setting, method, eval_set), vectors in hits.items():
        h = vectors.at(k)
        lo, hi = report.bootstrap_ci(h, n_boot=n_boot)
        otter = hits.get((setting, "otter", eval_set))
        p = (report.paired_bootstrap_pvalue(*report.pair_hits(otter, vectors, k), n_boot=n_boot)
             if otter is not None and method != "otter" else float("nan"))
        rows.append({"setting": setting, "method": method, "eval_set": eval_set, f"fh@{k} %": 100 * h.mean(),
                     "ci95_low %": 100 * lo, "ci95_high %": 100 * hi, "p(OTTER not better)": p})
    return pd.DataFrame(rows).round(3)


def otter_matching(profile: Profile, setting: str, n: int = 9) -> tuple[np.ndarray, list[str], Path]:
    """OTTER's target matrix ``α·I + (1−α)·M̃`` for the first ``n`` held-out validation pairs, computed with the
    run's final EMA teacher (eval mode), as in the paper's matching figure. Returns (targets (n, n), the n
    captions, the PNG written to ``results/<profile>/tables/matching_<setting>.png``)."""
    from otterlib import report
    from otterlib.checkpoint import LATEST, checkpoint_dir, load
    from otterlib.data.loader import build_eval_pairs_loader
    from otterlib.data.transforms import eval_transform
    from otterlib.losses import create_loss
    from otterlib.models import create_model
    from otterlib.train import loss_kwargs

    cfg = resolve_run(profile, setting, "otter")
    ckpt = load(checkpoint_dir(Path(cfg.run_dir)) / LATEST)
    teacher = create_model(cfg.model)
    teacher.load_state_dict(ckpt["teacher"]["module"])
    teacher.eval()
    loader = build_eval_pairs_loader(layout.manifest_path(cfg.data, "val"), batch_size=n,
                                     transform=eval_transform(cfg.train.image_size))
    images, captions = next(iter(loader))
    with torch.no_grad():
        t_img, t_txt = teacher(images, list(captions))
        targets, _ = create_loss("otter", **loss_kwargs(cfg)).targets(t_img, t_txt)
    path = report.plot_matching(targets.numpy(), captions, layout.tables_dir(profile) / f"matching_{setting}.png",
                                title=f"OTTER targets, {setting} (EMA teacher, held-out pairs)")
    return targets.numpy(), list(captions), path


def noisy_matching_analysis(profile: Profile, setting: str, method: str = "infonce", n_batches: int = 10,
                            scale: float = 100.0) -> tuple[pd.DataFrame, Path]:
    """The paper's motivation, measured with a trained run: on training batches of the global batch size,
    P = softmax(scale · v·tᵀ) of the run's best checkpoint; per batch the official ``dataset_analysis.py``
    statistics (mean paired probability, best non-paired probability, ...). Returns the table (one row per
    batch plus the mean) and a histogram of all off-diagonal probabilities (``tables/off_diag_<setting>.png``)."""
    from otterlib import report
    from otterlib.checkpoint import BEST, checkpoint_dir, load_student_weights
    from otterlib.data.loader import build_eval_pairs_loader
    from otterlib.data.transforms import eval_transform
    from otterlib.models import create_model

    cfg = resolve_run(profile, setting, method)
    model = create_model(cfg.model)
    load_student_weights(model, checkpoint_dir(Path(cfg.run_dir)) / BEST)
    model.eval()
    loader = build_eval_pairs_loader(layout.manifest_path(cfg.data, "train"), batch_size=cfg.train.batch_size,
                                     transform=eval_transform(cfg.train.image_size))
    rows, off_diagonal = [], []
    with torch.no_grad():
        for i, (images, captions) in enumerate(loader):
            if i == n_batches or len(captions) < cfg.train.batch_size:
                break
            img, txt = model(images, list(captions))
            probs = torch.softmax(scale * img @ txt.T, dim=1).numpy()
            rows.append(report.batch_matching_stats(probs))
            off_diagonal.append(probs[~np.eye(len(probs), dtype=bool)])
    if not rows:
        raise ValueError(f"fewer than {cfg.train.batch_size} training pairs: no full batch to analyse")
    table = pd.DataFrame(rows)
    table.loc["mean"] = table.mean()
    png = report.plot_off_diagonal_histogram(
        np.concatenate(off_diagonal), layout.tables_dir(profile) / f"off_diag_{setting}.png",
        title=f"{setting} / {method}: batches of {cfg.train.batch_size} training pairs")
    return table.round(4), png
