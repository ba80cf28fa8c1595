"""Progress bars that read well both live in JupyterLab and in notebooks executed headlessly.

A live JupyterLab kernel gets ``tqdm.auto`` (a widget). A notebook executed by the runner (papermill) has no
front end to draw widgets: their saved copies would only hold the widget's first state (``0%| 0/94``), so
there the bars are plain text on stdout, kept when they close, and the runner resolves the carriage returns
of each cell's output (:func:`otterlib.runner.execute`): the saved output ends with the bar at 100 %.
The runner marks its kernels with ``OTTER_HEADLESS=1``.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable

HEADLESS_ENV = "OTTER_HEADLESS"
"""Set to ``1`` in the environment of kernels that nobody watches (the runner's)."""

HEADLESS_REFRESH_S = 10.0
"""Seconds between redraws of a headless bar (a day of training: 8,640 redraws, under 1 MB of saved output)."""


def headless() -> bool:
    """True when this process runs a notebook headlessly (``OTTER_HEADLESS`` set to a true value)."""
    return os.environ.get(HEADLESS_ENV, "0").lower() not in ("", "0", "false", "no")


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any):
    """``tqdm(iterable, **kwargs)``: a text bar on stdout that stays when done when :func:`headless`, else
    ``tqdm.auto`` (a widget in JupyterLab, text in a terminal)."""
    if headless():
        from tqdm.std import tqdm

        return tqdm(iterable, **({"mininterval": HEADLESS_REFRESH_S} | kwargs
                                 | {"file": sys.stdout, "leave": True, "dynamic_ncols": False}))
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
