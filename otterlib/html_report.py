"""Reading the results without Jupyter: every executed notebook as HTML, and an index page.

:func:`build_site` renders each executed notebook under ``results/<profile>/`` with nbconvert (the JupyterLab
template, code cells kept: they are short calls into ``otterlib`` and the parameters cell says which run a
page is) to ``results/<profile>/html/<same relative path>.html``, and writes ``html/index.html``: the
comparison table, OTTER's tally and the figures of ``results/<profile>/tables/`` (copied to
``html/figures/``, so the ``html`` folder can be zipped and read anywhere), then links to every notebook in
stage order (00, 01, 02, the 03/04 runs by setting, method and seed, 05, 06, ...). Whatever is missing
(a partial run, settings run on other machines) is left out; notebooks are rendered again only when their
executed copy is newer than its HTML.
"""
from __future__ import annotations

import html
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import nbformat

from otterlib import layout, report
from otterlib.config import Profile

RUN_STAGES: dict[str, str] = {"03": "training (03)", "04": "evaluation (04)"}
"""Stages executed once per run (setting, method, seed) or reference model, listed as one table (column
headings)."""

FIGURE_CAPTIONS: dict[str, str] = {
    "comparison": "Zero-shot flat hit@k of every method (the comparison table as bars)",
    "training": "Training curves of every method of setting {}",
    "matching": "OTTER's target matrix for held-out pairs, setting {}",
    "off_diag": "How much a batch's non-paired captions match (InfoNCE model), setting {}",
}
"""Caption of a figure in ``tables/`` by the part of its file name before the first ``_`` (the rest, if any,
is the setting); other figures are captioned with their file name."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
.tally { font-weight: bold; }
.failed { color: #b00020; font-weight: bold; }
.note { color: #666; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
"""


