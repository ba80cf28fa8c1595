"""The torchrun command lines that train one setting, for a launcher that starts them on every node.

``python -m otterlib.launch --profile paper --setting NAME [--method M] [--seed K] [--set KEY=VALUE ...]``
resolves every (method, seed) run of the setting (all of the profile's methods and the setting's seeds unless
named), writes each run's ``config.yaml`` into its run folder and prints one line per run still to train: the
shell-quoted :func:`otterlib.train.torchrun_command`. With ``--set train.nnodes=N --set
train.rdzv_endpoint=HOST:PORT`` that is torchrun's multi-node rendezvous; a launcher runs each line once per
node (``srun bash -c "$line"``, see ``docs/slurm_train_setting.sbatch``). Runs whose ``metrics.json`` exists
are finished: they are named on stderr and not printed.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from otterlib.config import load_profile, resolve_run, save_yaml
from otterlib.runner import parse_override
from otterlib.train import torchrun_command


def launch_lines(profile_name: str, setting: str, overrides: dict | None = None, methods: list[str] | None = None,
                 seeds: list[int] | None = None, torchrun: str = "torchrun") -> tuple[list[str], list[str]]:
    """(torchrun command lines of the runs still to train, run folders already finished); writes each
    pending run's ``config.yaml``."""
    profile = load_profile(profile_name, overrides)
    pending, finished = [], []
    for method in methods or profile.methods:
        for seed in seeds if seeds is not None else profile.seeds_of(setting):
            cfg = resolve_run(profile, setting, method, seed)
            run_dir = Path(cfg.run_dir)
            if (run_dir / "metrics.json").is_file():
                finished.append(str(run_dir))
                continue
            config_path = run_dir / "config.yaml"
            save_yaml(cfg.to_dict(), config_path)
            pending.append(shlex.join(torchrun_command(cfg, config_path, torchrun)))
    return pending, finished


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m otterlib.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--setting", required=True)
    parser.add_argument("--method", action="append", help="only this method (repeatable; default: the profile's)")
    parser.add_argument("--seed", action="append", type=int, help="only this seed (repeatable; default: the setting's)")
    parser.add_argument("--set", action="append", default=[], type=parse_override, metavar="KEY=VALUE",
                        help="override a profile field, e.g. --set train.nnodes=4; repeatable")
    args = parser.parse_args(argv)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    try:
        pending, finished = launch_lines(args.profile, args.setting, dict(args.set), args.method, args.seed, torchrun)
    except (FileNotFoundError, KeyError, ValueError) as err:
        parser.exit(2, f"otterlib.launch: {err}\n")
    for run_dir in finished:
        print(f"finished, skipped: {run_dir}", file=sys.stderr)
    for line in pending:
        print(line)


if __name__ == "__main__":
    main()
