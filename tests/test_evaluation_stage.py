"""Stage 04 (``stages.evaluate_run``) on tiny official-format eval sets written here, with a tiny trained run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from otterlib import checkpoint as ckpt_io
from otterlib import layout, stages
from otterlib.config import Profile, load_profile, resolve_run
from otterlib.models import create_model

TINY = {"image_encoder": "tiny_cnn", "text_encoder": "tiny_bert", "embed_dim": 16, "pretrained": False,
        "max_text_tokens": 16}
GOI_CLASSES = [("/m/0a", "Ball"), ("/m/0b", "Wave"), ("/m/0c", "Ball"), ("/m/0d", "Dog"), ("/m/0e", "Cat")]
GOI_POSITIVES = {"img0": ["/m/0a"], "img1": ["/m/0c", "/m/0d"], "img2": ["/m/0b"], "img3": ["/m/0e"]}
TENCENT = [("n00002452", -1, "thing"), ("n00000002", 0, "animal, beast"), ("n00000003", 1, "dog"),
           ("n00000004", 1, "cat"), ("n00000005", 0, "plant")]
TENCENT_IMAGES = [("n00000004/n00000004_1.JPEG", 3), ("n00000005/n00000005_2.JPEG", 4),
                  ("n00000003/n00000003_3.JPEG", 2), ("n00000004/n00000004_4.JPEG", 3)]


def _image(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), (shade, 255 - shade, 90)).save(path)


def write_goi(folder: Path) -> None:
    """Open Images V6-format class descriptions, human-verified labels and ``images/<ImageID>.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "oidv6-class-descriptions.csv").write_text(
        "LabelName,DisplayName\n" + "".join(f"{m},{n}\n" for m, n in GOI_CLASSES))
    rows = [f"{i},verification,{m},1" for i, mids in GOI_POSITIVES.items() for m in mids]
    (folder / "test-annotations-human-imagelabels.csv").write_text(
        "ImageID,Source,LabelName,Confidence\n" + "\n".join(rows) + "\n")
    for n, image_id in enumerate(GOI_POSITIVES):
        _image(folder / "images" / f"{image_id}.jpg", 60 * n)


