"""The three training sources end to end on loopback: tiny metadata in each official format (written here) ->
the source's parser -> img2dataset -> shards + sizes.json -> the loaders; the held-out split; an incomplete
download flagged, then resumed. Images come from a loopback HTTP server; one URL per split is dead (404)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from official_formats import wit_row, write_wit, write_yfcc, yfcc_row
from otterlib import layout
from otterlib.config import load_profile, resolve_run
from otterlib.data.loader import IncompleteDownloadError, build_eval_pairs_loader, build_train_loader, require_complete
from otterlib.data.loopback import LoopbackImageServer
from otterlib.data.sources import yfcc15m
from otterlib.data.sources.from_profile import metadata_files
from otterlib.data.transforms import eval_transform, train_transform
from otterlib.stages.training_data import prepare_source, prepare_training_data

IMAGES = {f"{i}.jpg": (40 + 3 * i, 30 + 2 * i) for i in range(8)} | {"8.png": (36, 36)}
OPTIONS = {"processes_count": 1, "thread_count": 4, "number_sample_per_shard": 4, "image_size": 24, "timeout": 5,
           "retries": 0}
"""Tiny shards of 4 rows: 7 training rows make 2 shards."""


@pytest.fixture(scope="module")
def image_url(tmp_path_factory):
    """``image_url(name)``: the loopback URL of a served image (``gone.jpg`` answers 404)."""
    www = tmp_path_factory.mktemp("www")
    rng = np.random.default_rng(0)
    for name, (w, h) in IMAGES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(www / name)
    with LoopbackImageServer(www) as server:
        yield lambda name: f"{server.url}/{name}"


# --------------------------------------------------------------------------------------------------
# Each source's official files: returns ({split: captions that must download}, profile overrides)


def cc3m_files(root: Path, url) -> tuple[dict[str, list[str]], dict]:
    """Google's headerless ``caption<TAB>url`` TSVs under their own names."""
    train = [('a "quoted" caption, verbatim', "0.jpg"), ("caf\u00e9 \u65e5\u672c", "1.jpg"), ("a dead link", "gone.jpg"),
             ("left\tof a tab", "2.jpg"), ("four", "3.jpg"), ("five", "4.jpg"), ("six", "5.jpg")]
    val = [("held out one", "6.jpg"), ("held out dead", "gone.jpg"), ("held out two", "8.png")]
    for name, rows in (("Train_GCC-training.tsv", train), ("Validation_GCC-1.1.0-Validation.tsv", val)):
        (root / name).write_text("".join(f"{c}\t{url(f)}\n" for c, f in rows), encoding="utf-8")
    return {split: [c for c, f in rows if f != "gone.jpg"] for split, rows in (("train", train), ("val", val))}, {}


def yfcc15m_files(root: Path, url) -> tuple[dict[str, list[str]], dict]:
    """OpenAI's subset list (bz2, as published) and the 25-column metadata; 3 in 10 photo ids held out."""
    per_mille = 300
    ids = range(2001, 2100)
    train_ids = [i for i in ids if not yfcc15m.held_out(i, per_mille)][:7]
    val_ids = [i for i in ids if yfcc15m.held_out(i, per_mille)][:2]
    files = dict(zip(train_ids, ["0.jpg", "1.jpg", "gone.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"])) | \
        dict(zip(val_ids, ["6.jpg", "8.png"]))
    rows = [yfcc_row(line, photo, f"photo+{photo}", f"a+%22quoted%22+%3Cb%3Edescription%3C%2Fb%3E+{photo}",
                     url=url(files[photo])) for line, photo in enumerate(files)]
    rows.append(yfcc_row(len(rows), 9, "a+video", "moving", marker="1", url=url("7.jpg")))  # listed, but a video
    rows.append(yfcc_row(len(rows), 10, "not+listed", "", url=url("7.jpg")))
    write_yfcc(root, rows, [(line, photo) for line, photo in enumerate([*files, 9])],
               subset_name=yfcc15m.SUBSET_FILE, metadata_name=yfcc15m.METADATA_FILE)
    expected = {split: [f'photo {p}. a "quoted" description {p}' for p in chosen if files[p] != "gone.jpg"]
                for split, chosen in (("train", train_ids), ("val", val_ids))}
    return expected, {"data.sources.yfcc15m.val_per_mille": per_mille}


