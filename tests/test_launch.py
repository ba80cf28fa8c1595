"""Launching training: the torchrun command (one node / multi-node rendezvous) and the per-setting launcher."""
import shlex

import pytest
import yaml

from otterlib import config
from otterlib.launch import launch_lines
from otterlib.train import torchrun_command


def _run(overrides=None, method="otter"):
    return config.resolve_run(config.load_profile("paper", overrides), "cc3m-rn50-declutr-sci-base", method)


def test_one_node_is_a_standalone_torchrun(tmp_path):
    cmd = torchrun_command(_run(), tmp_path / "config.yaml", "/venv/bin/torchrun")
    assert cmd == ["/venv/bin/torchrun", "--standalone", "--nproc_per_node=8", "-m", "otterlib.train",
                   "--config", str(tmp_path / "config.yaml")]


def test_several_nodes_use_torchruns_rendezvous_with_an_id_per_run(tmp_path):
    cfg = _run({"train.nnodes": 4, "train.rdzv_endpoint": "gpu-node-001:29500"}, method="kd")
    cmd = torchrun_command(cfg, tmp_path / "config.yaml")
    assert cmd == ["torchrun", "--nnodes=4", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu-node-001:29500",
                   "--rdzv-id=paper-cc3m-rn50-declutr-sci-base-kd-seed0", "--nproc_per_node=8",
                   "-m", "otterlib.train", "--config", str(tmp_path / "config.yaml")]
    assert "--standalone" not in cmd
    mine = _run({"train.nnodes": 2, "train.rdzv_endpoint": "[fe80::1]:29400", "train.rdzv_id": "slurm-77",
                 "train.rdzv_backend": "static"})
    assert {"--rdzv-id=slurm-77", "--rdzv-backend=static", "--rdzv-endpoint=[fe80::1]:29400"} <= set(
        torchrun_command(mine, tmp_path / "c.yaml"))


@pytest.mark.parametrize("overrides,match", [
    ({"train.nnodes": 2}, "needs train.rdzv_endpoint as 'host:port'.*None"),
    ({"train.nnodes": 2, "train.rdzv_endpoint": "gpu-node-001"}, "'gpu-node-001'"),
    ({"train.nnodes": 0}, "must be >= 1"),
])
def test_bad_multi_node_fields_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        torchrun_command(_run(overrides), tmp_path / "config.yaml")


def test_launcher_writes_each_runs_config_and_prints_one_command_per_pending_run(tmp_path):
    overrides = {"results_dir": str(tmp_path), "train.nnodes": 2, "train.rdzv_endpoint": "head:29500", "seeds": [0, 1]}
    profile = config.load_profile("paper", overrides)
    done = profile.run_dir("cc3m-rn50-sbert-base", "kd", 1)
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    pending, finished = launch_lines("paper", "cc3m-rn50-sbert-base", overrides, torchrun="/v/torchrun")
    assert finished == [str(done)] and len(pending) == 4 * 2 - 1
    first = shlex.split(pending[0])
    assert first[:3] == ["/v/torchrun", "--nnodes=2", "--rdzv-backend=c10d"]
    config_path = profile.run_dir("cc3m-rn50-sbert-base", "infonce", 0) / "config.yaml"
    assert first[-2:] == ["--config", str(config_path)]
    written = config.RunConfig.from_dict(yaml.safe_load(config_path.read_text()))
    assert (written.method, written.train.nnodes, written.train.rdzv_endpoint) == ("infonce", 2, "head:29500")
    only, _ = launch_lines("paper", "cc3m-rn50-sbert-base", overrides, methods=["otter"], seeds=[1])
    assert len(only) == 1 and "--rdzv-id=paper-cc3m-rn50-sbert-base-otter-seed1" in only[0]


def test_run_training_joins_the_rendezvous_even_with_one_process_per_node(tmp_path, monkeypatch):
    import otterlib.train as trainer

    cfg = _run({"results_dir": str(tmp_path), "train.nnodes": 2, "train.nproc": 1, "train.rdzv_endpoint": "h:1"})
    seen = []

    class FakeTorchrun:
        def __init__(self, cmd, **kwargs):
            seen.append(cmd)
            self.stdout, self.returncode = iter(["waiting for the other node\n"]), 0

        def wait(self):
            (tmp_path / "paper" / cfg.setting / "otter" / "seed0" / "metrics.json").write_text('{"done": 1}')
            return 0

    monkeypatch.setattr(trainer.subprocess, "Popen", FakeTorchrun)
    lines = []
    result = trainer.run_training(cfg, echo=lines.append)
    assert result.metrics == {"done": 1} and lines[-1] == "waiting for the other node"
    assert "--nnodes=2" in seen[0] and "--nproc_per_node=1" in seen[0]
    assert (tmp_path / "paper" / cfg.setting / "otter" / "seed0" / "config.yaml").is_file()


@pytest.mark.slow
def test_two_nodes_meet_at_the_rendezvous_and_train_one_run(tmp_path, tiny_data_root):
    """Two 'nodes' on this machine run the launcher's command line as printed: one run, world size 2."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = {"results_dir": str(tmp_path), "data.sources.cc3m.root": str(tiny_data_root), "train.nnodes": 2, "train.nproc": 1,
                 "train.rdzv_endpoint": f"127.0.0.1:{port}",
                 "settings.1.train": {"epochs": 1, "max_steps_per_epoch": 2}}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    (line,), _ = launch_lines("smoke", "tiny-scratch", overrides, methods=["infonce"], torchrun=torchrun)
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    nodes = [subprocess.Popen(shlex.split(line), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    run_dir = config.load_profile("smoke", overrides).run_dir("tiny-scratch", "infonce", 0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_steps"] == 2
    a, b = metrics["rank_param_checksums"]
    assert a == b
