"""otterlib: the thin, tested library behind the OTTER reproduction notebooks.

Modules (one job each): ``config`` (profiles), ``layout`` (where stages read/write), ``data`` (synthetic
pairs, CC3M download, loaders, eval sets), ``models`` (encoder registries), ``losses`` (InfoNCE, LS, KD,
OTTER), ``ema`` (EMA teacher), ``train`` (trainer + torchrun CLI), ``evaluate`` (zero-shot FH@k),
``report`` (tables, tally, plots), ``stages`` (one function per notebook), ``runner`` (papermill).
"""
__version__ = "0.1.0"
