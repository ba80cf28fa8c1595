"""Zero-shot evaluation: FH@k, chunked top-k, mAP, template ensembling, the end-to-end evaluator, JSON rows."""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.overrides import TorchFunctionMode

from otterlib.data.evalsets import MultiLabelEvalSet, read_goi_class_list
from otterlib.evaluate import (
    EVAL_ROW_KEYS,
    encode_class_names,
    evaluate_zero_shot,
    flat_hit_at_k,
    hits_at_k,
    mean_average_precision,
    pad_labels,
    read_eval_rows,
    sorted_topk,
    topk_chunked,
    write_eval_rows,
)
from otterlib.templates import CLIP_IMAGENET_TEMPLATES, PAPER_TEMPLATES, class_captions, get_templates

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "otter-metadata"


def brute_topk(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Oracle: rank every row by (score descending, class id ascending) with Python's sort."""
    out = []
    for row in scores.tolist():
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))
        out.append(order[:k])
    return out


def brute_fh(scores: torch.Tensor, labels: list[list[int]], k: int) -> float:
    top = brute_topk(scores, k)
    return sum(bool(set(t) & set(lab)) for t, lab in zip(top, labels)) / len(labels)


# --------------------------------------------------------------------------------------------------
# flat_hit_at_k on hand-made cases


def test_fh_hand_computed() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3],
                           [0.2, 0.8, 0.7, 0.1],
                           [0.1, 0.2, 0.3, 0.4]])
    labels = [[2], [0, 3], [1, 3]]
    # image 0 ranks 0,2,3,1: hit at k>=2; image 1 ranks 1,2,0,3: hit at k>=3; image 2 ranks 3,...: hit at 1
    assert flat_hit_at_k(scores, labels, ks=(1, 2, 3)) == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})


def test_fh_ties_go_to_lower_class_id() -> None:
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert flat_hit_at_k(scores, [[2]], ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}
    assert flat_hit_at_k(scores, [[0]], ks=(1,)) == {1: 1.0}
    # the tie rule holds wherever the tie sits relative to the cut
    scores = torch.tensor([[0.0, 5.0, 3.0, 5.0, 3.0, 3.0]])
    assert brute_topk(scores, 4) == [[1, 3, 2, 4]]
    assert sorted_topk(scores, 4)[1].tolist() == [[1, 3, 2, 4]]


def test_fh_padded_tensor_labels_equal_lists() -> None:
    torch.manual_seed(0)
    scores = torch.randn(20, 9)
    labels = [torch.randint(0, 9, (int(n),)).tolist() for n in torch.randint(0, 4, (20,))]
    padded = pad_labels(labels)
    assert padded.shape == (20, max(len(r) for r in labels))
    assert (padded[[i for i, r in enumerate(labels) if not r]] == -1).all()
    assert flat_hit_at_k(scores, labels, (1, 3)) == flat_hit_at_k(scores, padded, (1, 3))


