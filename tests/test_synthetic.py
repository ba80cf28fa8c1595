"""The synthetic captioned-shape generator: determinism, exact noise fraction, official on-disk formats."""
import hashlib
import random
from pathlib import Path

import pytest

from otterlib.config import SyntheticConfig
from otterlib.data import synthetic
from otterlib.data.evalsets import load_goi, load_tencent_in10k


def test_pairs_are_deterministic_per_seed():
    a = synthetic.generate_pairs(200, 0.3, seed=7)
    b = synthetic.generate_pairs(200, 0.3, seed=7)
    c = synthetic.generate_pairs(200, 0.3, seed=8)
    assert a == b
    assert [p.caption for p in a] != [p.caption for p in c]


@pytest.mark.parametrize("n,fraction", [(200, 0.3), (101, 0.5), (50, 0.0), (40, 1.0)])
def test_noise_fraction_is_exact_and_split_between_kinds(n, fraction):
    pairs = synthetic.generate_pairs(n, fraction, seed=1)
    kinds = [p.noise for p in pairs]
    n_noisy = round(fraction * n)
    assert sum(k != "none" for k in kinds) == n_noisy
    assert kinds.count("wrong") - kinds.count("partial") in (0, 1)
    for p in pairs:
        if p.noise == "none":
            assert p.caption == p.clean_caption
        else:
            assert p.caption != p.clean_caption


def test_wrong_captions_come_from_other_images_and_partial_ones_mention_less():
    pairs = synthetic.generate_pairs(300, 0.4, seed=3)
    clean = {p.clean_caption for p in pairs}
    for p in pairs:
        if p.noise == "wrong":
            assert p.caption in clean
        if p.noise == "partial":
            mentioned = [s for s in synthetic.SHAPES if s in p.caption]
            assert len(mentioned) == 1
            if len(p.scene) == 1:
                assert p.scene[0].color not in p.caption  # the colour is dropped


def test_clean_caption_describes_the_scene():
    rng = random.Random(0)
    scene = (synthetic.ShapeSpec("circle", "red", "small", 0.27, 0.5),
             synthetic.ShapeSpec("square", "blue", "large", 0.73, 0.5))
    cap = synthetic.describe(scene, rng)
    assert cap in ("a small red circle left of a large blue square", "a large blue square right of a small red circle")


def test_rendering_is_deterministic_and_shows_the_colour():
    scene = (synthetic.ShapeSpec("square", "red", "large", 0.5, 0.5),)
    a = synthetic.render_scene(scene, 64, seed=5)
    b = synthetic.render_scene(scene, 64, seed=5)
    assert a.tobytes() == b.tobytes()
    assert a.getpixel((32, 32)) == synthetic.COLORS["red"]


def test_cc3m_tsv_is_headerless_caption_tab_url_with_dead_rows(tmp_path):
    made = synthetic.make_synthetic_cc3m(tmp_path, SyntheticConfig(n_train=100, n_val=20, image_size=32))
    stats = synthetic.write_cc3m_tsv(made["train"], "http://127.0.0.1:9/", "train", tmp_path / "t.tsv",
                                     dead_fraction=0.05)
    lines = (tmp_path / "t.tsv").read_text().splitlines()
    assert stats == {"rows": 100, "dead": 5} and len(lines) == 100
    assert not lines[0].startswith("caption\t")
    assert all(line.count("\t") == 1 for line in lines)
    urls = [line.split("\t")[1] for line in lines]
    assert sum("missing-" in u for u in urls) == 5
    present = [u for u in urls if "missing-" not in u]
    assert all((made["www"] / u.split("127.0.0.1:9/")[1]).is_file() for u in present)


def test_images_are_not_redrawn_on_rerun(tmp_path):
    cfg = SyntheticConfig(n_train=10, n_val=4, image_size=32)
    synthetic.make_synthetic_cc3m(tmp_path, cfg)
    f = tmp_path / "www" / "train" / "train-000000.jpg"
    before = f.stat().st_mtime_ns
    synthetic.make_synthetic_cc3m(tmp_path, cfg)
    assert f.stat().st_mtime_ns == before


def test_synthetic_goi_parses_with_the_real_parser(tmp_path):
    files = synthetic.make_synthetic_goi(tmp_path, 40, 32, seed=0)
    header = files["class_descriptions"].read_text().splitlines()[0]
    assert header == "LabelName,DisplayName"
    es = load_goi(files["class_descriptions"], files["image_labels"], files["images_dir"], repeated_names="all")
    names = synthetic.goi_class_names()
    assert es.n_classes == len(names) and es.n_images == 40
    assert len(set(es.caption_names())) == len(set(names)) < len(names)  # repeated names, as the real list
    assert not es.missing_images()
    for labels in es.labels:  # every true name appears; both ids of a repeated true name are labels
        got = {es.class_names[c][0] for c in labels}
        assert got and all(sum(n == name for n in names) == sum(es.class_names[c][0] == name for c in labels)
                           for name in got)


def test_synthetic_in10k_has_row0_quirk_and_ancestor_labels(tmp_path):
    files = synthetic.make_synthetic_in10k(tmp_path, 30, 32, seed=0)
    rows = files["dictionary"].read_text().splitlines()
    assert rows[0].startswith("category_index\t") and rows[1] == "0\tn90000000\t-1  thing"
    es = load_tencent_in10k(files["dictionary"], files["val_list"], files["images_root"])
    parents = [p for _, p, _ in synthetic.in10k_hierarchy()]
    assert es.n_images == 30 and not es.missing_images()
    assert es.class_names[0] == ["thing"]
    for labels in es.labels:
        leaf, *ancestors = labels
        chain, node = [], parents[leaf]
        while node != -1:
            chain.append(node)
            node = parents[node]
        assert ancestors == chain
        assert len(es.class_names[leaf]) == 2  # "red circle, scarlet circle"


def test_stage_uses_the_paper_goi_class_list_when_present(tmp_path):
    from otterlib.config import EvalSetConfig
    from otterlib.stages import load_eval_set

    files = synthetic.make_synthetic_goi(tmp_path, 20, 32, seed=0)
    cfg = EvalSetConfig("goi", metadata_dir=str(tmp_path), images_dir=str(files["images_dir"]))
    by_descriptions = load_eval_set(cfg)
    (tmp_path / "goi_classes.txt").write_text("Square\nCircle\nHexagon\n")
    by_paper_list = load_eval_set(cfg)
    assert by_descriptions.n_classes == len(synthetic.goi_class_names())
    assert [c[0] for c in by_paper_list.class_names] == ["Square", "Circle", "Hexagon"]
    assert all(set(labels) <= {0, 1} for labels in by_paper_list.labels)
