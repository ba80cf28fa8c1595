"""The papermill runner: plan, idempotent skipping, and failure reporting."""
import json

import nbformat
import pytest

from otterlib import runner
from otterlib.config import load_profile


def _notebook(path, source):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\noverrides = {}\nforce = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_plan_orders_stages_and_covers_settings_times_methods(tmp_path):
    profile = load_profile("smoke", {"results_dir": str(tmp_path)})
    steps = runner.plan(profile)
    names = [s.notebook for s in steps]
    n_runs = sum(len(profile.seeds_of(s.name)) for s in profile.settings) * len(profile.methods)
    assert names == (["00_setup", "01_download_data", "02_prepare_eval_sets"] + ["03_train"] * n_runs
                     + ["04_evaluate"] * (n_runs + len(profile.eval.references)) + ["05_results", "06_noise_study"])
    train = [s for s in steps if s.notebook == "03_train"]
    first_seed = profile.seeds_of("lite0-minilm")[0]
    assert train[0].output == tmp_path / "smoke" / "lite0-minilm" / "infonce" / f"seed{first_seed}" / "03_train.ipynb"
    assert {(s.parameters["setting"], s.parameters["method"], s.parameters["seed"]) for s in train} == \
        {(s.name, m, seed) for s in profile.settings for m in profile.methods for seed in profile.seeds_of(s.name)}
    assert [s.notebook for s in runner.plan(profile, only={"05"})] == ["05_results"]
    study = steps[-1]
    assert study.output == tmp_path / "smoke" / "06_noise_study.ipynb" and not study.done()
    (tmp_path / "smoke" / "noise_study").mkdir(parents=True)
    (tmp_path / "smoke" / "noise_study" / "study.json").write_text("{}")
    assert study.done()


def test_paper_plan_includes_the_clip_reference(tmp_path):
    steps = runner.plan(load_profile("paper", {"results_dir": str(tmp_path)}))
    refs = [s for s in steps if s.parameters.get("reference")]
    assert [s.parameters["reference"] for s in refs] == ["clip_rn50"]
    assert "06_noise_study" not in [s.notebook for s in steps]  # the study needs the synthetic world's eval sets


def test_run_skips_steps_whose_outputs_exist(tmp_path, monkeypatch):
    profile = load_profile("smoke", {"results_dir": str(tmp_path)})
    run_dir = profile.run_dir("lite0-minilm", "otter", profile.seeds_of("lite0-minilm")[0])
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    executed = []
    monkeypatch.setattr(runner, "execute", lambda step, force: executed.append(step))
    lines = []
    assert runner.run("smoke", {"results_dir": str(tmp_path)}, only={"03"}, echo=lines.append) == 0
    assert len(executed) == len(profile.runs()) - 1
    assert any("lite0-minilm/otter/seed" in line and "outputs exist, skipped" in line for line in lines)
    executed.clear()
    runner.run("smoke", {"results_dir": str(tmp_path)}, only={"03"}, force=True, echo=lines.append)
    assert len(executed) == len(profile.settings) * len(profile.methods)
    executed.clear()
    listed = []
    assert runner.run("smoke", {"results_dir": str(tmp_path)}, only={"03"}, dry_run=True, echo=listed.append) == 0
    steps = [line for line in listed if line.startswith("[")]  # the compute and disk plans follow the steps
    assert not executed and len(steps) == len(profile.settings) * len(profile.methods)
    assert sum(line.endswith("03_train.ipynb") and "skip (outputs exist)" in line for line in steps) == 1


@pytest.mark.slow
def test_failure_names_notebook_parameters_and_executed_copy(tmp_path, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    _notebook(nb_dir / "00_setup.ipynb", "print('fine')")
    _notebook(nb_dir / "01_download_data.ipynb", "raise ValueError('the shard server is gone')")
    _notebook(nb_dir / "02_prepare_eval_sets.ipynb", "print('never reached')")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nb_dir)
    out = tmp_path / "results"
    lines = []
    overrides = {"results_dir": str(out), "data.sources.cc3m.root": str(tmp_path / "data")}  # nothing is "done" yet
    code = runner.run("smoke", overrides, only={"00", "01", "02"}, echo=lines.append)
    text = "\n".join(lines)
    assert code == 1
    executed = out / "smoke" / "01_download_data.ipynb"
    assert "notebook 01_download_data.ipynb failed" in text
    assert f"executed copy with the traceback: {executed}" in text
    assert '"profile": "smoke"' in text and "ValueError: the shard server is gone" in text
    assert "02_prepare_eval_sets" not in text.split("FAILED")[1].split("error:")[0]
    assert not (out / "smoke" / "02_prepare_eval_sets.ipynb").exists()
    tb = json.dumps(nbformat.read(executed, as_version=4).cells[-1].outputs)
    assert "the shard server is gone" in tb


