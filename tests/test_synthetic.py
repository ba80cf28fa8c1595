"""Writers of the synthetic world: rendering, the CC3M-format TSV, and eval sets in the official formats."""
import math

import numpy as np
import pytest

from otterlib.baselines import class_frequencies
from otterlib.config import SyntheticConfig
from otterlib.data import synthetic, world
from otterlib.data.evalsets import load_goi, load_tencent_in10k, tencent_ancestors
from otterlib.data.world import SceneObject


def _render(shape="square", color="red", pattern="solid", size="large", image_size=64, seed=5):
    return np.asarray(synthetic.render_scene((SceneObject(shape, color, pattern, size, 0.5, 0.5),), image_size, seed))


def test_rendering_is_deterministic_and_shows_colour_and_pattern():
    a = _render()
    np.testing.assert_array_equal(a, _render())
    centre = a[30:34, 30:34].reshape(-1, 3).astype(int)
    assert np.abs(centre - synthetic.COLOR_RGB["red"]).max() <= synthetic.COLOR_JITTER
    red = lambda img: (np.abs(img.astype(int) - synthetic.COLOR_RGB["red"]).max(axis=2) <= synthetic.COLOR_JITTER)
    solid, striped, hollow = (red(_render(pattern=p)).sum() for p in ("solid", "striped", "hollow"))
    assert solid > striped > hollow > 0  # stripes cover part of the inside, an outline less
    assert red(_render(size="small")).sum() < 0.5 * solid


@pytest.mark.parametrize("shape", world.SHAPES)
def test_every_shape_draws_a_distinct_mask(shape):
    mask = synthetic.object_mask(SceneObject(shape, "red", "solid", "large", 0.5, 0.5), 64)
    assert 60 < mask.sum() < 0.2 * 64 * 64
    others = [synthetic.object_mask(SceneObject(s, "red", "solid", "large", 0.5, 0.5), 64)
              for s in world.SHAPES if s != shape]
    assert all((mask != o).sum() > 10 for o in others)


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
    captions = [line.split("\t")[0] for line in lines]
    assert captions == [p.caption for p in synthetic.split_pairs(SyntheticConfig(n_train=100, n_val=20), "train")]


def test_images_are_reused_for_the_same_world_and_redrawn_for_another(tmp_path):
    cfg = SyntheticConfig(n_train=10, n_val=4, image_size=32)
    synthetic.make_synthetic_cc3m(tmp_path, cfg)
    f = tmp_path / "www" / "train" / "train-000000.jpg"
    before = f.stat().st_mtime_ns
    synthetic.make_synthetic_cc3m(tmp_path, cfg)
    assert f.stat().st_mtime_ns == before
    synthetic.make_synthetic_cc3m(tmp_path, SyntheticConfig(n_train=10, n_val=4, image_size=40))
    with f.open("rb") as fh:
        from PIL import Image
        assert Image.open(fh).size == (40, 40)


def test_synthetic_goi_parses_with_the_real_parser(tmp_path):
    files = synthetic.make_synthetic_goi(tmp_path, 60, 32, seed=0, zipf_exponent=0.8)
    assert files["class_descriptions"].read_text().splitlines()[0] == "LabelName,DisplayName"
    es = load_goi(files["class_descriptions"], files["image_labels"], files["images_dir"], repeated_names="all")
    names = synthetic.goi_class_names()
    assert es.n_classes == len(names) >= 500 and es.n_images == 60
    assert len(set(es.caption_names())) == len(set(names)) == len(names) - len(synthetic.GOI_REPEATED)
    assert set(synthetic.GOI_REPEATED) < set(names[:-len(synthetic.GOI_REPEATED)])  # real names, listed twice
    assert not es.missing_images()
    for labels in es.labels:  # every true name appears; both ids of a repeated true name are labels
        got = [es.class_names[c][0] for c in labels]
        assert got and all(got.count(name) == names.count(name) for name in got)


def test_goi_labels_are_the_class_kinds_of_every_object():
    scene = (SceneObject("star", "cyan", "hollow", "small", 0.3, 0.3),
             SceneObject("star", "cyan", "solid", "large", 0.7, 0.7))
    assert synthetic.goi_labels_for(scene) == {"Cyan star", "Hollow cyan star", "Small cyan star",
                                               "Solid cyan star", "Large cyan star"}


