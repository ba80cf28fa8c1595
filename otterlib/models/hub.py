"""Clear errors when a pretrained model must come from a hub that this machine cannot reach."""
from __future__ import annotations

import os
from typing import Callable, TypeVar

T = TypeVar("T")


class HubUnavailableError(RuntimeError):
    """A pretrained model could not be fetched (offline, or not in the local cache)."""


def hub_offline() -> bool:
    """True when the Hugging Face hub is switched off for this process."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def load_from_hub(model_id: str, loader: Callable[[], T], how_to: str) -> T:
    """Run ``loader``; turn a network / cache miss into :class:`HubUnavailableError` naming the model.

    ``how_to`` tells the user how to pre-download it on a machine with internet.
    """
    try:
        return loader()
    except (OSError, ValueError, RuntimeError) as err:  # huggingface_hub's errors derive from these
        text = f"{type(err).__name__}: {err}"
        if not _looks_like_network_error(err, text):
            raise
        state = "offline (HF_HUB_OFFLINE=1)" if hub_offline() else "unreachable"
        raise HubUnavailableError(
            f"pretrained weights for {model_id!r} are not in the local cache and the hub is {state}. "
            f"On a machine with internet run: {how_to} (the cache is $HF_HOME, default ~/.cache/huggingface), "
            f"then copy the cache here, or choose an offline encoder (see README: CPU profile encoders). "
            f"Cause: {text.splitlines()[0][:300]}") from None


def _looks_like_network_error(err: BaseException, text: str) -> bool:
    names = {type(e).__name__ for e in _chain(err)}
    hints = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectTimeout",
             "URLError", "MaxRetryError", "NameResolutionError", "gaierror")
    return bool(names & set(hints)) or any(h in text for h in hints) or "offline" in text.lower() \
        or "couldn't connect" in text.lower() or "cannot find the requested files" in text.lower()


def _chain(err: BaseException | None):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__
