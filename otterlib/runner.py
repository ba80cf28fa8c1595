"""Runs the numbered notebooks headlessly with papermill, in order (what ``./run_all.sh`` calls).

Plan: ``00_setup`` → ``01_download_data`` → ``02_prepare_eval_sets`` → ``03_train`` for every
(setting, method, seed) → ``04_evaluate`` for every such run and reference model → ``05_results``
→ ``06_noise_study`` (profiles on the synthetic world only: its eval sets are the world's).
Executed copies land under ``results/<profile>/``; a step whose outputs exist is skipped unless
``--force``. A failure stops the run with the failed notebook, its parameters and the executed copy
that holds the traceback. Either way the executed notebooks are then rendered to HTML with an index page
(:mod:`otterlib.html_report`), and the run ends with a summary: table, HTML index, OTTER's tally, total time.

The console gets one line per step (on a terminal, the running step's line is shown while it runs).
Kernels run headless (``OTTER_HEADLESS=1``: progress bars as text, :mod:`otterlib.progress`), over
CurveZMQ-encrypted loopback sockets when pyzmq and the kernel support it (so ipykernel does not warn about
plain-text TCP), and each cell's stream output is merged with its carriage returns resolved, so that a
saved progress bar shows its last state.

``--setting NAME`` (repeatable) keeps the 03/04 steps of those settings and the shared steps, so that
separate machines can each run settings into one shared ``results/``: the shared steps' executed copies
then land in ``results/<profile>/selections/<names>/``, and the reference models are evaluated by the
selection holding the profile's first setting (the README row they are compared with). ``--dry-run`` also
lists the compute and disk plans (:mod:`otterlib.plans`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nbformat import NotebookNode
from traitlets.config import Config

from otterlib.config import Profile, load_profile
from otterlib.env import REPO_ROOT, configure_offline
from otterlib import layout, report
from otterlib.html_report import build_site
from otterlib.plans import compute_plan, disk_plan, select_settings, source_notes
from otterlib.progress import HEADLESS_ENV

NOTEBOOK_DIR: Path = REPO_ROOT / "notebooks"
KERNEL_NAME = "otter"
"""The Jupyter kernel the runner executes notebooks with: this interpreter, registered under sys.prefix."""


@dataclass
class Step:
    """One notebook execution."""

    notebook: str
    output: Path
    parameters: dict[str, Any]
    done: Callable[[], bool] = field(default=lambda: False)
    """True when the step's outputs already exist (skipped unless forced)."""

    @property
    def label(self) -> str:
        extra = [str(self.parameters[k]) for k in ("setting", "method", "reference") if self.parameters.get(k)]
        if self.parameters.get("seed") is not None:
            extra.append(f"seed{self.parameters['seed']}")
        return self.notebook + (f" [{'/'.join(extra)}]" if extra else "")


class StepFailed(RuntimeError):
    def __init__(self, step: Step, cause: BaseException) -> None:
        self.step, self.cause = step, cause
        super().__init__(
            f"notebook {step.notebook}.ipynb failed\n  parameters: {json.dumps(step.parameters, default=str)}\n"
            f"  executed copy with the traceback: {step.output}\n  error: {_first_line(cause)}")


def _first_line(err: BaseException) -> str:
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    return f"{ename}: {str(evalue).strip().splitlines()[0] if str(evalue).strip() else ''}"