def _replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` to a unique temporary name beside ``path``, then rename it to ``path``: machines that share
    ``results/`` (``--setting`` selections) may rebuild the same page at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    write(tmp)
    tmp.replace(path)


@dataclass(frozen=True)
class Page:
    """One executed notebook and where its HTML copy goes."""

    source: Path
    """The executed ``.ipynb``."""
    rel: Path
    """``source`` relative to ``results/<profile>``."""
    title: str
    """The notebook's first Markdown heading (e.g. ``03 · Train one (setting, method) run``)."""
    failed: bool
    """Papermill recorded an exception (the page holds the traceback)."""
    seconds: float | None
    """Execution time that papermill recorded."""

    @property
    def html(self) -> Path:
        """The HTML copy, relative to the ``html`` folder."""
        return self.rel.with_suffix(".html")

    @property
    def stage(self) -> str:
        """``03`` for ``03_train.ipynb``; empty for an unnumbered notebook."""
        match = re.match(r"(\d\d)_", self.source.name)
        return match.group(1) if match else ""


def read_page(source: Path, results_root: Path) -> Page:
    """A :class:`Page` from an executed notebook under ``results_root``."""
    nb = nbformat.read(source, as_version=4)
    headings = [line.lstrip("#").strip() for cell in nb.cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("#")]
    meta = nb.metadata.get("papermill", {})
    return Page(source, source.relative_to(results_root), headings[0] if headings else source.stem,
                bool(meta.get("exception")), meta.get("duration"))


def find_pages(results_root: Path, html_dir: Path) -> list[Page]:
    """Every executed notebook under ``results_root`` (not Jupyter's checkpoints, not the HTML folder)."""
    sources = [p for p in sorted(results_root.rglob("*.ipynb"))
               if ".ipynb_checkpoints" not in p.parts and not p.is_relative_to(html_dir)]
    return [read_page(p, results_root) for p in sources]


def render_pages(pages: Sequence[Page], html_dir: Path) -> None:
    """Write the HTML copy of each page whose copy is missing or older than the notebook."""
    from nbconvert import HTMLExporter

    exporter = None
    for page in pages:
        target = html_dir / page.html
        if target.is_file() and target.stat().st_mtime >= page.source.stat().st_mtime:
            continue
        exporter = exporter or HTMLExporter(template_name="lab")
        body, _ = exporter.from_filename(str(page.source))
        _replace_atomically(target, lambda tmp: tmp.write_text(body, encoding="utf-8"))


def _link(page: Page, text: str) -> str:
    status = ' <span class="failed">failed</span>' if page.failed else ""
    took = f' <span class="note">({page.seconds:.0f} s)</span>' if page.seconds is not None else ""
    return f'<a href="{html.escape(page.html.as_posix())}">{html.escape(text)}</a>{status}{took}'


def _copy_label(page: Page) -> str:
    """Which run of the suite wrote a shared stage's notebook: the full run or a ``--setting`` selection."""
    folder = page.rel.parent
    if folder == Path("."):
        return "all settings"
    if folder.parts[0] == "selections" and len(folder.parts) == 2:
        return "selection " + folder.parts[1].replace("+", " + ")
    return folder.as_posix()


def _run_names(folder: Path) -> tuple[str, str, str]:
    """(setting, method, seed) of a run folder ``<setting>/<method>/seed<k>``; ("reference", model, "") for
    ``references/<model>``."""
    parts = folder.parts
    if parts[:1] == ("references",):
        return "reference", parts[-1], ""
    setting, method, seed = (parts + ("", "", ""))[:3]
    return setting, method, seed.removeprefix("seed")


def _run_key(folder: Path, settings: Sequence[str]) -> tuple:
    """Sort key of a run folder: setting (profile order), method (report order), seed; references last."""
    setting, method, seed = _run_names(folder)
    order = list(report.METHOD_ORDER)
    return (setting == "reference", settings.index(setting) if setting in settings else len(settings), setting,
            order.index(method) if method in order else len(order), method, int(seed) if seed.isdigit() else -1)


def _runs_table(pages: Sequence[Page], settings: Sequence[str]) -> str:
    runs: dict[Path, dict[str, Page]] = {}
    for page in sorted(pages, key=lambda p: _run_key(p.rel.parent, settings)):
        runs.setdefault(page.rel.parent, {})[page.stage] = page
    head = "".join(f'<th class="l">{h}</th>' for h in ("setting", "method", "seed", *RUN_STAGES.values()))
    rows = []
    for folder, by_stage in runs.items():
        setting, method, seed = _run_names(folder)
        cells = [html.escape(setting), html.escape(report.METHOD_LABELS.get(method, method)), html.escape(seed)]
        cells += [_link(by_stage[s], "notebook") if s in by_stage else "" for s in RUN_STAGES]
        rows.append("<tr>" + "".join(f'<td class="l">{c}</td>' for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _notebook_sections(pages: Sequence[Page], settings: Sequence[str]) -> str:
    """One section per stage, in stage order; the per-run stages share one table at the first one's place."""
    sections = list(dict.fromkeys("runs" if p.stage in RUN_STAGES else p.stage
                                  for p in sorted(pages, key=lambda p: p.stage) if p.stage))
    out = []
    for section in sections:
        if section == "runs":
            out.append(f"<h3>{' / '.join(RUN_STAGES)} · training and evaluation, one row per run</h3>"
                       + _runs_table([p for p in pages if p.stage in RUN_STAGES], settings))
            continue
        copies = sorted((p for p in pages if p.stage == section), key=lambda p: p.rel.as_posix())
        items = "".join(f"<li>{_link(p, _copy_label(p))}</li>" for p in copies)
        out.append(f"<h3>{html.escape(copies[0].title)}</h3><ul>{items}</ul>")
    others = [p for p in pages if not p.stage]
    if others:
        items = "".join(f"<li>{_link(p, p.rel.as_posix())}</li>" for p in others)
        out.append(f"<h3>Other notebooks</h3><ul>{items}</ul>")
    return "\n".join(out) or '<p class="note">No executed notebook yet.</p>'


def _figure_kind(png: Path) -> tuple[str, str]:
    """(caption key, setting) of a figure file name such as ``off_diag_tiny-scratch.png``; ("", "") if unknown."""
    for kind in FIGURE_CAPTIONS:
        if png.stem == kind or png.stem.startswith(kind + "_"):
            return kind, png.stem[len(kind) + 1:]
    return "", ""


def _caption(png: Path) -> str:
    kind, setting = _figure_kind(png)
    return FIGURE_CAPTIONS[kind].format(setting) if kind else png.name


def _figure_order(png: Path) -> tuple[int, str]:
    """The comparison bars first, then the training curves, then the rest; by name within each."""
    kinds = list(FIGURE_CAPTIONS)
    kind = _figure_kind(png)[0]
    return (kinds.index(kind) if kind else len(kinds), png.name)


def copy_figures(tables_dir: Path, html_dir: Path) -> list[Path]:
    """Copy the PNGs of ``tables/`` to ``html/figures/`` (main plots first); returns the copies."""
    copies = []
    for png in sorted(tables_dir.glob("*.png"), key=_figure_order):
        target = html_dir / "figures" / png.name
        _replace_atomically(target, lambda tmp: shutil.copy2(png, tmp))
        copies.append(target)
    return copies


def _summary_section(tables_dir: Path, figures: Sequence[Path], html_dir: Path) -> str:
    """The comparison table (``table.md``), OTTER's tally line, then the figures."""
    import mistune

    table_md, tally_md = tables_dir / "table.md", tables_dir / "tally.md"
    if table_md.is_file():
        body = [f'<p>The comparison table, from <code>{html.escape(table_md.name)}</code>:</p>',
                mistune.html(table_md.read_text())]
    else:
        body = ['<p class="note">No comparison table yet: 05 has not run for this profile.</p>']
    if tally_md.is_file():
        body.append(f'<p class="tally">{html.escape(report.read_tally_summary(tables_dir))}</p>')
    for fig in figures:
        body.append(f'<figure><img src="{html.escape(fig.relative_to(html_dir).as_posix())}" '
                    f'alt="{html.escape(fig.name)}"><figcaption>{html.escape(_caption(fig))}</figcaption></figure>')
    return "\n".join(body)


def write_index(profile: Profile, pages: Sequence[Page], figures: Sequence[Path]) -> Path:
    """Write ``html/index.html``: summary table, tally, figures, then the notebooks in stage order."""
    html_dir = layout.html_dir(profile)
    settings = [s.name for s in profile.settings]
    title = f"OTTER reproduction · {profile.name} profile"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(profile.description)}. <span class="note">Page written {datetime.now():%Y-%m-%d %H:%M}
from <code>{html.escape(str(profile.results_root))}</code>.</span></p>
<h2>Summary</h2>
{_summary_section(layout.tables_dir(profile), figures, html_dir)}
<h2>Notebooks, in the order they run</h2>
{_notebook_sections(pages, settings)}
</body></html>
"""
    path = layout.html_index_path(profile)
    _replace_atomically(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def build_site(profile: Profile) -> Path:
    """Render the executed notebooks of ``profile`` that changed, copy the figures, write the index; returns
    the index's path."""
    html_dir = layout.html_dir(profile)
    pages = find_pages(profile.results_root, html_dir)
    render_pages(pages, html_dir)
    return write_index(profile, pages, copy_figures(layout.tables_dir(profile), html_dir))
