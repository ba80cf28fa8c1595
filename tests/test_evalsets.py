"""Eval-set parsers (official GOI / Tencent formats), the clean protocol, the image dataset and metadata download."""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import statistics
import threading
from pathlib import Path
from typing import Iterator

import pytest
import torch
from PIL import Image

from otterlib.data.evalsets import (
    MANIFEST_PATH,
    EvalImageDataset,
    MultiLabelEvalSet,
    clean_variant,
    collate_padded,
    fetch_metadata,
    load_goi,
    load_goi_otter_format,
    load_manifest,
    load_tencent_in10k,
    read_goi_class_list,
    read_tencent_dictionary,
    tencent_ancestors,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "otter-metadata"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared OTTER metadata not available")

# --------------------------------------------------------------------------------------------------
# Google Open Images

GOI_CLASSES = [("/m/0aaa", "Ball"), ("/m/0bbb", "Wave"), ("/m/0ccc", "Ball"), ("/m/0ddd", "Cat, domestic"),
               ("/m/0eee", "Dog")]
GOI_LABELS = [  # ImageID, Source, LabelName, Confidence
    ("img3", "verification", "/m/0ddd", "1"),
    ("img1", "verification", "/m/0ccc", "1"),
    ("img1", "crowdsource-verification", "/m/0aaa", "1"),
    ("img1", "verification", "/m/0eee", "0"),
    ("img2", "verification", "/m/0bbb", "0"),        # img2 has only a negative: dropped
    ("img3", "verification", "/m/0zzz", "1"),        # MID not in the class file: dropped
    ("img3", "verification", "/m/0bbb", "1"),
    ("img3", "verification", "/m/0ddd", "1"),        # repeated positive
]


def _write_goi(tmp_path: Path, header: bool, labels_header: bool = True) -> tuple[Path, Path, Path]:
    classes = tmp_path / ("oidv6-class-descriptions.csv" if header else "class-descriptions.csv")
    rows = [f'{m},"{n}"' if "," in n else f"{m},{n}" for m, n in GOI_CLASSES]
    classes.write_text(("LabelName,DisplayName\n" if header else "") + "\n".join(rows) + "\n", encoding="utf-8")
    labels = tmp_path / "test-annotations-human-imagelabels.csv"
    body = "\n".join(",".join(r) for r in GOI_LABELS) + "\n"
    labels.write_text(("ImageID,Source,LabelName,Confidence\n" if labels_header else "") + body, encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (4, 4)).save(images / "img3.jpg")
    return classes, labels, images


@pytest.mark.parametrize("header,labels_header", [(True, True), (False, True), (False, False)])
def test_load_goi_official_csvs(tmp_path: Path, header: bool, labels_header: bool) -> None:
    classes, labels, images = _write_goi(tmp_path, header, labels_header)
    es = load_goi(classes, labels, images)
    assert es.class_names == [["Ball"], ["Wave"], ["Ball"], ["Cat, domestic"], ["Dog"]]  # row order, dupes kept
    assert es.image_ids == ["img3", "img1"]  # first appearance; img2 had no positive
    assert es.labels == [[1, 3], [0]]  # both of img1's "Ball" positives go to the first id named Ball
    assert es.image_paths == [images / "img3.jpg", images / "img1.jpg"]
    info = es.info
    assert info["class_descriptions_header"] is header
    assert (info["n_positive_rows"], info["n_negative_rows_dropped"], info["n_unknown_mid_rows_dropped"]) == (5, 2, 1)
    assert info["n_images_without_positive_dropped"] == 1 and info["n_images_found"] == 1
    summary = es.summary()
    assert summary["n_classes"] == 5 and summary["n_unique_names"] == 4 and summary["n_duplicate_name_ids"] == 1
    assert summary["n_missing_images"] == 1 and summary["label_cardinality_mean"] == 1.5


def test_load_goi_with_class_list_maps_by_name_under_an_explicit_rule(tmp_path: Path) -> None:
    classes, labels, images = _write_goi(tmp_path, header=True)
    class_list = tmp_path / "goi_classes.txt"
    class_list.write_text("Dog\nBall\nWave\nCat, domestic\nBall\nUnseen\n", encoding="utf-8")
    first = load_goi(classes, labels, images, class_list=class_list)
    assert [n[0] for n in first.class_names] == ["Dog", "Ball", "Wave", "Cat, domestic", "Ball", "Unseen"]
    assert first.labels == [[2, 3], [1]]  # a "Ball" positive marks the first id named Ball
    every = load_goi(classes, labels, images, class_list=class_list, repeated_names="all")
    assert every.labels == [[2, 3], [1, 4]]  # ... or every id named Ball
    for es, rule in ((first, "first"), (every, "all")):
        assert es.info["repeated_names"] == rule and es.info["label_source"] == f"rebuilt (repeated names: {rule})"
        assert es.info["n_repeated_name_labels"] == 2 and es.info["n_images_with_repeated_name_labels"] == 1
    with pytest.raises(ValueError, match="repeated_names must be one of"):
        load_goi(classes, labels, images, repeated_names="last")


def test_goi_rebuild_is_cross_checked_against_the_official_file(tmp_path: Path) -> None:
    from otterlib.data.goi_labels import compare_goi_labels

    classes, labels, images = _write_goi(tmp_path, header=True)
    (tmp_path / "goi_classes.txt").write_text("Ball\nWave\nBall\nCat, domestic\nDog\n")
    # official: img1 labelled by MID position (Ball ids 0 and 2), img3 lacks Wave, and one image we do not have
    (tmp_path / "goi_images.txt").write_text("img3.jpg\t3\nimg1.jpg\t0\t2\nimg9.jpg\t4\n")
    official = load_goi_otter_format(tmp_path / "goi_classes.txt", tmp_path / "goi_images.txt", images)
    rebuilt = load_goi(classes, labels, images, class_list=tmp_path / "goi_classes.txt")
    check = compare_goi_labels(rebuilt, official)
    assert check.summary() == {
        "rule": "first", "n_images_official": 3, "n_images_rebuilt": 2, "n_images_only_official": 1,
        "n_images_only_rebuilt": 0, "n_images_with_other_labels": 2, "n_labels_only_official": 1,
        "n_labels_only_rebuilt": 1, "n_repeated_name_labels": 2, "same_class_list": True}
    diff = check.differences.set_index("image_id")
    assert diff.loc["img9", "only_official"] == "Dog (4)" and diff.loc["img9", "only_rebuilt"] == ""
    assert diff.loc["img1", "only_official"] == "Ball (2)" and diff.loc["img3", "only_rebuilt"] == "Wave (1)"
    all_ids = compare_goi_labels(load_goi(classes, labels, images, class_list=tmp_path / "goi_classes.txt",
                                          repeated_names="all"), official)
    assert all_ids.summary()["n_images_with_other_labels"] == 1 and all_ids.summary()["n_labels_only_official"] == 0
    with pytest.raises(ValueError, match="rebuilt"):
        compare_goi_labels(official, official)


def test_goi_parsers_reject_malformed_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("/m/0aaa,Ball,extra\n")
    with pytest.raises(ValueError, match="bad.csv:1"):
        load_goi(bad, bad, tmp_path)
    classes, labels, images = _write_goi(tmp_path, header=True)
    labels.write_text("ImageID,Source,LabelName,Confidence\nimg1,verification,/m/0aaa,yes\n")
    with pytest.raises(ValueError, match="Confidence 'yes'"):
        load_goi(classes, labels, images)
    with pytest.raises(FileNotFoundError, match="fetch_metadata"):
        load_goi(tmp_path / "nope.csv", labels, images)


def test_load_goi_otter_format(tmp_path: Path) -> None:
    (tmp_path / "goi_classes.txt").write_text("Ball\nWave\nBall\n")
    (tmp_path / "goi_images.txt").write_text("abc.jpg\t0\t1\ndef.jpg\t2\n")
    es = load_goi_otter_format(tmp_path / "goi_classes.txt", tmp_path / "goi_images.txt", tmp_path / "test")
    assert es.labels == [[0, 1], [2]] and es.image_ids == ["abc", "def"]
    assert es.image_paths[1] == tmp_path / "test" / "def.jpg"
    (tmp_path / "goi_images.txt").write_text("abc.jpg\t0\t3\n")
    with pytest.raises(ValueError, match=r"goi_images.txt:1: label id\(s\) \[3\]"):
        load_goi_otter_format(tmp_path / "goi_classes.txt", tmp_path / "goi_images.txt", tmp_path)
    (tmp_path / "goi_classes.txt").write_text("Ball\n\nWave\n")
    with pytest.raises(ValueError, match="line"):
        read_goi_class_list(tmp_path / "goi_classes.txt")


# --------------------------------------------------------------------------------------------------
# Tencent ML-Images

TENCENT_HEADER = "category_index\tcategory_id\tindex_of_parent_category\tcategory name\n"
TENCENT_ROWS = [  # index, wnid, parent, names
    (0, "n00002452", -1, "thing"),
    (1, "n00020827", -1, "matter"),
    (2, "n07705931", 0, "edible fruit"),
    (3, "n07739125", 2, "apple"),
    (4, "n07752966", 2, "currant"),
    (5, "n07744246", 1, "currant"),
    (6, "n07742313", 3, "Granny Smith, green apple"),
]


def _write_tencent(tmp_path: Path, quirk: bool = True) -> tuple[Path, Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    lines = [f"{i}\t{w}\t{p}  {n}" if (i == 0 and quirk) else f"{i}\t{w}\t{p}\t{n}" for i, w, p, n in TENCENT_ROWS]
    dictionary = tmp_path / "dictionary_and_semantic_hierarchy.txt"
    dictionary.write_text(TENCENT_HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    val = tmp_path / "val_image_id_from_imagenet.txt"
    val.write_text("n07742313/n07742313_1.JPEG\t6\t3\t2\t0\n"
                   "n07752966/n07752966_7.JPEG\t4\t2\t0\n"
                   "n07744246/n07744246_2.JPEG\t5\t1\n", encoding="utf-8")
    root = tmp_path / "images"
    (root / "n07752966").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "n07752966" / "n07752966_7.JPEG")
    return dictionary, val, root


def test_read_tencent_dictionary_fixes_row0_quirk(tmp_path: Path) -> None:
    dictionary, _, _ = _write_tencent(tmp_path)
    d = read_tencent_dictionary(dictionary)
    assert d.parents == [-1, -1, 0, 2, 2, 1, 3]
    assert d.names[0] == ["thing"] and d.names[6] == ["Granny Smith", "green apple"]
    assert d.quirks_fixed == [{"index": "0", "line": 2, "raw": "0\tn00002452\t-1  thing", "parent": -1,
                               "name": "thing", "official_name": "-1  thing", "name_used": "thing"}]
    assert d.ancestors(6) == [3, 2, 0] and tencent_ancestors(d.parents, 1) == []
    dictionary_ok, _, _ = _write_tencent(tmp_path / "ok", quirk=False)
    assert read_tencent_dictionary(dictionary_ok).quirks_fixed == []
    assert read_tencent_dictionary(dictionary_ok).names == d.names


def test_tencent_row0_official_name_under_the_bug_compatible_switch(tmp_path: Path) -> None:
    from otterlib.templates import PAPER_TEMPLATES, class_captions

    dictionary, val, root = _write_tencent(tmp_path)
    fixed = load_tencent_in10k(dictionary, val, root)
    official = load_tencent_in10k(dictionary, val, root, bug_compatible=True)
    assert class_captions(fixed.class_names, PAPER_TEMPLATES)[0][0] == "a photo of thing."
    assert class_captions(official.class_names, PAPER_TEMPLATES)[0][0] == "a photo of -1  thing."
    assert official.class_names[1:] == fixed.class_names[1:] and official.labels == fixed.labels
    assert any("'a photo of -1  thing.'" in note and "eval.bug_compatible" in note for note in fixed.info["notes"])
    assert any("official" in note for note in official.info["notes"])
    assert fixed.summary()["notes"] == fixed.info["notes"]
    dictionary_ok, val_ok, root_ok = _write_tencent(tmp_path / "ok", quirk=False)
    assert load_tencent_in10k(dictionary_ok, val_ok, root_ok, bug_compatible=True).class_names[0] == ["thing"]


def test_read_tencent_dictionary_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text(TENCENT_HEADER + "0\tn1\t-1\tthing\n2\tn2\t0\tskipped\n")
    with pytest.raises(ValueError, match="out of order"):
        read_tencent_dictionary(path)
    path.write_text(TENCENT_HEADER + "0\tn1\t1\ta\n1\tn2\t0\tb\n")
    with pytest.raises(ValueError, match="cycle"):
        read_tencent_dictionary(path)
    path.write_text("0\tn1\t-1\tthing\n")
    with pytest.raises(ValueError, match="header"):
        read_tencent_dictionary(path)


def test_load_tencent_in10k(tmp_path: Path) -> None:
    dictionary, val, root = _write_tencent(tmp_path)
    es = load_tencent_in10k(dictionary, val, root)
    assert es.n_classes == 7 and es.labels == [[6, 3, 2, 0], [4, 2, 0], [5, 1]]
    assert es.image_ids[0] == "n07742313/n07742313_1.JPEG"
    assert es.image_paths[1] == root / "n07752966" / "n07752966_7.JPEG"
    assert es.info["n_images_found"] == 1 and es.info["leaf_ids"] == [6, 4, 5]
    assert es.info["n_rows_not_leaf_plus_ancestors"] == 0 and es.info["n_rows_wnid_mismatch"] == 0
    assert es.info["quirks_fixed"][0]["name"] == "thing"
    leaf = load_tencent_in10k(dictionary, val, root, leaf_only=True, flat_layout=True)
    assert leaf.labels == [[6], [4], [5]] and leaf.info["label_mode"] == "leaf"
    assert leaf.image_paths[1] == root / "n07752966_7.JPEG"
    val.write_text("n07742313/n07742313_1.JPEG\t6\t3\n")  # missing ancestors 2 and 0
    assert load_tencent_in10k(dictionary, val, root).info["n_rows_not_leaf_plus_ancestors"] == 1
    val.write_text("n07742313/n07742313_1.JPEG\t7\n")
    with pytest.raises(ValueError, match=r"outside \[0, 6\]"):
        load_tencent_in10k(dictionary, val, root)


# --------------------------------------------------------------------------------------------------
# The clean protocol


def test_clean_variant_goi_merges_duplicate_names(tmp_path: Path) -> None:
    classes, labels, images = _write_goi(tmp_path, header=True)
    clean = clean_variant(load_goi(classes, labels, images))
    assert clean.class_names == [["Ball"], ["Wave"], ["Cat, domestic"], ["Dog"]]
    assert clean.info["class_id_map"] == [0, 1, 0, 2, 3] and clean.info["merged_names"] == {"Ball": [0, 2]}
    assert clean.labels == [[1, 2], [0]]  # img1's "Ball" label is id 0, as before
    assert clean_variant(clean) is clean


def test_clean_variant_tencent_is_leaf_only(tmp_path: Path) -> None:
    es = load_tencent_in10k(*_write_tencent(tmp_path))
    clean = clean_variant(es)
    assert clean.n_classes == 6 and clean.info["merged_names"] == {"currant": [4, 5]}
    assert clean.labels == [[5], [4], [4]]  # leaves 6, 4, 5 -> ids 5, 4, 4 (both currants are id 4)
    assert "parents" not in clean.info and clean.info["label_mode"] == "leaf"
    assert clean_variant(es, dedupe_names=False).labels == [[6], [4], [5]]


def test_missing_images_drop_their_per_image_info_too(tmp_path: Path) -> None:
    es = load_tencent_in10k(*_write_tencent(tmp_path)).with_existing_images()  # only image 1 is on disk
    assert es.image_ids == ["n07752966/n07752966_7.JPEG"] and es.info["leaf_ids"] == [4]
    assert es.info["n_dropped_missing"] == 2
    clean = clean_variant(es)
    assert clean.labels == [[4]] and clean.info["leaf_ids"] == [4]


# --------------------------------------------------------------------------------------------------
# Images


def test_dataset_skips_unreadable_images_and_collate_pads(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (6, 5), (255, 0, 0)).save(good)
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (64, 64), (0, 255, 0)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00" * 100)
    ds = EvalImageDataset([good, truncated, garbage, tmp_path / "missing.jpg", good], [[3, 1], [0], [0], [0], []])
    items = [ds[i] for i in range(len(ds))]
    assert items[1] is None and items[2] is None and items[3] is None
    img, lab = items[0]
    assert img.shape == (3, 5, 6) and lab == [3, 1] and float(img[0].min()) == 1.0
    images, labels, kept = collate_padded(items, return_kept=True)
    assert images.shape == (2, 3, 5, 6)
    assert labels.tolist() == [[3, 1], [-1, -1]]
    assert kept.tolist() == [True, False, False, False, True]
    empty_images, empty_labels = collate_padded([None, None])
    assert empty_images.shape == (0, 3, 0, 0) and empty_labels.shape == (0, 0)


def test_eval_set_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="equally long"):
        MultiLabelEvalSet("x", [["a"]], [tmp_path], [[0], [0]], ["a"])
    with pytest.raises(ValueError, match=r"\[0, 0\]"):
        MultiLabelEvalSet("x", [["a"]], [tmp_path], [[1]], ["a"])
    with pytest.raises(ValueError, match="non-empty list"):
        MultiLabelEvalSet("x", ["a"], [tmp_path], [[0]], ["a"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"info\['leaf_ids'\] has 2 entries for 1 images"):
        MultiLabelEvalSet("x", [["a"]], [tmp_path], [[0]], ["a"], {"leaf_ids": [0, 0]})


# --------------------------------------------------------------------------------------------------
# Metadata download over loopback


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    httpd.shutdown()
    httpd.server_close()


def _manifest(tmp_path: Path, entries: dict[str, dict[str, object]]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"files": entries}))
    return path