def plan(profile: Profile, overrides: dict[str, Any] | None = None, only: set[str] | None = None,
         settings: list[str] | None = None) -> list[Step]:
    """The ordered steps for a profile (``only`` keeps notebooks whose name starts with one of the given prefixes;
    ``settings`` keeps those settings' runs and the shared steps, see the module docstring)."""
    overrides = dict(overrides or {})
    selected = [s.name for s in select_settings(profile, settings)]
    root = profile.results_root
    shared = root if settings is None else root / "selections" / "+".join(selected)
    base = {"profile": profile.name, "overrides": overrides}
    steps = [
        Step("00_setup", shared / "00_setup.ipynb", dict(base)),
        Step("01_download_data", shared / "01_download_data.ipynb", base | {"settings": settings},
             done=lambda: layout.training_data_ready(profile, settings)),
        Step("02_prepare_eval_sets", shared / "02_prepare_eval_sets.ipynb", dict(base),
             done=lambda: layout.eval_sets_ready(profile) and layout.eval_rows_path(
                 layout.trivial_dir(profile), profile.eval.mode).is_file()),
    ]
    runs = [run for run in profile.runs() if run[0] in selected]
    for setting, method, seed in runs:
        run_dir = profile.run_dir(setting, method, seed)
        steps.append(Step("03_train", run_dir / "03_train.ipynb",
                          base | {"setting": setting, "method": method, "seed": seed},
                          done=lambda d=run_dir: (d / "metrics.json").is_file()))
    for setting, method, seed in runs:
        run_dir = profile.run_dir(setting, method, seed)
        steps.append(Step("04_evaluate", run_dir / "04_evaluate.ipynb",
                          base | {"setting": setting, "method": method, "seed": seed},
                          done=lambda d=run_dir: layout.eval_rows_path(d, profile.eval.mode).is_file()))
    for ref in profile.eval.references if profile.settings[0].name in selected else []:
        ref_dir = layout.reference_dir(profile, ref)
        steps.append(Step("04_evaluate", ref_dir / "04_evaluate.ipynb", base | {"reference": ref},
                          done=lambda d=ref_dir: layout.eval_rows_path(d, profile.eval.mode).is_file()))
    steps.append(Step("05_results", shared / "05_results.ipynb", dict(base)))
    if profile.data.synthetic_world:
        steps.append(Step("06_noise_study", shared / "06_noise_study.ipynb", dict(base),
                          done=lambda: (root / "noise_study" / "study.json").is_file()))
    if only:
        steps = [s for s in steps if any(s.notebook.startswith(o) for o in only)]
    return steps


def ensure_kernel() -> str:
    """Register this interpreter as the ``otter`` kernel (inside ``sys.prefix``) unless it already is."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if Path(spec.argv[0]).absolute() == Path(sys.executable).absolute():
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name="Python 3 (otter)", prefix=sys.prefix)
    return KERNEL_NAME


def kernel_config() -> Config:
    """Traitlets config for the runner's kernel managers: CurveZMQ transport encryption where pyzmq has it
    (``auto`` provisions keys when the kernelspec declares support, as ipykernel's does)."""
    import zmq

    config = Config()
    config.KernelManager.transport_encryption = "auto" if zmq.has("curve") else "disabled"
    return config


def tidy_streams(cell: NotebookNode, cell_index: int, **_: Any) -> None:
    """Merge a cell's consecutive stdout (stderr) outputs and resolve carriage returns: a text progress bar
    keeps only its last state (nbclient hook ``on_cell_executed``, run before papermill saves the cell)."""
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    CoalesceStreamsPreprocessor().preprocess_cell(cell, {}, cell_index)


def execute(step: Step, force: bool) -> None:
    """Run one notebook with papermill in a headless kernel; raises :class:`StepFailed` on any error."""
    import papermill as pm

    step.output.parent.mkdir(parents=True, exist_ok=True)
    params = step.parameters | {"force": force}
    previous = os.environ.get(HEADLESS_ENV)
    os.environ[HEADLESS_ENV] = "1"  # inherited by the kernel papermill starts
    try:
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{step.notebook}.ipynb"), str(step.output), parameters=params,
                            cwd=str(NOTEBOOK_DIR), progress_bar=False, kernel_name=ensure_kernel(),
                            config=kernel_config(), on_cell_executed=tidy_streams)
    except Exception as err:  # papermill raises PapermillExecutionError, nbclient errors, or OSError
        raise StepFailed(step, err) from err
    finally:
        if previous is None:
            os.environ.pop(HEADLESS_ENV)
        else:
            os.environ[HEADLESS_ENV] = previous


