"""img2dataset in a child process: its output goes to a log file, and at most one progress line is shown.

``img2dataset.download`` runs in a child Python process. Everything it prints (the shard progress bar, and
every 5 s a line such as ``total   - success: 0.880 - failed to download: 0.100 - failed to resize: 0.020 -
images per sec: 812 - count: 40000``) is appended to a log file and nowhere else. A :class:`ProgressLine`
turns the ``total`` lines into one line of progress: in a notebook it is a display updated in place (the
saved notebook keeps only its last state), elsewhere (a terminal, pytest) only the final line is printed.
Running img2dataset as a child also keeps its SIGINT handler and worker processes out of a notebook kernel;
interrupting the cell stops the child cleanly.
"""
from __future__ import annotations

import codecs
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_CHILD_CODE = """
import json, sys
kwargs, spark_config = json.loads(sys.argv[1]), json.loads(sys.argv[2])
if spark_config:  # img2dataset's pyspark distributor runs on the active session: the one configured here
    from pyspark.sql import SparkSession
    builder = SparkSession.builder
    for key, value in spark_config.items():
        builder = builder.config(key, value)
    builder.getOrCreate()
from img2dataset import download
download(**kwargs)
"""

_TOTAL = re.compile(r"^total\s+- success: (?P<success>[\d.]+) .*- images per sec: (?P<rate>\d+) - count: (?P<count>\d+)")


class ProgressLine:
    """One line saying how far a download of ``n_rows`` rows has come, headed by ``label``."""

    def __init__(self, label: str, n_rows: int) -> None:
        self.label, self.n_rows = label, n_rows
        self.text = f"{label}: starting img2dataset for {n_rows:,} rows"
        self._handle = _notebook_display(self.text)

    def update(self, output_line: str) -> None:
        """Read one line of img2dataset's output; its periodic ``total`` line replaces the progress line."""
        match = _TOTAL.match(output_line)
        if match is None:
            return
        count = int(match["count"])
        self.text = (f"{self.label}: {count:,} of {self.n_rows:,} rows processed ({count / max(self.n_rows, 1):.0%}), "
                     f"{float(match['success']):.1%} stored, {match['rate']} images/s")
        if self._handle is not None:
            self._handle.update(_plain(self.text))

    def finish(self, text: str) -> None:
        """Replace the line with the outcome (in a notebook), or print it (elsewhere)."""
        self.text = text
        if self._handle is not None:
            self._handle.update(_plain(text))
        else:
            print(text, flush=True)


def _plain(text: str) -> Any:
    from IPython.display import Pretty

    return Pretty(text)


def _notebook_display(text: str) -> Any:
    """A display handle under the running cell when this process is a Jupyter kernel, else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    from IPython.display import display

    return display(_plain(text), display_id=True)


def run_img2dataset(kwargs: dict[str, Any], log_path: Path, progress: ProgressLine | None = None,
                    spark_config: dict[str, str] | None = None) -> None:
    """Run ``img2dataset.download(**kwargs)`` in a child process; its output is appended to ``log_path`` and
    fed line by line to ``progress``. ``spark_config``: SparkSession builder settings made active in the child
    before the download (``distributor="pyspark"`` on a cluster). A non-zero exit raises RuntimeError with the
    last output."""
    # offline defaults (img2dataset's albumentations import phones home otherwise), line-by-line output
    env = {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", **os.environ, "PYTHONUNBUFFERED": "1"}
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n=== img2dataset {time.strftime('%Y-%m-%d %H:%M:%S')} {json.dumps(kwargs)}\n")
        log.flush()
        start = log.tell()
        proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, json.dumps(kwargs), json.dumps(spark_config or {})],
                                stdout=log if progress is None else subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            if proc.stdout is not None:
                for chunk in iter(lambda: proc.stdout.read1(1 << 14), b""):
                    text = decoder.decode(chunk)
                    log.write(text)
                    *lines, pending = re.split(r"[\r\n]", pending + text)
                    for line in lines:
                        progress.update(line)
            returncode = proc.wait()
        except BaseException:
            # Interrupted (e.g. a notebook's stop button): let img2dataset clean up, then make sure it is gone.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    if returncode != 0:
        with log_path.open("rb") as f:
            f.seek(max(start, log_path.stat().st_size - 4000))
            tail = f.read().decode("utf-8", errors="replace")
        raise RuntimeError(f"img2dataset exited with status {returncode}; rerun the same call to resume. Last "
                           f"output (full log in {log_path}):\n{tail}")