def test_fh_k_larger_than_c_clamps() -> None:
    scores = torch.tensor([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
    labels = [[2], []]
    assert flat_hit_at_k(scores, labels, ks=(3, 10, 100)) == {3: 0.5, 10: 0.5, 100: 0.5}


def test_fh_duplicate_class_names_are_separate_ids() -> None:
    # classes 1 and 2 share a caption, hence an identical score: the lower id is retrieved first
    scores = torch.tensor([[0.5, 0.9, 0.9, 0.1]])
    assert flat_hit_at_k(scores, [[2]], ks=(1, 2)) == {1: 0.0, 2: 1.0}
    assert flat_hit_at_k(scores, [[1, 2]], ks=(1,)) == {1: 1.0}


def test_fh_empty_label_rows_are_misses_in_the_denominator() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    assert flat_hit_at_k(scores, [[0], [], [], [1]], ks=(1, 2)) == {1: 0.25, 2: 0.5}
    assert flat_hit_at_k(scores, torch.full((4, 3), -1), ks=(1,)) == {1: 0.0}


def test_fh_matches_bruteforce_oracle_with_heavy_ties() -> None:
    g = torch.Generator().manual_seed(1)
    for trial in range(30):
        n, c = int(torch.randint(1, 30, (1,), generator=g)), int(torch.randint(1, 25, (1,), generator=g))
        scores = torch.randint(-3, 4, (n, c), generator=g).float()  # few distinct values: many ties
        labels = [torch.randint(0, c, (int(torch.randint(0, 4, (1,), generator=g)),), generator=g).tolist()
                  for _ in range(n)]
        got = flat_hit_at_k(scores, labels, ks=(1, 2, 5, 10))
        for k in (1, 2, 5, 10):
            assert got[k] == pytest.approx(brute_fh(scores, labels, min(k, c))), (trial, k)


@pytest.mark.parametrize("n_cols,k,spread", [(200, 1, 2), (1037, 5, 3), (1037, 10, 1000), (4096, 10, None), (700, 40, 50)])
def test_sorted_topk_wide_rows_match_oracle(n_cols: int, k: int, spread: int | None) -> None:
    # wide rows take the two-level (group maxima) search; small integer ranges force tied group maxima
    g = torch.Generator().manual_seed(n_cols + k)
    if spread is None:
        scores = torch.randn(40, n_cols, generator=g)
    else:
        scores = torch.randint(-spread, spread + 1, (40, n_cols), generator=g).float()
    values, indices = sorted_topk(scores, k)
    assert indices.tolist() == brute_topk(scores, k)
    assert torch.equal(values, scores.gather(1, indices))
    assert torch.equal(sorted_topk(scores.T.contiguous().T, k)[1], indices)  # non-contiguous input


def test_fh_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        flat_hit_at_k(torch.tensor([[float("nan"), 1.0]]), [[0]])
    with pytest.raises(ValueError, match="ks"):
        flat_hit_at_k(torch.ones(1, 2), [[0]], ks=(0,))
    with pytest.raises(ValueError, match="label rows"):
        flat_hit_at_k(torch.ones(2, 2), [[0]])
    with pytest.raises(ValueError, match="integer tensor"):
        flat_hit_at_k(torch.ones(1, 2), torch.ones(1, 1))


def test_hits_at_k_per_image_vectors() -> None:
    top = torch.tensor([[4, 2, 7], [1, 0, 3], [5, 6, 8]])
    hits = hits_at_k(top, [[7], [1, 9], []], ks=(1, 2, 3, 5))
    assert hits[1].tolist() == [False, True, False]
    assert hits[2].tolist() == [False, True, False]
    assert hits[3].tolist() == [True, True, False]
    assert hits[5].tolist() == [True, True, False]  # clamped to the 3 retrieved columns
    assert hits[1].dtype == torch.bool


# --------------------------------------------------------------------------------------------------
# chunked scoring


@pytest.mark.parametrize("chunk_size,class_chunk_size", [(1, None), (7, 3), (16, 13), (64, 1), (500, 41), (33, 1000)])
def test_topk_chunked_equals_unchunked_random(chunk_size: int, class_chunk_size: int | None) -> None:
    g = torch.Generator().manual_seed(chunk_size)
    img = F.normalize(torch.randn(101, 24, generator=g), dim=1)
    cls = F.normalize(torch.randn(83, 24, generator=g), dim=1)
    ref_v, ref_i = sorted_topk(img @ cls.T, 10)
    v, i = topk_chunked(img, cls, 10, chunk_size=chunk_size, class_chunk_size=class_chunk_size)
    assert torch.equal(i, ref_i)
    torch.testing.assert_close(v, ref_v, rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_size,class_chunk_size", [(5, 2), (9, 7), (40, None), (3, 50)])
def test_topk_chunked_exact_with_ties(chunk_size: int, class_chunk_size: int | None) -> None:
    # integer embeddings give exact integer scores in any summation order, with many ties
    g = torch.Generator().manual_seed(7)
    img = torch.randint(-2, 3, (40, 4), generator=g).float()
    cls = torch.randint(-2, 3, (50, 4), generator=g).float()
    v, i = topk_chunked(img, cls, 8, chunk_size=chunk_size, class_chunk_size=class_chunk_size)
    scores = img @ cls.T
    assert i.tolist() == brute_topk(scores, 8)
    assert torch.equal(v, scores.gather(1, i))


def test_topk_chunked_k_larger_than_classes_and_errors() -> None:
    img, cls = torch.randn(5, 3), torch.randn(4, 3)
    v, i = topk_chunked(img, cls, 10, chunk_size=2, class_chunk_size=3)
    assert i.shape == (5, 4) and sorted(i[0].tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="same D"):
        topk_chunked(torch.randn(2, 3), torch.randn(2, 4), 1)
    with pytest.raises(ValueError, match="NaN"):
        topk_chunked(torch.tensor([[float("nan")]]), torch.ones(1, 1), 1)


def test_mean_average_precision_matches_sklearn() -> None:
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(3)
    img = torch.randn(60, 8, generator=g)
    cls = torch.randn(12, 8, generator=g)
    labels = [torch.randint(0, 10, (int(torch.randint(0, 4, (1,), generator=g)),), generator=g).tolist()
              for _ in range(60)]  # classes 10, 11 never positive: excluded from the mean
    scores = (img @ cls.T).numpy()
    y = np.zeros((60, 12), dtype=bool)
    for r, lab in enumerate(labels):
        y[r, lab] = True
    expected = np.mean([average_precision_score(y[:, c], scores[:, c]) for c in range(12) if y[:, c].any()])
    for chunk in (1, 5, 64):
        assert mean_average_precision(img, cls, labels, chunk_size=chunk) == pytest.approx(expected, abs=1e-9)


def test_mean_average_precision_hand_computed() -> None:
    img = torch.tensor([[0.9], [0.8], [0.7]])
    cls = torch.tensor([[1.0]])
    # positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert mean_average_precision(img, cls, [[0], [], [0]]) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="positive"):
        mean_average_precision(img, cls, [[], [], []])


# --------------------------------------------------------------------------------------------------
# templates and class embeddings


def test_class_captions_join_synonyms_like_the_official_code() -> None:
    captions, ids = class_captions([["object", "physical object"], ["Ball"]], PAPER_TEMPLATES)
    assert captions == ["a photo of object,or physical object.", "a photo of Ball."]
    assert ids.tolist() == [0, 1]
    captions, ids = class_captions([["a"], ["b", "c"]], ("x {}", "y {}", "z {}"))
    assert captions == ["x a", "y a", "z a", "x b,or c", "y b,or c", "z b,or c"]
    assert ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(CLIP_IMAGENET_TEMPLATES) == 80 == len(set(CLIP_IMAGENET_TEMPLATES))
    assert get_templates("paper") == ("a photo of {}.",)
    with pytest.raises(ValueError, match="bare string"):
        class_captions(["Ball"], PAPER_TEMPLATES)
    with pytest.raises(ValueError, match="placeholder"):
        class_captions([["a"]], ("no slot",))
    with pytest.raises(ValueError, match="unknown template set"):
        get_templates("clip81")


class ClassCodingTextEncoder(nn.Module):
    """Fake text encoder: caption ``<template t> cls<c>`` -> e_c + 0.5 e_(C+t) (before normalisation), so the
    class and the template of each caption are readable from its embedding."""

    def __init__(self, n_classes: int, templates: tuple[str, ...]) -> None:
        super().__init__()
        self.n_classes, self.templates = n_classes, templates
        self.seen: list[str] = []
        self.was_training: list[bool] = []
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        self.seen += captions
        self.was_training.append(self.training)
        out = torch.zeros(len(captions), self.n_classes + len(self.templates))
        for r, cap in enumerate(captions):
            t = next(j for j, tpl in enumerate(self.templates) if cap.startswith(tpl.split("{}")[0]))
            c = int(cap.split("cls")[1].split(",")[0].split(".")[0])
            out[r, c], out[r, self.n_classes + t] = 1.0, 0.5
        return out * 3.0  # deliberately not unit norm


def test_template_ensemble_maps_to_the_right_class_ids() -> None:
    templates = ("a photo of {}.", "a drawing of {}.", "art of {}.")
    n = 7
    names = [[f"cls{c}"] if c % 2 else [f"cls{c}", f"cls{c} synonym"] for c in range(n)]
    model = ClassCodingTextEncoder(n, templates)
    model.train()
    emb = encode_class_names(model, names, templates, batch_size=4)  # batches straddle classes
    assert emb.shape == (n, n + 3)
    expected = F.normalize(torch.cat([torch.eye(n), torch.full((n, 3), 0.5 / 3)], 1), dim=1)
    torch.testing.assert_close(emb, expected)
    assert model.training and model.was_training == [False] * 6  # eval during, restored after
    assert "a drawing of cls0,or cls0 synonym." in model.seen and len(model.seen) == n * 3
    # the official one-kNN-entry-per-caption bug read caption index i as class i; the ensemble must not
    assert emb.argmax(1)[:n].tolist() == list(range(n))


# --------------------------------------------------------------------------------------------------
# end to end


COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


class ColorModel(nn.Module):
    """Fake image-text model: an image embeds as its mean RGB, a caption as the RGB of its colour word."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3)) * self.scale

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        rows = []
        for cap in captions:
            word = cap.removeprefix("a photo of ").rstrip(".").split(",or ")[0]
            rows.append(torch.tensor(COLORS[word], dtype=torch.float) + 1.0)
        return torch.stack(rows)


def _color_set(tmp_path: Path) -> MultiLabelEvalSet:
    paths, labels = [], []
    for i, (color, lab) in enumerate([("red", [0]), ("green", [1]), ("blue", [2]), ("red", [3]),
                                      ("green", [1, 2]), ("blue", [1])]):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (8, 8), COLORS[color]).save(p)
        paths.append(p)
        labels.append(lab)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    paths += [tmp_path / "broken.png", tmp_path / "missing.png"]
    labels += [[0], [1]]
    names = [["red"], ["green"], ["blue"], ["red"]]  # class 3 repeats class 0's name
    return MultiLabelEvalSet("colors", names, paths, labels, [f"id{i}" for i in range(8)], {"format": "test"})


def test_evaluate_zero_shot_end_to_end(tmp_path: Path) -> None:
    eval_set = _color_set(tmp_path)
    result = evaluate_zero_shot(ColorModel(), eval_set, None, ks=(1, 2, 5), batch_size=3, chunk_size=2,
                                class_chunk_size=3, mode="paper")
    # image 3 (red, label 3) retrieves id 0 first (tie with id 3): a miss at 1, a hit at 2. Image 5 (blue,
    # label green) ranks blue, then the exact tie red(0), green(1), red(3): a hit only at 3
    assert result.n_skipped == 2 and result.n_images == 6
    assert result.image_ids == [f"id{i}" for i in range(6)]
    assert result.hits[1].tolist() == [True, True, True, False, True, False]
    assert result.metrics["fh@1"] == pytest.approx(4 / 6)
    assert result.metrics["fh@2"] == pytest.approx(5 / 6)
    assert result.metrics["fh@5"] == pytest.approx(1.0)
    assert result.n_classes == 4 and result.label_cardinality == pytest.approx(7 / 6)
    assert 0.0 < result.metrics["map"] <= 1.0

    clean = evaluate_zero_shot(ColorModel(), eval_set, None, ks=(1,), mode="clean")
    assert clean.n_classes == 3 and clean.mode == "clean"
    assert clean.hits[1].tolist() == [True, True, True, True, True, False]  # label 3 merged into id 0

    with pytest.raises(ValueError, match="mode"):
        evaluate_zero_shot(ColorModel(), eval_set, None, mode="strict")


def test_eval_rows_roundtrip(tmp_path: Path) -> None:
    eval_set = _color_set(tmp_path)
    result = evaluate_zero_shot(ColorModel(), eval_set, None, ks=(1, 2), compute_map=False)
    row = result.to_row(model="color", method="none", git_sha="abc")
    assert EVAL_ROW_KEYS <= set(row) and row["task"] == "zeroshot_multilabel"
    path = write_eval_rows(tmp_path / "rows" / "eval.jsonl", [row])
    write_eval_rows(path, [row], append=True)
    back = read_eval_rows(path)
    assert back == [json.loads(json.dumps(row))] * 2
    assert back[0]["metrics"]["fh@1"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="lacks"):
        write_eval_rows(path, [{"dataset": "x"}])
    with pytest.raises(ValueError, match="JSON"):
        write_eval_rows(path, [dict(row, metrics={"fh@1": math.nan})])
    with pytest.raises(ValueError, match="overwrite"):
        result.to_row(metrics={})
    (tmp_path / "bad.jsonl").write_text('{"dataset": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_eval_rows(tmp_path / "bad.jsonl")


# --------------------------------------------------------------------------------------------------
# scale: the real 19,994-name GOI list with bounded memory


class HashingTextEncoder(nn.Module):
    """Tiny deterministic text encoder: hashed character-trigram counts through a fixed random projection."""

    def __init__(self, buckets: int = 512, dim: int = 64) -> None:
        super().__init__()
        self.buckets = buckets
        self.proj = nn.Linear(buckets, dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, buckets, generator=torch.Generator().manual_seed(0)))

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        rows, cols = [], []
        for r, cap in enumerate(captions):
            data = cap.lower().encode()
            for j in range(len(data) - 2):
                rows.append(r)
                cols.append(zlib.crc32(data[j:j + 3]) % self.buckets)
        counts = torch.zeros(len(captions), self.buckets)
        counts.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.ones(len(rows)), accumulate=True)
        return self.proj(counts)


class LargestOutput(TorchFunctionMode):
    """Records the largest number of elements of any tensor produced by a torch call."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.skipif(not (SHARED / "goi_classes.txt").is_file(), reason="shared OTTER metadata not available")
def test_scale_real_goi_class_list_bounded_memory() -> None:
    names = read_goi_class_list(SHARED / "goi_classes.txt")
    assert len(names) == 19994
    class_emb = encode_class_names(HashingTextEncoder(), [[n] for n in names], PAPER_TEMPLATES, batch_size=2048)
    assert class_emb.shape == (19994, 64)
    torch.testing.assert_close(class_emb.norm(dim=1), torch.ones(19994))
    n_images, chunk, class_chunk = 2000, 256, 4096
    image_emb = F.normalize(torch.randn(n_images, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    with LargestOutput() as probe:
        values, top = topk_chunked(image_emb, class_emb, 10, chunk_size=chunk, class_chunk_size=class_chunk)
    # no N x C score matrix: the largest tensor made is one score block (or the inputs' copies)
    assert probe.largest <= max(chunk * class_chunk, class_emb.numel()) < n_images * 19994
    assert top.shape == (n_images, 10)
    ref_v, ref_i = sorted_topk(image_emb[:64] @ class_emb.T, 10)
    assert torch.equal(top[:64], ref_i)
    torch.testing.assert_close(values[:64], ref_v, rtol=0, atol=1e-6)
    labels = [[int(c)] for c in torch.randint(0, 19994, (n_images,), generator=torch.Generator().manual_seed(2))]
    labels[:100] = [[int(top[i, 0])] for i in range(100)]  # 100 certain hits at k=1
    hits = hits_at_k(top, labels, (1, 10))
    assert hits[1][:100].all() and 100 <= int(hits[1].sum()) <= int(hits[10].sum()) < 200
