"""Stage 05: comparison tables, tally, intervals and the mechanism figures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from otterlib import layout, report
from otterlib.config import Profile, resolve_run


def results_facts(profile: Profile, rows: pd.DataFrame) -> report.RunFacts:
    """What the runs behind ``rows`` (eval rows of the profile) were: data, training pairs (the largest training
    manifest of the settings' sources), optimizer steps (each finished run's ``metrics.json``), batch size, seeds
    and protocol."""
    from otterlib.config import setting_train

    trained = rows[rows["kind"] == "trained"]
    steps = []
    for run_dir in sorted(set(trained["run_dir"])):
        metrics = Path(run_dir) / "metrics.json"
        if metrics.is_file():
            steps.append(int(json.loads(metrics.read_text())["global_steps"]))
    sources = tuple(dict.fromkeys(s.source for s in profile.settings))
    manifests = [layout.manifest_path(profile.data.source(name), "train") for name in sources]
    totals = [int(json.loads(m.read_text())["total"]) for m in manifests if m.is_file()]
    seeds = trained.groupby(["setting", "method", "eval_set"])["seed"].nunique()
    return report.RunFacts(
        profile=profile.name, synthetic=profile.data.synthetic_world, sources=sources,
        train_pairs=max(totals) if totals else None,
        steps=tuple(steps), batch_size=max(setting_train(profile, s.name).batch_size for s in profile.settings),
        seeds=int(seeds.max()) if len(seeds) else 0, protocol=profile.eval.mode)


def build_results(profile: Profile, level: float = 0.95, n_boot: int = 2000, tolerance: float = 0.1
                  ) -> report.Report:
    """Collect every eval row of the profile's protocol mode and write the tables, tally, figures and closing
    paragraph to ``results/<profile>/tables/`` (:func:`otterlib.report.write_tables`). ``level``, ``n_boot``:
    the paired-bootstrap interval of the tie rule; ``tolerance``: the fixed rule's, in points."""
    mode = profile.eval.mode
    all_rows = report.collect_rows(profile.results_root)
    rows = all_rows[all_rows["mode"] == mode]
    if rows.empty:
        raise FileNotFoundError(f"no {mode}-mode eval rows under {profile.results_root}; run 04_evaluate first")
    info = report.eval_set_summary(profile.results_root, mode).to_dict(orient="index")
    return report.write_tables(rows, report.Grid.from_profile(profile), layout.tables_dir(profile),
                               results_facts(profile, rows), report.TieRules(level, n_boot, tolerance),
                               report.read_published(), info, title=f"{profile.name} profile")


def trained_settings(profile: Profile, method: str) -> list[str]:
    """The settings whose first-seed ``method`` run has finished training (``metrics.json``): what the figures of
    05 can show when settings run on separate machines and only some have finished."""
    return [s.name for s in profile.settings if method in profile.methods
            and (profile.run_dir(s.name, method, profile.seeds_of(s.name)[0]) / "metrics.json").is_file()]


def otter_matching(profile: Profile, setting: str, n: int = 9) -> tuple[np.ndarray, list[str], Path]:
    """OTTER's target matrix ``α·I + (1−α)·M̃`` for the first ``n`` held-out validation pairs, computed with the
    run's final EMA teacher (eval mode), as in the paper's matching figure. Returns (targets (n, n), the n
    captions, the PNG written to ``results/<profile>/tables/matching_<setting>.png``, with the images as the
    teacher saw them (centre crop) beside the rows)."""
    from otterlib.checkpoint import LATEST, checkpoint_dir, load
    from otterlib.data.loader import build_eval_pairs_loader
    from otterlib.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
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
    pixels = images * torch.tensor(CLIP_STD)[:, None, None] + torch.tensor(CLIP_MEAN)[:, None, None]
    title = (f"OTTER targets α·I + (1−α)·M̃ (α = {cfg.loss.alpha:g}), {setting}: final EMA teacher on {n} "
             f"held-out pairs")
    path = report.plot_matching(targets.numpy(), captions, layout.tables_dir(profile) / f"matching_{setting}.png",
                                images=pixels.permute(0, 2, 3, 1).numpy(), title=title)
    return targets.numpy(), list(captions), path


def noisy_matching_analysis(profile: Profile, setting: str, method: str = "infonce", n_batches: int = 10,
                            scale: float = 100.0) -> tuple[pd.DataFrame, Path, str]:
    """The paper's motivation, measured with a trained run: on training batches of the global batch size,
    P = softmax(scale · v·tᵀ) of the run's best checkpoint; per batch the official ``dataset_analysis.py``
    statistics (mean paired probability, best non-paired probability, ...). Returns the table (one row per
    batch plus the mean), a histogram of all off-diagonal probabilities (``tables/off_diag_<setting>.png``) and
    the Markdown that defines the statistics for this batch size (:func:`otterlib.report.statistics_markdown`)."""
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
    return table.round(4), png, report.statistics_markdown(cfg.train.batch_size, scale)
