"""Locked-encoder mode: features of frozen pretrained encoders cached once (:mod:`.features`), and projection
heads with their own EMA teacher trained on them with the unchanged objectives (:mod:`.train`)."""
from otterlib.locked.features import LockedEncoders, cached_features, sha256_hex, weights_sha256
from otterlib.locked.train import FeatureInput, LockedTrainer, locked_model

__all__ = ["LockedEncoders", "cached_features", "sha256_hex", "weights_sha256", "FeatureInput", "LockedTrainer",
           "locked_model"]