def test_fetch_metadata_verifies_sha256(tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    base, root, requests = server
    content = b"LabelName,DisplayName\n/m/0aaa,Ball\n"
    (root / "classes.csv").write_bytes(content)
    good = hashlib.sha256(content).hexdigest()
    wrong = "0" * 64
    manifest = _manifest(tmp_path, {
        "good": {"filename": "classes.csv", "url": "https://example.invalid/classes.csv", "sha256": good},
        "wrong": {"filename": "classes.csv", "url": "https://example.invalid/classes.csv", "sha256": wrong},
    })
    dest = tmp_path / "dest"
    path = fetch_metadata("good", dest, url=f"{base}/classes.csv", manifest_path=manifest)
    assert path == dest / "classes.csv" and path.read_bytes() == content
    fetch_metadata("good", dest, url=f"{base}/classes.csv", manifest_path=manifest)
    assert requests == ["/classes.csv"]  # verified local copy: no second download

    with pytest.raises(ValueError) as err:
        fetch_metadata("wrong", tmp_path / "d2", url=f"{base}/classes.csv", manifest_path=manifest)
    message = str(err.value)
    assert "classes.csv" in message and wrong in message and good in message
    assert f"expected_sha256={good!r}" in message
    assert (tmp_path / "d2" / "classes.csv.rejected").read_bytes() == content
    assert not (tmp_path / "d2" / "classes.csv").exists()
    ok = fetch_metadata("wrong", tmp_path / "d2", url=f"{base}/classes.csv", manifest_path=manifest,
                        expected_sha256=good)
    assert ok.read_bytes() == content

    with pytest.raises(ValueError, match="unknown metadata file 'nope'"):
        fetch_metadata("nope", dest, manifest_path=manifest)


def test_fetch_metadata_trust_on_first_use(tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    base, root, _ = server
    (root / "list.txt").write_bytes(b"first version\n")
    manifest = _manifest(tmp_path, {"tofu": {"filename": "list.txt", "url": "https://example.invalid/x", "sha256": None}})
    dest = tmp_path / "dest"
    with pytest.warns(UserWarning, match="trust on first use"):
        path = fetch_metadata("tofu", dest, url=f"{base}/list.txt", manifest_path=manifest)
    sidecar = dest / "list.txt.sha256"
    assert sidecar.read_text().split()[0] == hashlib.sha256(b"first version\n").hexdigest()
    path.unlink()
    (root / "list.txt").write_bytes(b"changed upstream\n")
    with pytest.raises(ValueError, match="sidecar"):
        fetch_metadata("tofu", dest, url=f"{base}/list.txt", manifest_path=manifest)


def test_fetch_metadata_unreachable_server(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {"x": {"filename": "x.txt", "url": "http://127.0.0.1:9/x.txt", "sha256": None}})
    with pytest.raises(ConnectionError, match="mirror"):
        fetch_metadata("x", tmp_path / "dest", manifest_path=manifest, timeout=5)
    assert not (tmp_path / "dest" / "x.txt.part").exists()


def test_real_manifest_is_well_formed() -> None:
    files = load_manifest(MANIFEST_PATH)
    official = ("https://storage.googleapis.com/openimages/", "https://raw.githubusercontent.com/Tencent/",
                "https://raw.githubusercontent.com/facebookresearch/OTTER/")
    for name, entry in files.items():
        assert entry["url"].startswith(official), name
        assert entry["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), name
        assert entry["sha256_source"], name
    assert {"goi_class_descriptions_v6", "goi_test_image_labels_v6", "tencent_dictionary",
            "tencent_val_list", "otter_goi_classes"} <= set(files)


@needs_shared
def test_real_manifest_hashes_match_the_shared_copies() -> None:
    files = load_manifest(MANIFEST_PATH)
    pairs = {"otter_goi_classes": "goi_classes.txt", "otter_tencent_classes": "tencent_classes.txt",
             "tencent_val_list": "tencent_val_image_id_from_imagenet.txt"}
    for name, local in pairs.items():
        data = (SHARED / local).read_bytes()
        assert files[name]["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert files[name]["bytes"] == len(data), name


# --------------------------------------------------------------------------------------------------
# The real metadata files (skipped without ../shared)


@needs_shared
def test_real_goi_class_list_via_otter_loader(tmp_path: Path) -> None:
    images_txt = tmp_path / "goi_images.txt"
    images_txt.write_text("a.jpg\t0\t19993\nb.jpg\t5\n")
    es = load_goi_otter_format(SHARED / "goi_classes.txt", images_txt, tmp_path)
    summary = es.summary()
    assert summary["n_classes"] == 19994 and summary["n_unique_names"] == 19982
    assert es.class_names[0] == ["Sprenger's tulip"] and es.class_names[-1] == ["Helmet"]
    clean = clean_variant(es)
    assert clean.n_classes == 19982 and len(clean.info["merged_names"]) == 12
    assert {"Ball", "Wave", "Human leg", "Lilac"} <= set(clean.info["merged_names"])


@needs_shared
def test_real_tencent_dictionary_and_val_list(tmp_path: Path) -> None:
    es = load_tencent_in10k(SHARED / "tencent_classes.txt", SHARED / "tencent_val_image_id_from_imagenet.txt", tmp_path)
    assert es.n_classes == 11166 and es.n_images == 50000
    assert es.class_names[0] == ["thing"] and es.info["quirks_fixed"][0]["line"] == 2
    assert es.class_names[2] == ["object", "physical object"]
    sizes = [len(r) for r in es.labels]
    assert statistics.mean(sizes) == pytest.approx(8.72, abs=0.005)
    flat = {c for r in es.labels for c in r}
    assert min(flat) >= 0 and max(flat) <= 11165 and len(flat) == 10231
    assert es.info["n_rows_not_leaf_plus_ancestors"] == 0 and es.info["n_rows_wnid_mismatch"] == 0
    assert sum(p == -1 for p in es.info["parents"]) == 4
    clean = clean_variant(es)
    assert all(len(r) == 1 for r in clean.labels) and clean.n_classes == 11166 - clean.info["n_merged_ids"]
    assert es.summary()["n_missing_images"] == 50000


def test_tensor_labels_in_collate_are_long(tmp_path: Path) -> None:
    item = (torch.zeros(3, 2, 2), [7])
    _, labels = collate_padded([item, (torch.zeros(3, 2, 2), [1, 2, 3])])
    assert labels.dtype == torch.long and labels.tolist() == [[7, -1, -1], [1, 2, 3]]