def test_synthetic_in10k_has_row0_quirk_and_ancestor_labels(tmp_path):
    files = synthetic.make_synthetic_in10k(tmp_path, 40, 32, seed=0)
    rows = files["dictionary"].read_text().splitlines()
    assert rows[0].startswith("category_index\t") and rows[1] == "0\tn90000000\t-1  red circle, scarlet circle"
    es = load_tencent_in10k(files["dictionary"], files["val_list"], files["images_root"])
    hierarchy = synthetic.in10k_hierarchy()
    parents = [p for _, p, _ in hierarchy]
    assert es.n_classes == len(hierarchy) >= 300 and es.n_images == 40 and not es.missing_images()
    assert es.class_names[0] == ["red circle", "scarlet circle"]
    for labels in es.labels:
        leaf, *ancestors = labels
        assert ancestors == tencent_ancestors(parents, leaf) and len(labels) == len(synthetic.IN10K_LEVELS)
        color, shape = es.class_names[ancestors[-1]][0].split()  # the root is a coloured shape
        assert color in world.COLORS and shape in world.SHAPES


def test_in10k_names_and_leaves():
    hierarchy = synthetic.in10k_hierarchy()
    obj = SceneObject("diamond", "red", "striped", "large", 0.5, 0.5)
    leaf = synthetic.in10k_leaf(obj)
    assert hierarchy[leaf][2] == ["striped red diamond", "striped scarlet diamond", "striped red rhombus"]
    chain = [hierarchy[c][2][0] for c in tencent_ancestors([p for _, p, _ in hierarchy], leaf)]
    assert chain == ["red diamond"]
    leaves = {synthetic.in10k_leaf(SceneObject(s, c, p, z, 0.5, 0.5)) for s in world.SHAPES for c in world.COLORS
              for p in world.PATTERNS for z in world.SIZES}
    assert leaves == set(range(len(hierarchy) - len(leaves), len(hierarchy)))  # the leaves are the last level


def test_goi_labels_are_long_tailed_and_no_label_is_on_every_image(tmp_path):
    f = synthetic.make_synthetic_goi(tmp_path, 300, 16, seed=1, zipf_exponent=0.8)
    es = load_goi(f["class_descriptions"], f["image_labels"], f["images_dir"])
    freq = class_frequencies(es.labels, es.n_classes)
    assert freq.max() < 0.25 * es.n_images  # no label on every image; not even on a quarter of them
    used = np.sort(freq[freq > 0])[::-1]
    assert used[0] >= 10 * np.median(used)  # Zipf-drawn attributes: a long tail
    kinds = len(synthetic.GOI_CLASS_KINDS)
    assert kinds < np.mean([len(row) for row in es.labels]) < kinds * world.MAX_OBJECTS


def test_in10k_leaves_are_balanced_and_ancestors_carry_the_skew(tmp_path):
    f = synthetic.make_synthetic_in10k(tmp_path, 700, 16, seed=1)
    es = load_tencent_in10k(f["dictionary"], f["val_list"], f["images_root"])
    leaf_counts = np.bincount([row[0] for row in es.labels], minlength=es.n_classes)
    n_leaves = math.prod(len(world.ATTRIBUTES[a]) for a in synthetic.IN10K_LEVELS[-1])
    leaves = leaf_counts[-n_leaves:]
    assert leaves.max() - leaves.min() <= 1 and leaf_counts[:-n_leaves].sum() == 0
    freq = class_frequencies(es.labels, es.n_classes)
    roots = [c for c, (_, parent, _) in enumerate(synthetic.in10k_hierarchy()) if parent == -1]
    assert freq[roots].sum() == es.n_images and freq.max() < 0.05 * es.n_images
    assert all(len(row) == len(synthetic.IN10K_LEVELS) for row in es.labels)


def test_stage_uses_the_paper_goi_class_list_when_present(tmp_path):
    from otterlib.config import EvalSetConfig
    from otterlib.stages import load_eval_set

    files = synthetic.make_synthetic_goi(tmp_path, 20, 32, seed=0)
    cfg = EvalSetConfig("goi", metadata_dir=str(tmp_path), images_dir=str(files["images_dir"]))
    by_descriptions = load_eval_set(cfg)
    (tmp_path / "goi_classes.txt").write_text("Large circle\nSmall circle\nHexagon\n")
    by_paper_list = load_eval_set(cfg)
    assert by_descriptions.n_classes == len(synthetic.goi_class_names())
    assert [c[0] for c in by_paper_list.class_names] == ["Large circle", "Small circle", "Hexagon"]
    assert all(set(labels) <= {0, 1} for labels in by_paper_list.labels)