def _display(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def run(profile_name: str = "smoke", overrides: dict[str, Any] | None = None, force: bool = False,
        only: set[str] | None = None, echo: Callable[[str], None] = print, dry_run: bool = False,
        settings: list[str] | None = None, status: Callable[[str], None] | None = None) -> int:
    """Execute the plan (``dry_run``: only list it, with what would be skipped, and the compute and disk plans);
    returns a process exit code (0 ok, 1 a notebook failed). ``echo`` gets one line per step and the summary;
    ``status`` (a terminal's transient line) is told which step is running."""
    profile = load_profile(profile_name, overrides)
    configure_offline(profile.offline)
    steps = plan(profile, overrides, only, settings)
    if dry_run:
        for i, step in enumerate(steps, 1):
            state = "skip (outputs exist)" if not force and step.done() else "run"
            echo(f"[{i}/{len(steps)}] {step.label}: {state} -> {_display(step.output)}")
        echo("\nCompute plan (estimated GPU-hours from docs/benchmarks.json; see otterlib.plans):\n"
             + compute_plan(profile, settings).to_string(index=False))
        echo("\nDisk plan (training data):\n" + disk_plan(profile, settings).to_string(index=False))
        echo("\n".join(["", *source_notes(profile, settings)]))
        return 0
    t0 = time.time()
    ran, skipped, code = 0, 0, 0
    echo(f"OTTER suite: profile '{profile.name}' ({profile.description}); {len(steps)} steps; "
         f"results in {profile.results_root}")
    for i, step in enumerate(steps, 1):
        prefix = f"[{i}/{len(steps)} {_fmt(time.time() - t0)}] {step.label}"
        if not force and step.done():
            echo(f"{prefix}: outputs exist, skipped (--force redoes it)")
            skipped += 1
            continue
        if status:
            status(f"{prefix} ...")
        t_step = time.time()
        try:
            execute(step, force)
        except StepFailed as err:
            echo(f"FAILED after {_fmt(time.time() - t0)}: {err}")
            code = 1
            break
        ran += 1
        echo(f"{prefix}: done in {time.time() - t_step:.1f} s -> {_display(step.output)}")
    if status:
        status("rendering the executed notebooks to HTML ...")
    index = build_site(profile)
    for line in summary(profile, index):
        echo(line)
    echo(f"{'Stopped' if code else 'Finished'} in {_fmt(time.time() - t0)}: {ran} notebooks run, {skipped} skipped.")
    return code


def summary(profile: Profile, index: Path) -> list[str]:
    """The closing lines of a run before its total time: the comparison table (if 05 wrote one), the HTML
    index, OTTER's tally (if 05 wrote one)."""
    tables = layout.tables_dir(profile)
    lines = [f"Comparison table: {layout.table_path(profile)}"] if layout.table_path(profile).is_file() else []
    lines.append(f"HTML index: {index}")
    if (tables / "tally.md").is_file():
        lines.append(f"Tally: {report.read_tally_summary(tables)}")
    return lines


def terminal_lines() -> tuple[Callable[[str], None], Callable[[str], None]]:
    """(echo, status) for a terminal: ``status`` shows a transient line (the running step), which the next
    ``echo`` line replaces, so that each step leaves one line."""
    def status(text: str) -> None:
        print(f"\r\033[K{text}", end="", flush=True)

    def echo(text: str) -> None:
        print(f"\r\033[K{text}", flush=True)

    return echo, status


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` (the value read as YAML) -> (key path, value); what ``--set`` takes."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"override {text!r} must look like key.path=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke", help="profile name in data/profiles (default: smoke)")
    parser.add_argument("--force", action="store_true",
                        help="redo steps whose outputs exist (01 then downloads again: combine with --only)")
    parser.add_argument("--only", action="append", metavar="PREFIX",
                        help="run only notebooks starting with PREFIX (e.g. 03 or 05_results); repeatable")
    parser.add_argument("--setting", action="append", metavar="NAME",
                        help="run only this setting's trainings and evaluations (plus the shared steps); repeatable")
    parser.add_argument("--set", action="append", default=[], type=parse_override, metavar="KEY=VALUE",
                        help="override a profile field, e.g. --set train.epochs=1; repeatable")
    parser.add_argument("--dry-run", action="store_true", help="list the steps (and which would be skipped), run none")
    args = parser.parse_args(argv)
    try:
        echo, status = terminal_lines() if sys.stdout.isatty() else (print, None)
        code = run(args.profile, dict(args.set), args.force, set(args.only) if args.only else None,
                   echo=echo, dry_run=args.dry_run, settings=args.setting, status=status)
    except (FileNotFoundError, ValueError) as err:  # a bad profile, override or setting name
        parser.exit(2, f"run_all.sh: {err}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