def wit_files(root: Path, url) -> tuple[dict[str, list[str]], dict]:
    """Two gzipped 17-column training TSVs and one validation TSV, named in the profile."""
    train = [wit_row("en", "", reference="A red tram in Lisbon", url=url("0.jpg")),
             wit_row("en", "", mime="image/png", attribution="English: The Half Dome at dusk", url=url("1.jpg")),
             wit_row("de", "", reference="Ein Hund", url=url("2.jpg")),
             wit_row("en", "", mime="image/svg+xml", reference="A map", url=url("2.jpg")),
             wit_row("en", "", reference="A dead link", url=url("gone.jpg")),
             wit_row("en", "", reference="Four", url=url("2.jpg")), wit_row("en", "", reference="Five", url=url("3.jpg")),
             wit_row("en", "", reference="Six", url=url("4.jpg")), wit_row("en", "", reference="Seven", url=url("5.jpg"))]
    val = [wit_row("en", "", reference="Validation image", url=url("6.jpg")),
           wit_row("fr", "", reference="Une image", url=url("7.jpg")),
           wit_row("en", "", attribution="English: Another one", url=url("8.png"))]
    write_wit(root / "wit_v1.train.all-00000-of-00010.tsv.gz", train[:4])
    write_wit(root / "wit_v1.train.all-00001-of-00010.tsv.gz", train[4:])
    write_wit(root / "wit_v1.val.all-00000-of-00005.tsv.gz", val)
    expected = {"train": ["A red tram in Lisbon", "The Half Dome at dusk", "Four", "Five", "Six", "Seven"],
                "val": ["Validation image", "Another one"]}
    return expected, {"data.sources.wit.train_files": ["wit_v1.train.all-00000-of-00010.tsv.gz",
                                                       "wit_v1.train.all-00001-of-00010.tsv.gz"],
                      "data.sources.wit.val_files": ["wit_v1.val.all-00000-of-00005.tsv.gz"]}


WRITERS = {"cc3m": cc3m_files, "yfcc15m": yfcc15m_files, "wit": wit_files}


def captions(loader) -> list[str]:
    return [c for _, batch in loader for c in batch]


@pytest.mark.slow
@pytest.mark.parametrize("source", list(WRITERS))
def test_a_source_downloads_from_its_official_metadata_and_the_loaders_read_it(source, image_url, tmp_path, capsys):
    root = tmp_path / source
    root.mkdir()
    expected, overrides = WRITERS[source](root, image_url)
    profile = load_profile("paper", {f"data.sources.{source}.root": str(root), "data.download": OPTIONS, **overrides})
    setting = next(s.name for s in profile.settings if s.source == source)
    data = profile.data.source(source)
    blocker = layout.shard_dir(data, "train") / "00001.tar"
    blocker.mkdir(parents=True)  # img2dataset cannot write the second training shard: it gives up on it

    first = prepare_training_data(profile, settings=[setting])
    assert list(first) == [source]
    train, val = first[source]["train"], first[source]["val"]
    assert not train.complete and train.missing_shards == ["00001"] and val.complete
    assert not layout.training_data_ready(profile, [setting])  # ./run_all.sh reruns 01
    with pytest.raises(IncompleteDownloadError, match="3 of 7 rows.*rerun 01_download_data"):
        require_complete(layout.manifest_path(data, "train"), allow_partial=False)
    shown = capsys.readouterr().out.splitlines()  # one outcome line per split; img2dataset's output in the logs
    assert len(shown) == 2 and shown[0].startswith(f"{source}/train: INCOMPLETE, 4 of 7 rows processed")
    assert shown[1].startswith(f"{source}/val: all ") and "total   - success" in (
        layout.shard_dir(data, "val") / "_source" / "download.log").read_text()

    blocker.rmdir()
    again = prepare_source(profile, source)  # resumes the missing shard; the complete split is not redone
    assert again["train"].complete and again["val"].complete and layout.training_data_ready(profile, [setting])
    assert (layout.shard_dir(data, "val") / "_source" / "download.log").read_text().count("=== img2dataset") == 1

    for split in ("train", "val"):  # exactly the pairs with a live URL, held-out split included
        manifest = layout.manifest_path(data, split)
        assert sorted(captions(build_eval_pairs_loader(manifest, 4, eval_transform(16, 20)))) == \
            sorted(expected[split])
        sizes = json.loads(manifest.read_text())
        assert sizes["complete"] and sizes["source"]["source"] == source and sizes["source"]["parse counts"]
    assert json.loads(layout.manifest_path(data, "train").read_text())["failures_by_status"] == {"HTTP Error 404": 1}

    run = resolve_run(profile, setting, "otter")  # the setting's runs train on these shards
    manifest = layout.manifest_path(run.data, "train")
    assert manifest == layout.manifest_path(data, "train")
    batches = list(build_train_loader(manifest, batch_size=2, transform=train_transform(16, 20), epoch=0, seed=0))
    assert len(batches) == len(expected["train"]) // 2
    assert all(images.shape == (2, 3, 16, 16) and set(caps) <= set(expected["train"]) for images, caps in batches)


