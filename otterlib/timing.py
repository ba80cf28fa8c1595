"""Timing of the training step's phases, and the statistics benchmarks report.

:class:`PhaseTimer` marks the start and end of named phases: CUDA events on a CUDA device (recorded on the
current stream, read after one synchronisation in :meth:`PhaseTimer.collect`, so timing adds no host sync to
the step) and the host clock elsewhere. Code under measurement writes ``with phase(timer, "name"):``; with
``timer=None`` that is a ``nullcontext`` and costs nothing measurable.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import ContextManager

import torch


class PhaseTimer:
    """Durations of named phases on ``device``: CUDA events there, ``time.perf_counter`` elsewhere.

    Phases may repeat (their durations add up) but not nest. Phases run back to back, so on a CUDA device
    each phase's time is the GPU time between its start and end marks, idle gaps included: when the host
    cannot launch work fast enough (launch-bound), the gaps show up in the phase that waits.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda: bool = device.type == "cuda"
        self._spans: list[tuple[str, object, object]] = []

    def _mark(self) -> object:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (also a ``phase:<name>`` range for ``torch.profiler``)."""
        start = self._mark()
        try:
            with torch.profiler.record_function(f"phase:{name}"):
                yield
        finally:
            self._spans.append((name, start, self._mark()))

    def collect(self) -> dict[str, float]:
        """Milliseconds per phase name (in first-seen order) since the last collect; synchronises a CUDA device."""
        if self.cuda and self._spans:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, start, end in self._spans:
            ms = start.elapsed_time(end) if self.cuda else (end - start) * 1e3  # type: ignore[attr-defined,operator]
            out[name] = out.get(name, 0.0) + ms
        self._spans.clear()
        return out


def phase(timer: PhaseTimer | None, name: str) -> ContextManager[None]:
    """``timer.phase(name)``, or a no-op context when ``timer`` is None."""
    return contextlib.nullcontext() if timer is None else timer.phase(name)


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median, quartiles (``q1``, ``q3``; ``statistics.quantiles``, inclusive), min, max and count of ``values``.

    One value gives that value for every statistic; an empty sequence is a ValueError.
    """
    if not values:
        raise ValueError("spread needs at least one value")
    vals = sorted(float(v) for v in values)
    q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive") if len(vals) > 1 else (vals[0],) * 3
    return {"median": statistics.median(vals), "q1": q1, "q3": q3, "min": vals[0], "max": vals[-1], "n": len(vals)}
