"""Training sources: each official metadata format (files written here, never copied) -> the pair tables."""
import gzip
import hashlib

import pytest

from official_formats import wit_row, write_wit, write_yfcc, yfcc_row
from otterlib.data.sources import SOURCES, cc3m, training_source, wit, yfcc15m


def test_the_three_sources_are_declared_and_an_unknown_one_is_named():
    assert list(SOURCES) == ["cc3m", "yfcc15m", "wit"]
    assert training_source("yfcc15m").train_rows == yfcc15m.SUBSET_ROWS == 14_829_396
    assert training_source("wit").train_rows is None  # WIT's docs give no English count
    with pytest.raises(ValueError, match="unknown training source 'laion'.*cc3m"):
        training_source("laion")


# --------------------------------------------------------------------------------------------------
# CC3M: Google's headerless caption<TAB>url files


def test_cc3m_reads_the_training_and_validation_files(tmp_path):
    (tmp_path / "train.tsv").write_text("a dog on a beach\thttp://x/1.jpg\nsome \"quoted\" text\thttp://x/2.jpg\n"
                                        "third\thttp://x/3.jpg\n")
    (tmp_path / "val.tsv").write_text("held out\thttp://x/v.jpg\n")
    tables = cc3m.pair_tables(tmp_path / "train.tsv", tmp_path / "val.tsv", max_train_rows=2)
    assert tables.train.to_dict("records") == [{"caption": "a dog on a beach", "url": "http://x/1.jpg"},
                                               {"caption": 'some "quoted" text', "url": "http://x/2.jpg"}]
    assert tables.val["url"].tolist() == ["http://x/v.jpg"]
    assert tables.counts == {"train rows": 2, "val rows": 1}


# --------------------------------------------------------------------------------------------------
# YFCC15M: OpenAI's subset list joined with the 25-column YFCC100M metadata


def test_yfcc15m_keeps_listed_photos_with_the_paper_caption_rule(tmp_path):
    rows = [
        yfcc_row(0, 1001, "Sunset+over+%3Cb%3Ethe%3C%2Fb%3E+bay",
                  "A+%22nice%22+day%2C+C%2B%2B+%26amp%3B+more%0Aon+two+lines"),
        yfcc_row(1, 1002, "not+listed", "never+kept"),
        yfcc_row(2, 1003, "", "only+a+description"),
        yfcc_row(3, 1004, "IMG_0520", ""),
        yfcc_row(4, 1005, "a+video", "moving", marker="1"),
        yfcc_row(5, 1006, "", "<a href=%22http://x%22></a>"),  # nothing left after the HTML is stripped
        yfcc_row(6, 1007, "no+url", "", url=""),
    ]
    subset, meta = write_yfcc(tmp_path, rows, [(0, 1001), (2, 1003), (3, 1004), (4, 1005), (5, 1006), (6, 1007),
                                                (99, 9999)])
    tables = yfcc15m.pair_tables(subset, meta, val_per_mille=999)  # nearly everything held out: both splits used
    pairs = {r["url"].split("/")[-1].split("_")[0]: r["caption"]
             for t in (tables.train, tables.val) for r in t.to_dict("records")}
    assert pairs == {"1001": 'Sunset over the bay. A "nice" day, C++ & more on two lines',
                     "1003": "only a description", "1004": "IMG_0520"}
    for table in (tables.train, tables.val):
        assert list(table.columns) == ["caption", "url"]
        for url in table["url"]:
            held = yfcc15m.held_out(int(url.split("/")[-1].split("_")[0]), 999)
            assert held == (table is tables.val)
    assert tables.counts == {"listed in the subset": 7, "dropped: absent from the metadata": 1, "dropped: video": 1,
                             "dropped: empty caption": 1, "dropped: no download URL": 1,
                             "train pairs": len(tables.train), "val pairs": len(tables.val)}
    assert len(tables.train) + len(tables.val) == 3


def test_yfcc15m_held_out_split_is_a_stable_one_in_a_thousand_rule():
    ids = range(1, 200_001)
    held = [i for i in ids if yfcc15m.held_out(i)]
    assert 150 < len(held) < 250  # ~0.1 % of 200k
    assert held[:3] == [i for i in ids if int.from_bytes(hashlib.sha1(str(i).encode()).digest()[:8], "big")
                        % 1000 < 1][:3]
    assert sum(yfcc15m.held_out(i, 10) for i in ids) > 10 * len(held) * 0.8  # per mille scales it


