"""The study's data: synthetic training pairs at every noise level, their truth, and locked-encoder features.

One draw of ``N = max(sizes)`` scenes serves every noise level (corrupted as the profile's
``data.synthetic.noise_kinds`` say): :func:`otterlib.data.world.generate_pairs`
with the same seed draws the scenes (and their clean captions) before it picks the noisy pairs, so the noise
variants share their images and differ only in captions. A training set of size n is the first n pairs
(the smaller sets are nested in the larger). Image features are computed once; captions are encoded once as
the distinct captions of all noise levels. Eval sets are those the profile's 02 stage wrote, with their
image and class-caption features cached the same way.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from otterlib.config import EvalSetConfig, NoiseStudyConfig, Profile
from otterlib.data.synthetic import WORLD_VERSION, image_seed, render_scene
from otterlib.data.world import NOISE_KINDS, SyntheticPair, generate_pairs, truth_matrix
from otterlib.locked.features import LockedEncoders, sha256_hex
from otterlib.templates import class_captions, get_templates

WRONG: str = "wrong"


@dataclass
class EvalFeatures:
    """One zero-shot eval set as cached locked-encoder features.

    ``image_features`` (n, F_img) of its readable images (``image_ids``, ``labels`` aligned);
    ``captions`` are its class captions (:func:`otterlib.templates.class_captions` of ``class_names`` and
    ``templates``) with their (C·T, F_txt) ``caption_features``.
    """

    name: str
    image_features: torch.Tensor
    image_ids: list[str]
    labels: list[list[int]]
    class_names: list[list[str]]
    templates: tuple[str, ...]
    captions: list[str]
    caption_features: torch.Tensor


@dataclass
class StudyData:
    """Everything a run needs, as plain arrays (it is sent once to each worker process).

    ``image_features``: (N, F_img) of the N training images (shared by every noise level);
    ``text_features``: (V, F_txt) of the V distinct ``captions``; per noise level p: ``caption_index[p]`` (N,)
    row of each pair's caption, ``wrong[p]`` (N,) bool (the caption belongs to another image) and
    ``truth[p]`` the (N, N) image × caption truth, bit-packed along captions (N, ceil(N/8)) uint8.
    """

    image_features: torch.Tensor
    captions: list[str]
    text_features: torch.Tensor
    caption_index: dict[float, np.ndarray]
    wrong: dict[float, np.ndarray]
    truth: dict[float, np.ndarray]
    eval_sets: list[EvalFeatures]
    info: dict[str, object] = field(default_factory=dict)
    """Timings and whether each feature cache was rebuilt."""

    @property
    def n_pairs(self) -> int:
        return self.image_features.shape[0]

    def batch_truth(self, noise: float, idx: np.ndarray) -> np.ndarray:
        """(B, B) bool truth of the pairs ``idx``: image ``idx[i]`` × caption of pair ``idx[j]``."""
        rows = np.unpackbits(self.truth[noise][idx], axis=1, count=self.n_pairs)
        return rows[:, idx].astype(bool)


def study_pairs(n: int, noise_levels: Sequence[float], seed: int, zipf_exponent: float,
                noise_kinds: Sequence[str] = NOISE_KINDS) -> dict[float, list[SyntheticPair]]:
    """``n`` pairs per noise level from one seed; raises if the levels do not share their scenes."""
    pairs = {float(p): generate_pairs(n, p, seed, prefix="study-", zipf_exponent=zipf_exponent,
                                      noise_kinds=noise_kinds) for p in noise_levels}
    first = next(iter(pairs.values()))
    for p, level in pairs.items():
        if any(a.scene != b.scene for a, b in zip(first, level)):
            raise ValueError(f"noise level {p} drew other scenes than {next(iter(pairs))}: the world's generate_pairs "
                             "no longer draws scenes before noise, so the noise variants would not share images")
    return pairs


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` torch threads, then restore the previous count. On cores shared with other jobs,
    one thread per process is several times faster than two (they spin waiting for each other)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_study_data(profile: Profile, ns: NoiseStudyConfig) -> StudyData:
    """Draw the pairs, compute their truth, and load (or compute and cache) every feature the study needs
    (encoders on ``ns.threads`` torch threads)."""
    with torch_threads(ns.threads):
        return _build(profile, ns)


def _build(profile: Profile, ns: NoiseStudyConfig) -> StudyData:
    syn = profile.data.synthetic
    model = profile.setting(ns.setting or profile.settings[0].name).model
    encoders = LockedEncoders(model, profile.eval.image_size, ns.feature_batch_size, ns.device)
    cache = profile.path(ns.cache_dir)
    t0 = time.time()
    pairs = study_pairs(max(ns.sizes), ns.noise_levels, ns.data_seed, syn.zipf_exponent, syn.noise_kinds)
    base = next(iter(pairs.values()))
    image_sha = sha256_hex([f"world {WORLD_VERSION} size {syn.image_size} seed {ns.data_seed}",
                            *(f"{q.key}|{q.scene!r}" for q in base)])
    images, images_rebuilt = encoders.image_features(
        cache / "study_images.pt", image_sha,
        lambda: (render_scene(q.scene, syn.image_size, seed=image_seed(q.key, ns.data_seed)) for q in base))
    captions = sorted({q.caption for level in pairs.values() for q in level})
    texts, texts_rebuilt = encoders.text_features(cache / "study_captions.pt", captions)
    row = {c: i for i, c in enumerate(captions)}
    t_truth = time.time()
    truth = {p: np.packbits(truth_matrix([q.scene for q in level], [q.caption_spec for q in level]), axis=1)
             for p, level in pairs.items()}
    t_eval = time.time()
    eval_sets = [_eval_features(profile, set_cfg, encoders, cache) for set_cfg in profile.eval.sets]
    return StudyData(
        image_features=images, captions=captions, text_features=texts,
        caption_index={p: np.array([row[q.caption] for q in level]) for p, level in pairs.items()},
        wrong={p: np.array([q.noise == WRONG for q in level]) for p, level in pairs.items()},
        truth=truth, eval_sets=eval_sets,
        info={"train_features_s": round(t_truth - t0, 1), "truth_s": round(t_eval - t_truth, 1),
              "eval_features_s": round(time.time() - t_eval, 1), "images_rebuilt": images_rebuilt,
              "captions_rebuilt": texts_rebuilt, "n_captions": len(captions)})


def _eval_features(profile: Profile, set_cfg: EvalSetConfig, encoders: LockedEncoders, cache: Path) -> EvalFeatures:
    """Cached features of an eval set's readable images (hashed by file name and bytes) and class captions."""
    from otterlib.stages.eval_sets import load_eval_set

    es = load_eval_set(set_cfg, mode=profile.eval.mode).with_existing_images()
    sha = sha256_hex(part for path in es.image_paths for part in (path.name, path.read_bytes()))
    images, _ = encoders.image_features(cache / f"eval_{es.name}_images.pt", sha,
                                        lambda: (_read_image(p) for p in es.image_paths))
    templates = get_templates(profile.eval.templates)
    captions, _ = class_captions(es.class_names, templates)
    texts, _ = encoders.text_features(cache / f"eval_{es.name}_captions.pt", captions)
    return EvalFeatures(name=es.name, image_features=images, image_ids=list(es.image_ids), labels=list(es.labels),
                        class_names=es.class_names, templates=templates, captions=captions, caption_features=texts)


def _read_image(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")