@pytest.mark.slow
def test_an_existing_webdataset_copy_is_indexed_and_only_its_held_out_split_downloaded(image_url, tmp_path):
    from conftest import write_pair_shards

    tars = tmp_path / "my_cc3m_tars"
    write_pair_shards(tars, 30, seed=1, per_shard=12)
    (tars / "sizes.json").unlink()  # a copy made elsewhere: only tars
    root = tmp_path / "cc3m"
    root.mkdir()
    expected, _ = cc3m_files(root, image_url)
    profile = load_profile("paper", {"data.sources.cc3m": {"origin": "webdataset", "root": str(root),
                                                           "webdataset_dir": str(tars)}, "data.download": OPTIONS})
    result = prepare_source(profile, "cc3m", force=True)  # force never deletes the user's own tars
    assert result["train"].total == 30 and (tars / "sizes.json").is_file()
    assert sorted(p.name for p in tars.iterdir()) == ["00000.tar", "00001.tar", "00002.tar", "sizes.json"]
    assert sorted(captions(build_eval_pairs_loader(layout.manifest_path(profile.data.source("cc3m"), "val"), 4,
                                                   eval_transform(16, 20)))) == sorted(expected["val"])
    assert layout.training_data_ready(profile, ["cc3m-rn50-declutr-sci-base"])


# --------------------------------------------------------------------------------------------------
# Where the metadata files are (no network)


def test_metadata_files_are_the_publishers_names_under_root_or_the_named_ones(tmp_path):
    profile = load_profile("paper", {"data.sources.wit": {"root": str(tmp_path), "train_files": ["a.tsv.gz"],
                                                          "val_files": [str(tmp_path / "v" / "b.tsv.gz")]},
                                     "data.sources.yfcc15m.root": str(tmp_path)})
    (tmp_path / "a.tsv.gz").write_bytes(b"x")
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "b.tsv.gz").write_bytes(b"x")
    assert metadata_files("wit", profile.data.source("wit")) == {"train": [tmp_path / "a.tsv.gz"],
                                                                  "val": [tmp_path / "v" / "b.tsv.gz"]}
    (tmp_path / "a.tsv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"data.sources.wit.train_files names .*a.tsv.gz, which does not exist"):
        metadata_files("wit", profile.data.source("wit"))
    (tmp_path / yfcc15m.SUBSET_FILE).write_bytes(b"x")  # present: not fetched
    with pytest.raises(FileNotFoundError, match=r"yfcc100m_dataset is missing: .* has no public download; get it "
                                                r"as https://multimediacommons.*data.sources.yfcc15m.metadata"):
        metadata_files("yfcc15m", profile.data.source("yfcc15m"))