def write_in10k(folder: Path) -> None:
    """Tencent-format dictionary (row 0 malformed like the official copy), val list and ImageNet-layout images."""
    folder.mkdir(parents=True, exist_ok=True)
    body = [f"0\t{TENCENT[0][0]}\t-1  {TENCENT[0][2]}"]
    body += [f"{i}\t{w}\t{p}\t{n}" for i, (w, p, n) in enumerate(TENCENT) if i]
    (folder / "dictionary_and_semantic_hierarchy.txt").write_text(
        "category_index\tcategory_id\tindex_of_parent_category\tcategory name\n" + "\n".join(body) + "\n")
    parents = [p for _, p, _ in TENCENT]
    lines = []
    for n, (rel, leaf) in enumerate(TENCENT_IMAGES):
        chain, node = [leaf], parents[leaf]
        while node != -1:
            chain.append(node)
            node = parents[node]
        lines.append("\t".join([rel, *map(str, chain)]))
        _image(folder / "images" / rel, 50 * n)
    (folder / "val_image_id_from_imagenet.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    """The smoke profile on the two tiny eval sets, with one tiny trained run (``tiny`` / ``otter``)."""
    write_goi(tmp_path / "goi")
    write_in10k(tmp_path / "in10k")
    profile = load_profile("smoke", {
        "results_dir": str(tmp_path / "results"),
        "settings": [{"name": "tiny", "model": TINY}],
        "eval.sets": [{"name": s, "metadata_dir": str(tmp_path / s), "images_dir": str(tmp_path / s / "images")}
                      for s in ("goi", "in10k")],
        "eval.image_size": 16,
    })
    cfg = resolve_run(profile, "tiny", "otter")
    model = create_model(cfg.model)
    ckpt_io.save_atomic({"model": model.state_dict(), "epoch": 1},
                        ckpt_io.checkpoint_dir(Path(cfg.run_dir)) / ckpt_io.BEST)
    return profile


def test_clean_mode_with_a_missing_in10k_image(profile: Profile) -> None:
    in10k = profile.eval.sets[1]
    (layout.eval_images_dir(in10k) / TENCENT_IMAGES[1][0]).unlink()
    rows = {r["dataset"]: r for r in stages.evaluate_run(profile, "tiny", "otter", mode="clean")}
    assert rows["in10k"]["n_images"] == len(TENCENT_IMAGES) - 1 and rows["in10k"]["n_images_missing"] == 1
    assert rows["in10k"]["mode"] == "clean" and rows["goi"]["n_images_missing"] == 0
    assert layout.eval_rows_path(profile.run_dir("tiny", "otter", 0), "clean").is_file()


def test_score_files_hold_image_ids_and_class_ap_and_the_tally_pairs_by_them(profile: Profile) -> None:
    from otterlib import report

    infonce = resolve_run(profile, "tiny", "infonce")
    otter_ckpt = ckpt_io.checkpoint_dir(profile.run_dir("tiny", "otter", 0)) / ckpt_io.BEST
    ckpt_io.save_atomic(ckpt_io.load(otter_ckpt), ckpt_io.checkpoint_dir(Path(infonce.run_dir)) / ckpt_io.BEST)
    rows = {m: stages.evaluate_run(profile, "tiny", m) for m in ("otter", "infonce")}
    hits = report.load_hits(layout.hits_path(profile.run_dir("tiny", "otter", 0), "goi"))
    assert hits.image_ids.tolist() == list(GOI_POSITIVES) and set(hits.ks) == set(profile.eval.ks)
    assert np.mean(hits.ap) == pytest.approx(rows["otter"][0]["metrics"]["map"])  # mAP = mean of the class APs
    grid = report.Grid.from_profile(profile)
    t = report.tally(report.collect_rows(profile.results_root), grid, report.TieRules(n_boot=50))
    assert (t["status"] == "available").all() and t["verdict"].notna().all()
    assert (t["diff"] == 0).all()  # the same weights: a tie in every cell, paired image by image

    (layout.eval_images_dir(profile.eval.sets[0]) / "img2.jpg").unlink()  # infonce now sees another image set
    stages.evaluate_run(profile, "tiny", "infonce")
    with pytest.raises(ValueError, match="different image"):
        report.tally(report.collect_rows(profile.results_root), grid, report.TieRules(n_boot=50))


def test_trivial_rows_on_the_images_on_disk(profile: Profile) -> None:
    from otterlib.evaluate import read_eval_rows

    stages.trivial_baselines(profile)
    rows = read_eval_rows(layout.eval_rows_path(layout.trivial_dir(profile)))
    by = {(r["dataset"], r["method"]): r["metrics"] for r in rows}
    goi = stages.load_eval_set(profile.eval.sets[0], eval_cfg=profile.eval)
    assert by[("goi", "random")]["fh@1"] == pytest.approx(np.mean([len(set(l)) / goi.n_classes for l in goi.labels]))
    assert "map" in by[("in10k", "random")] and "map" not in by[("in10k", "constant")]


def test_bug_compatible_switch_gives_the_official_tencent_row0_caption(profile: Profile) -> None:
    in10k = profile.eval.sets[1]
    assert stages.load_eval_set(in10k, eval_cfg=profile.eval).class_names[0] == ["thing"]
    profile.eval.bug_compatible = True
    assert stages.load_eval_set(in10k, eval_cfg=profile.eval).class_names[0] == ["-1  thing"]
    rows = stages.evaluate_run(profile, "tiny", "otter")
    assert all(r["bug_compatible"] is True for r in rows)


def test_paper_mode_uses_the_official_goi_file_and_02_cross_checks_both_rules(profile: Profile) -> None:
    goi = profile.eval.sets[0]
    folder = layout.eval_set_dir(goi)
    rebuilt = stages.load_eval_set(goi, eval_cfg=profile.eval)
    assert rebuilt.info["label_source"] == "rebuilt (repeated names: first)"
    assert rebuilt.labels == [[0], [0, 3], [1], [4]]  # img1's Ball positive (/m/0c) -> first Ball id
    summary = stages.summarize_eval_set(goi, profile.eval)
    assert summary["label_source"] == rebuilt.info["label_source"] and summary["n_repeated_name_labels"] == 2
    assert summary["label_crosscheck"] == []  # no goi_images.txt to compare with

    (folder / "goi_classes.txt").write_text("".join(f"{n}\n" for _, n in GOI_CLASSES))
    (folder / "goi_images.txt").write_text("img0.jpg\t0\nimg1.jpg\t2\t3\nimg2.jpg\t1\nimg3.jpg\t4\n")
    official = stages.load_eval_set(goi, eval_cfg=profile.eval)
    assert official.info["label_source"] == "official goi_images.txt" and official.labels[1] == [2, 3]
    assert stages.load_eval_set(goi, mode="clean", eval_cfg=profile.eval).labels[1] == [0, 2]  # merged Ball
    summary = stages.summarize_eval_set(goi, profile.eval)
    assert summary["label_source"] == "official goi_images.txt"
    checks = {c["rule"]: c for c in summary["label_crosscheck"]}
    assert checks["first"]["n_images_with_other_labels"] == 1 and checks["first"]["n_labels_only_official"] == 1
    assert checks["all"]["n_images_with_other_labels"] == 2 and checks["all"]["n_labels_only_rebuilt"] == 2
    differences = (folder / "goi_label_differences_first.csv").read_text().splitlines()
    assert differences == ["image_id,only_official,only_rebuilt", "img1,Ball (2),Ball (0)"]
    rows = {r["dataset"]: r for r in stages.evaluate_run(profile, "tiny", "otter")}
    assert rows["goi"]["label_source"] == "official goi_images.txt"


def test_images_rejected_by_the_md5_check_are_counted_in_02_and_in_the_eval_rows(profile: Profile) -> None:
    from otterlib.data.goi_images import record_integrity

    goi = profile.eval.sets[0]
    images = layout.eval_images_dir(goi)
    (images / "img3.jpg").unlink()  # downloaded, but its bytes were not the photo's (e.g. Flickr's placeholder)
    record_integrity(images, verified=["img0", "img1"], rejected={"img3": "md5 0f != OriginalMD5 aa"})
    summary = stages.summarize_eval_set(goi, profile.eval)
    assert (summary["n_images_md5_verified"], summary["n_images_md5_rejected"], summary["n_images_unverified"],
            summary["n_missing_images"]) == (2, 1, 1, 1)
    rows = {r["dataset"]: r for r in stages.evaluate_run(profile, "tiny", "otter")}
    assert rows["goi"]["n_images"] == 3 and rows["goi"]["n_images_missing"] == 1
    assert rows["goi"]["n_images_md5_rejected"] == 1 and rows["in10k"]["n_images_md5_rejected"] == 0
