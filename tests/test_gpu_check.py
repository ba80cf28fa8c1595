"""The device check's CPU side: the wheels it would carry, the stand-in venv run_all.sh accepts, the artefact
check, the gpu-smoke profile, part scheduling, and (slow) the whole check at tiny shapes on the CPU."""
import json
import subprocess
from pathlib import Path

import pytest

from otterlib import gpu_check, runner
from otterlib.config import load_profile


def test_the_carried_wheels_are_what_the_image_lacks_and_never_shadow_the_standard_library():
    reqs = {r.split("==")[0].lower().replace("_", "-") for r in gpu_check.wheel_requirements()}
    assert {"webdataset", "img2dataset", "papermill", "ipykernel", "nbclient", "wandb"} <= reqs
    assert not reqs & {"torch", "numpy", "pandas", "timm", "transformers", "pyyaml", "tabulate"}  # on the image
    assert "dataclasses" not in reqs  # img2dataset's backport would shadow the standard library
    assert all("==" in r for r in gpu_check.wheel_requirements())  # pinned to what runs here


def test_run_all_takes_the_stand_in_venv_as_installed(tmp_path):
    """The condition of run_all.sh's ensure_venv, run by bash on the stand-in folder."""
    repo = Path(gpu_check.REPO)
    venv = gpu_check.stand_in_venv(tmp_path / "venv", "/usr/bin/env python3", repo / "pyproject.toml")
    line = next(ln.strip() for ln in (repo / "run_all.sh").read_text().splitlines()
                if ln.strip().startswith('if [ -x "$VENV/bin/python" ]'))
    script = (f'VENV={venv}; stamp="$VENV/.otter-install-stamp"; want=$(cat pyproject.toml | sha256sum | cut -d" " -f1)\n'
              f'{line}\n  echo installed\nelse\n  echo would-install\nfi\n')
    out = subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "installed"
    version = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.version_info[0])"],
                             capture_output=True, text=True, check=True).stdout
    assert version.strip() == "3"


def test_the_artefact_check_names_what_is_missing(tmp_path):
    root = tmp_path / "gpu-smoke"
    run = root / "rn50-bert-base-random" / "otter" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"global_steps": 4, "train_wall_s": 9.0}))
    (run / "log.jsonl").write_text(json.dumps({"event": "start", "runtime": {"cuda_available": True}}) + "\n"
                                   + json.dumps({"step": 1, "samples_per_s": 2500.0}) + "\n")
    (run / "eval.jsonl").write_text(json.dumps({"dataset": "goi", "metrics": {"fh@1": 0.1}}) + "\n")
    result = gpu_check.e2e_artefacts(root)
    assert not result["ok"]
    assert result["runs"]["otter"] == {"global_steps": 4, "train_wall_s": 9.0, "samples_per_s": [2500.0],
                                       "cuda": True, "eval": {"goi": {"fh@1": 0.1}}}
    assert "infonce: no metrics.json" in result["problems"]
    assert "otter: evaluation rows ['goi']" in result["problems"]
    assert "tables/comparison.csv missing" in result["problems"]


def test_the_gpu_smoke_profile_plans_the_four_methods_at_paper_shape():
    profile = load_profile("gpu-smoke")
    (setting,) = profile.settings
    assert (setting.model.image_encoder, setting.model.text_encoder, setting.model.pretrained) == \
        ("timm:resnet50", "bert_base_random", False)
    t = profile.train
    assert (t.batch_size, t.image_size, t.precision, t.device, t.epochs, t.optimizer) == \
        (512, 224, "auto", "auto", 1, "sgd")
    assert profile.data.source("cc3m").origin == "synthetic" and profile.data.download.image_size == 256
    steps = runner.plan(profile)
    assert [s.notebook for s in steps].count("03_train") == 4 and [s.notebook for s in steps][-2:] == ["05_results", "06_noise_study"]
    lines = []
    assert runner.run("gpu-smoke", dry_run=True, echo=lines.append) == 0
    assert any("Compute plan" in ln for ln in lines)


def test_a_part_that_does_not_fit_the_time_left_is_reported_not_run(tmp_path):
    check = gpu_check.Check(tmp_path, gpu_check.CPU_SMOKE, budget_s=5, caps=gpu_check.CAPS_S, carried_wheels=False)
    check.run_part("e2e", lambda: pytest.fail("must not run"))
    assert check.summary["parts"]["e2e"]["status"].startswith("not run: the time budget ran out")
    assert json.loads((tmp_path / "summary.json").read_text())["parts"]["e2e"]["status"].startswith("not run")


def test_bad_arguments_are_clear_errors(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", "x", "--parts", "bench,warp"])
    assert "unknown part(s) ['warp']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "--out is required" in capsys.readouterr().err


@pytest.mark.slow
def test_the_check_runs_at_tiny_shapes_on_the_cpu(tmp_path):
    """The device script's own code path (subprocesses, files, summary) with tiny encoders: a few minutes here."""
    gpu_check.main(["--cpu-smoke", "--out", str(tmp_path), "--parts", "env,bench,fidelity,io", "--budget-s", "900"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: v["status"] for k, v in summary["parts"].items()} == {p: "ok" for p in ("env", "bench", "fidelity", "io")}
    assert summary["parts"]["fidelity"]["checks_ok"] == {k: True for k in ("teacher_modes", "syncbn", "float32_logits",
                                                                            "sinkhorn", "knobs")}
    bench = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert set(bench) == {"infonce", "label_smoothing", "kd", "otter"}
    assert {"teacher_forward", "targets", "ema_update"} <= set(bench["otter"]["phases_ms"])
    assert "phase:teacher_forward" in (tmp_path / "profile.txt").read_text()
    records = json.loads((tmp_path / "records.json").read_text())["records"]
    assert [r["method"] for r in records] == ["infonce", "label_smoothing", "kd", "otter"]
    assert summary["parts"]["io"]["eval"]["scoring"]["images"] == 512
    assert len(list(tmp_path.iterdir())) <= 8


def test_device_records_are_appended_with_this_checkouts_commit_and_the_files_note_kept(tmp_path):
    from otterlib.benchmarks import BenchmarkRecord, append_records, load_benchmarks

    target = tmp_path / "benchmarks.json"
    target.write_text(json.dumps({"format": "otterlib-benchmarks/1", "about": "note", "records": []}))
    device = tmp_path / "records.json"
    append_records(device, [BenchmarkRecord("timm:resnet50", "declutr-sci-base", "otter", 512, 224, "bf16",
                                            "NVIDIA H200", 1, 3100.0, "2026-12-01", "python -m otterlib.bench ...",
                                            "unknown")])
    assert gpu_check.record(device, target, "abc1234") == 1
    (rec,) = load_benchmarks(target)
    assert rec.git == "abc1234" and rec.samples_per_s == 3100.0
    assert json.loads(target.read_text())["about"] == "note"
