"""Data: the training sources via img2dataset, synthetic pairs, the webdataset training loader and the eval sets.

Public entry points are re-exported lazily (PEP 562) so that importing one submodule does not import
img2dataset, webdataset and pandas for all of them.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "download_pairs": "otterlib.data.download",
    "download_cc3m": "otterlib.data.sources.cc3m",
    "read_download_stats": "otterlib.data.download",
    "index_existing_shards": "otterlib.data.manifest",
    "fetch_cc3m_tsv": "otterlib.data.sources.cc3m",
    "preflight": "otterlib.data.preflight",
    "DownloadSummary": "otterlib.data.manifest",
    "build_train_loader": "otterlib.data.loader",
    "build_eval_pairs_loader": "otterlib.data.loader",
    "LoopbackImageServer": "otterlib.data.loopback",
    "serve_directory": "otterlib.data.loopback",
    "train_transform": "otterlib.data.transforms",
    "eval_transform": "otterlib.data.transforms",
    "MultiLabelEvalSet": "otterlib.data.evalsets",
    "load_goi": "otterlib.data.evalsets",
    "load_tencent_in10k": "otterlib.data.evalsets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'otterlib.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