def test_a_setting_selection_keeps_its_runs_and_puts_shared_steps_apart(tmp_path):
    profile = load_profile("paper", {"results_dir": str(tmp_path)})
    first, yfcc = "cc3m-rn50-declutr-sci-base", "yfcc15m-rn50-declutr-sci-base"
    steps = runner.plan(profile, settings=[yfcc])
    assert [s.notebook for s in steps] == (["00_setup", "01_download_data", "02_prepare_eval_sets"] + ["03_train"] * 4
                                           + ["04_evaluate"] * 4 + ["05_results"])
    assert {s.parameters["setting"] for s in steps if "setting" in s.parameters} == {yfcc}
    download = steps[1]  # prepares only the selection's source; done once that source's shards are complete
    assert download.parameters["settings"] == [yfcc] and profile.used_sources([yfcc]) == ["yfcc15m"]
    shared = tmp_path / "paper" / "selections" / yfcc
    assert [s.output for s in steps if "setting" not in s.parameters] == [
        shared / "00_setup.ipynb", shared / "01_download_data.ipynb", shared / "02_prepare_eval_sets.ipynb",
        shared / "05_results.ipynb"]
    # Separate machines, one setting each, one shared results/: no executed notebook is written by both, and the
    # reference models are evaluated once, with the profile's first setting.
    other = runner.plan(profile, settings=[first])
    assert not {s.output for s in steps} & {s.output for s in other}
    assert [s.parameters["reference"] for s in other if s.parameters.get("reference")] == ["clip_rn50"]
    both = runner.plan(profile, settings=[yfcc, first])
    assert both[0].output == tmp_path / "paper" / "selections" / f"{first}+{yfcc}" / "00_setup.ipynb"
    assert len([s for s in both if s.notebook == "03_train"]) == 8


def test_an_unknown_setting_is_a_clear_error_listing_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.main(["--profile", "paper", "--setting", "cc3m-vit", "--dry-run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no setting 'cc3m-vit'" in err and "cc3m-rn50-declutr-sci-base" in err and "wit-rn50-declutr-sci-base" in err


def test_paper_dry_run_lists_the_grid_and_its_compute_and_disk_plans(tmp_path):
    lines = []
    assert runner.run("paper", {"results_dir": str(tmp_path)}, dry_run=True, echo=lines.append) == 0
    text = "\n".join(lines)
    assert sum("] 03_train [" in line for line in lines) == 7 * 4
    assert sum("] 04_evaluate [" in line for line in lines) == 7 * 4 + 1  # + the CLIP reference
    compute = text.split("Compute plan")[1].split("Disk plan")[0]
    for s in load_profile("paper").settings:
        assert s.name in compute
    assert "6,481 x 10" in compute and "unmeasured" in compute
    disk = text.split("Disk plan")[1]
    assert all(source in disk for source in ("cc3m", "yfcc15m", "wit")) and "3,334,173" in disk


def test_tidy_streams_keeps_a_bars_last_state_in_place():
    out = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("...")
    cell.outputs = [out("stream", name="stdout", text="start\n"), out("stream", name="stdout", text="\rx:   0%| 0/3"),
                    out("stream", name="stdout", text="\rx: 100%| 3/3\n"), out("display_data", data={"text/plain": "1"}),
                    out("stream", name="stdout", text="end\n")]
    runner.tidy_streams(cell, 0)
    assert [(o.output_type, o.get("text")) for o in cell.outputs] == [
        ("stream", "start\nx: 100%| 3/3\n"), ("display_data", None), ("stream", "end\n")]


@pytest.mark.slow
def test_a_headless_kernel_saves_text_bars_at_100_percent_and_warns_of_nothing(tmp_path, monkeypatch, capfd):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    _notebook(nb_dir / "00_setup.ipynb", "import time\nfrom otterlib.progress import progress_bar\n"
                                         "for _ in progress_bar(range(3), desc='steps', leave=False, mininterval=0):\n"
                                         "    time.sleep(0.05)")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nb_dir)
    step = runner.Step("00_setup", tmp_path / "out.ipynb", {"profile": "smoke", "overrides": {}})
    runner.execute(step, force=False)
    outputs = nbformat.read(step.output, as_version=4).cells[-1].outputs
    assert len(outputs) == 1 and outputs[0].name == "stdout"  # no widget, one merged stream
    assert outputs[0].text.startswith("steps: 100%") and "3/3" in outputs[0].text and "\r" not in outputs[0].text
    assert "without encryption" not in capfd.readouterr().err


@pytest.mark.parametrize("path", sorted(runner.NOTEBOOK_DIR.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_notebook_is_valid_nbformat_with_cell_ids(path):
    """A cell without an id makes every execution print nbformat's MissingIDFieldWarning to the console."""
    import warnings

    import nbformat

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    ids = [cell.get("id") for cell in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids)
