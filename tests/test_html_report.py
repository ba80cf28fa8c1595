"""The HTML copies of executed notebooks and their index, on a fabricated results folder."""
import nbformat
import pandas as pd
import pytest

from otterlib import html_report, layout, report
from otterlib.config import load_profile


def _executed(path, text, heading, failed=False, seconds=12.0):
    """A small notebook as papermill leaves it: a heading, a code cell with its output, papermill metadata."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('x')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {heading}\n\nProse."), cell]
    nb.metadata["papermill"] = {"exception": failed, "duration": seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _tables(profile):
    rows = []
    for method, fh1 in (("infonce", 0.2125), ("kd", 0.19), ("otter", 0.2475)):
        for dataset in ("goi", "in10k"):
            rows.append({"setting": "tiny-scratch", "method": method, "dataset": dataset, "mode": "paper",
                         "metrics": {"fh@1": fh1, "fh@5": 0.5, "fh@10": 0.6}})
    path = profile.results_root / "eval.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    facts = report.RunFacts(profile="smoke", synthetic=True, sources=("cc3m",), train_pairs=100, steps=(3,),
                            batch_size=32, seeds=1, protocol="paper")
    return report.write_tables(report.read_rows([path]), report.Grid.from_profile(profile),
                               layout.tables_dir(profile), facts, report.TieRules(n_boot=200)).paths


@pytest.fixture
def profile(tmp_path):
    return load_profile("smoke", {"results_dir": str(tmp_path)})


def test_index_shows_table_tally_figures_and_links_stages_in_order(profile):
    root = profile.results_root
    _executed(root / "00_setup.ipynb", "set up\n", "00 · Set-up check")
    _executed(root / "05_results.ipynb", "tables\n", "05 · Results")
    for method in ("otter", "infonce"):  # written out of order: the index sorts by method
        _executed(profile.run_dir("tiny-scratch", method, 0) / "03_train.ipynb", "steps: 100%\n", "03 · Train")
    _executed(profile.run_dir("tiny-scratch", "otter", 0) / "04_evaluate.ipynb", "evaluated\n", "04 · Evaluate",
              failed=True)
    _executed(root / "references" / "clip_rn50" / "04_evaluate.ipynb", "evaluated\n", "04 · Evaluate")
    paths = _tables(profile)

    index = html_report.build_site(profile)

    assert index == layout.html_index_path(profile)
    text = index.read_text()
    assert "<table" in text and "InfoNCE" in text and "OTTER" in text and "24.8" in text and "21.2" in text
    assert report.read_tally_summary(layout.tables_dir(profile)) in text
    assert 'src="figures/comparison.png"' in text and (index.parent / "figures" / "comparison.png").is_file()
    order = [text.index(s) for s in ('href="00_setup.html"', 'href="tiny-scratch/infonce/seed0/03_train.html"',
                                     'href="tiny-scratch/otter/seed0/03_train.html"',
                                     'href="references/clip_rn50/04_evaluate.html"', 'href="05_results.html"')]
    assert order == sorted(order)
    assert 'otter/seed0/04_evaluate.html">notebook</a> <span class="failed">failed</span>' in text
    page = (index.parent / "tiny-scratch" / "otter" / "seed0" / "03_train.html").read_text()
    assert "steps: 100%" in page and "jp-InputArea" in page  # outputs and the code cells are kept


def test_a_partial_selection_run_gets_an_index_without_a_table(profile):
    shared = profile.results_root / "selections" / "tiny-scratch"
    _executed(shared / "00_setup.ipynb", "set up\n", "00 · Set-up check")
    _executed(shared / "02_prepare_eval_sets.ipynb", "eval sets\n", "02 · Eval sets")

    text = html_report.build_site(profile).read_text()

    assert "No comparison table yet" in text and "<figure" not in text
    assert 'href="selections/tiny-scratch/00_setup.html">selection tiny-scratch</a>' in text
    assert text.index("00 · Set-up check") < text.index("02 · Eval sets")
    assert (layout.html_dir(profile) / "selections" / "tiny-scratch" / "02_prepare_eval_sets.html").is_file()


def test_a_notebook_is_rendered_again_only_when_it_changed(profile):
    source = profile.results_root / "00_setup.ipynb"
    _executed(source, "first\n", "00 · Set-up check")
    html_report.build_site(profile)
    target = layout.html_dir(profile) / "00_setup.html"
    target.write_text("kept")
    html_report.build_site(profile)
    assert target.read_text() == "kept"
    _executed(source, "second\n", "00 · Set-up check")
    html_report.build_site(profile)
    assert "second" in target.read_text()