def test_yfcc15m_misaligned_or_foreign_metadata_is_a_clear_error(tmp_path):
    subset, meta = write_yfcc(tmp_path, [yfcc_row(7, 1001, "t")], [(0, 1001)])
    with pytest.raises(ValueError, match=r"photo 1001 is line 7 here but line 0 in the subset list"):
        yfcc15m.pair_tables(subset, meta)
    short = "\t".join(yfcc_row(0, 1001, "t").rstrip("\n").split("\t")[:23]) + "\n"
    subset, meta = write_yfcc(tmp_path, [short], [(0, 1001)])
    with pytest.raises(ValueError, match=r"yfcc100m_dataset.bz2:1: 23 fields, the YFCC100M metadata has 25"):
        yfcc15m.pair_tables(subset, meta)
    subset, meta = write_yfcc(tmp_path, ["1001,a csv line\n"], [(0, 1001)])
    with pytest.raises(ValueError, match=r":1: expected 'line number<TAB>photo id"):
        yfcc15m.pair_tables(subset, meta)
    (tmp_path / "bad_subset.tsv").write_text("0\t1001\th\n1\t1001\th\n")
    with pytest.raises(ValueError, match="1 photo id.* twice, e.g. 1001"):
        yfcc15m.read_subset(tmp_path / "bad_subset.tsv")
    with pytest.raises(ValueError, match="val_per_mille"):
        yfcc15m.pair_tables(subset, meta, val_per_mille=0)


# --------------------------------------------------------------------------------------------------
# WIT: gzipped 17-column TSVs with a header row, English rows


def test_wit_keeps_english_images_with_the_reference_else_the_attribution_caption(tmp_path):
    train = [
        wit_row("en", "a.jpg", reference="A red  tram\tin Lisbon"),
        wit_row("en", "b.png", mime="image/png", attribution="English: The Half Dome at dusk"),
        wit_row("de", "c.jpg", reference="Ein Hund"),
        wit_row("en", "d.svg", mime="image/svg+xml", reference="A map"),
        wit_row("en", "e.jpg"),
        wit_row("en", "a.jpg", reference="A red  tram\tin Lisbon"),  # the same pair again
        wit_row("en", "f.jpg", reference='He said "hi"\nthere', attribution="English: not used"),
    ]
    val = [wit_row("en", "v.jpg", reference="Validation image"), wit_row("fr", "w.jpg", reference="Une image")]
    tables = wit.pair_tables([write_wit(tmp_path / "wit_v1.train.all-00000-of-00010.tsv.gz", train[:4]),
                              write_wit(tmp_path / "wit_v1.train.all-00001-of-00010.tsv.gz", train[4:])],
                             [write_wit(tmp_path / "wit_v1.val.all-00000-of-00005.tsv.gz", val)])
    base = "https://upload.wikimedia.org/wikipedia/commons/"
    assert tables.train.to_dict("records") == [
        {"caption": "A red tram in Lisbon", "url": base + "a.jpg"},
        {"caption": "The Half Dome at dusk", "url": base + "b.png"},
        {"caption": 'He said "hi" there', "url": base + "f.jpg"}]
    assert tables.val.to_dict("records") == [{"caption": "Validation image", "url": base + "v.jpg"}]
    c = tables.counts
    assert (c["train: rows read"], c["train: dropped: not English"], c["train: dropped: not a decodable image type"],
            c["train: dropped: no reference or attribution description"], c["train: dropped: repeated pair"],
            c["train: captions from reference"], c["train: captions from attribution"], c["train: pairs"]) == \
        (7, 1, 1, 1, 1, 3, 1, 3)
    assert (c["val: rows read"], c["val: dropped: not English"], c["val: pairs"]) == (2, 1, 1)


def test_wit_file_without_the_official_header_is_a_clear_error(tmp_path):
    path = tmp_path / "other.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("language\timage_url\ten\thttp://x\n")
    with pytest.raises(ValueError, match=r"not a WIT TSV.*lacks \['mime_type', 'caption_reference_description'"):
        wit.pair_tables([path], [path])
    with pytest.raises(ValueError, match="no WIT val files"):
        wit.pair_tables([write_wit(tmp_path / "t.tsv.gz", [wit_row("en", "a.jpg", reference="x")])], [])
