"""Stage 06: the controlled-noise study (locked encoders, trainable heads, synthetic pairs of known truth)."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from otterlib.config import Profile, config_hash


def study_dir(profile: Profile) -> Path:
    """``results/<profile>/noise_study``: every file of the study."""
    return profile.results_root / "noise_study"


def study_fingerprint(profile: Profile) -> str:
    """Hash of everything that changes the study's numbers: its grid, every run's configuration, the world's
    draw parameters and the eval protocol."""
    from otterlib.noise_study.runs import run_config, study_methods

    ns = profile.noise_study
    runs = [run_config(profile, ns, m, s).to_dict() for m in study_methods(profile, ns) for s in ns.seeds]
    return config_hash({"study": dataclasses.asdict(ns), "runs": runs,
                        "synthetic": dataclasses.asdict(profile.data.synthetic),
                        "eval": dataclasses.asdict(profile.eval)})


def run_noise_study(profile: Profile, force: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the study unless ``results/<profile>/noise_study`` already holds it for this configuration (or
    ``force``); then build its tables, figures and generated closing text from the result files.

    Returns ``{"results", "table", "formatted", "verdicts", "precision", "timing", "speed", "figures",
    "closing"}``.
    """
    from otterlib.env import git_sha
    from otterlib.noise_study import narrative, plots, results
    from otterlib.noise_study.data import build_study_data
    from otterlib.noise_study.runs import TaskResult, run_grid, study_methods, study_tasks

    if not profile.data.synthetic_world:
        raise ValueError(f"profile {profile.name!r} has no synthetic source; the noise study needs the synthetic "
                         "world's eval sets (a data.sources entry with origin: synthetic, e.g. the smoke profile)")
    out = study_dir(profile)
    fingerprint = study_fingerprint(profile)
    marker = out / "study.json"
    stale = not marker.is_file() or json.loads(marker.read_text()).get("fingerprint") != fingerprint
    if force or stale:
        ns = profile.noise_study
        out.mkdir(parents=True, exist_ok=True)
        (out / "workers.log").unlink(missing_ok=True)
        t0, cpu0 = time.time(), time.process_time()
        data = build_study_data(profile, ns)
        data.info |= {"wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1)}
        echo(f"features ready in {time.time() - t0:.0f} s: {data.info}")
        n_tasks, t_grid = len(study_tasks(ns)), time.time()
        done: list[TaskResult] = []

        def progress(r: TaskResult) -> None:
            done.append(r)
            echo(f"[{len(done)}/{n_tasks} {time.time() - t_grid:.0f} s] p={r.task.noise:g} n={r.task.size} "
                 f"seed={r.task.seed}")

        grid = run_grid(profile, ns, data, out / "workers.log", progress=progress)
        grid_s = time.time() - t_grid
        methods = study_methods(profile, ns)
        n_runs = n_tasks * len(methods)
        results.write_results(out, ns, methods, data, grid, {
            "fingerprint": fingerprint, "git": git_sha(), "n_runs": n_runs, "grid_wall_s": round(grid_s, 1),
            "runs_per_s": round(n_runs / grid_s, 3), "study_wall_s": round(time.time() - t0, 1)})
    res = results.read_results(out)
    table = results.metric_table(res, k=1)
    verdicts = results.verdict_table(res)
    figures = {"metric_vs_noise": plots.plot_metric_vs_noise(table, out / "fh1_vs_noise.png"),
               "precision": plots.plot_precision_curves(res.precision, out / "target_precision.png")}
    if res.figure is not None:
        f = res.figure
        figures["target_matrix"] = plots.plot_target_matrix(
            f["targets"], f["truth"], f["wrong"], [str(c) for c in f["captions"]], out / "otter_targets.png",
            title=f"OTTER targets at the last step (p = {float(f['noise']):g}, {int(f['size']):,} pairs, "
                  f"seed {int(f['seed'])}); red: true match")
    closing = narrative.closing_text(res)
    (out / "closing.md").write_text(closing + "\n")
    formatted = results.formatted_table(table)
    (out / "fh1_table.md").write_text(formatted.to_markdown() + "\n")
    verdicts.to_csv(out / "verdicts.csv", index=False)
    return {"results": res, "table": table, "formatted": formatted, "verdicts": verdicts,
            "precision": results.precision_table(res), "timing": results.timing_table(res),
            "speed": results.timing_summary(res), "figures": figures, "closing": closing}
