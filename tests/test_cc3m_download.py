"""CC3M download stage: TSV parsing, loopback server, img2dataset end to end (offline), manifest, resume."""
import hashlib
import importlib.util
import io
import json
import socket
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from PIL import Image

from otterlib.data.download import DownloadOptions, download_pairs, read_download_stats
from otterlib.data.failures import classify_failure, failure_histogram
from otterlib.data.img2dataset_child import ProgressLine
from otterlib.data.manifest import index_existing_shards, load_manifest
from otterlib.data.preflight import LARGE_RUN_ROWS, PreflightError, preflight
from otterlib.data.sources.cc3m import download_cc3m, fetch_cc3m_tsv, read_cc3m_tsv
from otterlib.data.loopback import LoopbackImageServer, QuietHandler, serve_directory


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------------------------------
# Fast checks


def test_tsv_parsing_rules(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_bytes("caption\turl\n"  # a header line is skipped
                    'he said "hi", it\'s fine\thttp://a/1.jpg\r\n'  # CRLF
                    "\n"  # blank line skipped
                    '"fully quoted"\thttp://a/2.jpg\n'
                    "caf\u00e9 \u65e5\u672c \U0001f431\thttp://a/3.jpg \n"
                    "left\tright\thttp://a/4.jpg\n".encode())
    df = read_cc3m_tsv(tsv)
    assert df["caption"].tolist() == ['he said "hi", it\'s fine', '"fully quoted"', "caf\u00e9 \u65e5\u672c \U0001f431",
                                      "left\tright"]
    assert df["url"].tolist() == [f"http://a/{i}.jpg" for i in range(1, 5)]
    assert read_cc3m_tsv(tsv, max_rows=2)["url"].tolist() == ["http://a/1.jpg", "http://a/2.jpg"]
    (tmp_path / "bad.tsv").write_text("ok\thttp://a/1.jpg\nno tab here\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 'caption<TAB>url'"):
        read_cc3m_tsv(tmp_path / "bad.tsv")
    (tmp_path / "latin1.tsv").write_bytes("caf\xe9\thttp://a/1.jpg\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_cc3m_tsv(tmp_path / "latin1.tsv")


@pytest.mark.parametrize("message, expected", [
    ("HTTP Error 404: Not Found", "HTTP Error 404"),
    ("HTTP Error 403: Forbidden", "HTTP Error 403"),
    ("<urlopen error timed out>", "timeout"),
    ("The read operation timed out", "timeout"),
    ("Image decoding error", "Image decoding error"),
    ("<urlopen error [Errno -2] Name or service not known>", "DNS error"),
    ("<urlopen error [Errno 111] Connection refused>", "connection refused"),
    ("Remote end closed connection without response", "connection reset"),
    ("<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed>", "SSL error"),
    ("Use of image disallowed by X-Robots-Tag directive", "opted out (X-Robots-Tag)"),
    ("unknown url type: 'ftp'", "invalid URL"),
    ("image too small", "image too small"),
    ("something nobody expected", "other"),
])
def test_failure_classes(message, expected):
    assert classify_failure(message) == expected


def test_download_options():
    opts = DownloadOptions.from_kwargs(image_size=128, oom_shard_count=6)
    assert opts.image_size == 128 and opts.extra == {"oom_shard_count": 6}
    kwargs = opts.img2dataset_kwargs(Path("u.parquet"), Path("out"))
    assert kwargs["resize_mode"] == "keep_ratio" and kwargs["output_format"] == "webdataset"
    assert kwargs["enable_wandb"] is False and kwargs["incremental_mode"] == "incremental"
    assert kwargs["retries"] >= 1 and kwargs["oom_shard_count"] == 6 and "max_aspect_ratio" not in kwargs
    assert DownloadOptions(max_aspect_ratio=3.0).img2dataset_kwargs(Path("u"), Path("o"))["max_aspect_ratio"] == 3.0
    with pytest.raises(ValueError, match="unknown download option"):
        DownloadOptions.from_kwargs(image_szie=128)
    with pytest.raises(ValueError, match="output_format"):
        DownloadOptions.from_kwargs(output_format="files")
    with pytest.raises(ValueError, match="image_size"):
        DownloadOptions.from_kwargs(extra={"image_size": 64})
    with pytest.raises(ValueError, match="resize_mode"):
        DownloadOptions(resize_mode="stretch")
    with pytest.raises(ValueError, match="incremental_mode"):
        DownloadOptions(incremental_mode="extend")


def test_the_distributor_is_img2dataset_own_option():
    assert DownloadOptions().img2dataset_kwargs(Path("u"), Path("o"))["distributor"] == "multiprocessing"
    spark = DownloadOptions(distributor="pyspark", spark_config={"spark.master": "spark://head:7077"})
    assert spark.img2dataset_kwargs(Path("u"), Path("o"))["distributor"] == "pyspark"
    assert "spark_config" not in spark.img2dataset_kwargs(Path("u"), Path("o"))  # the child's session, not an argument
    assert "distributor" not in DownloadOptions().layout()  # a resumed download may change it
    with pytest.raises(ValueError, match="distributor must be one of"):
        DownloadOptions(distributor="ray")
    with pytest.raises(ValueError, match="spark_config configures"):
        DownloadOptions(spark_config={"spark.master": "local[2]"})


@pytest.mark.skipif(importlib.util.find_spec("pyspark") is not None, reason="pyspark is installed here")
def test_pyspark_without_pyspark_is_a_clear_error_before_anything_is_written(tmp_path):
    pairs = pd.DataFrame({"caption": ["a cat"], "url": ["http://127.0.0.1:9/x.jpg"]})
    with pytest.raises(ModuleNotFoundError, match="pip install pyspark"):
        download_pairs(pairs, tmp_path / "out", distributor="pyspark")
    assert not (tmp_path / "out").exists()


def test_the_progress_line_reads_img2dataset_total_lines(capsys):
    line = ProgressLine("wit/train", 80_000)
    line.update("worker  - success: 0.500 - failed to download: 0.500 - failed to resize: 0.000 - images per sec: 9 "
                "- count: 10")  # one worker's line: not the total
    assert line.text == "wit/train: starting img2dataset for 80,000 rows"
    line.update("total   - success: 0.880 - failed to download: 0.100 - failed to resize: 0.020 - images per sec: "
                "812 - count: 40000")
    assert line.text == "wit/train: 40,000 of 80,000 rows processed (50%), 88.0% stored, 812 images/s"
    assert capsys.readouterr().out == ""  # outside a notebook nothing is shown until the end
    line.finish("wit/train: done")
    assert capsys.readouterr().out == "wit/train: done\n"


def test_preflight_disk_and_dns(tmp_path, capsys):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# upstream only\nnameserver 8.8.8.8\n")
    with pytest.raises(PreflightError, match="not enough disk"):
        preflight(tmp_path / "out", 1000, expected_bytes_per_image=1e15, resolv_conf=resolv)
    forced = preflight(tmp_path / "out", 1000, expected_bytes_per_image=1e15, resolv_conf=resolv, force=True)
    assert len(forced) == 1 and "not enough disk" in forced[0]
    assert preflight(tmp_path, 10, resolv_conf=resolv) == []  # small run: no DNS advice
    big = preflight(tmp_path, LARGE_RUN_ROWS, expected_bytes_per_image=1, resolv_conf=resolv)
    assert len(big) == 1 and "8.8.8.8" in big[0] and "knot-resolver" in big[0]
    assert "[preflight]" in capsys.readouterr().out
    resolv.write_text("nameserver 127.0.0.1\nnameserver 8.8.8.8\n")
    assert preflight(tmp_path, LARGE_RUN_ROWS, expected_bytes_per_image=1, resolv_conf=resolv) == []
    missing = preflight(tmp_path, LARGE_RUN_ROWS, expected_bytes_per_image=1, resolv_conf=tmp_path / "nope")
    assert len(missing) == 1 and "no nameserver" in missing[0]


def test_loopback_server(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello")
    server = LoopbackImageServer(tmp_path)
    with pytest.raises(RuntimeError, match="start"):
        server.url
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already serving"):
            server.start()
        with urllib.request.urlopen(server.url + "/a.txt", timeout=5) as r:
            assert r.read() == b"hello"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(server.url + "/missing.jpg", timeout=5)
    finally:
        url = server.url
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/a.txt", timeout=5)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        LoopbackImageServer(tmp_path / "a.txt")


def test_fetch_tsv(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "GCC-training.tsv").write_text("a cat\thttp://x/1.jpg\n")
    dest = tmp_path / "data" / "Train_GCC-training.tsv"
    with serve_directory(www) as url:
        assert fetch_cc3m_tsv(dest, url=url + "/GCC-training.tsv") == dest
    assert dest.read_text() == "a cat\thttp://x/1.jpg\n"
    assert fetch_cc3m_tsv(dest, url=closed_port_url() + "/x.tsv") == dest  # present: no network needed
    other = tmp_path / "other.tsv"
    with pytest.raises(ConnectionError, match="copy it to .*other.tsv"):
        fetch_cc3m_tsv(other, url=closed_port_url() + "/x.tsv")
    assert not other.exists() and not (tmp_path / "other.tsv.part").exists()


def test_index_existing_shards_and_manifest(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    with wds.TarWriter(str(tmp_path / "a.tar")) as sink:
        for i in range(3):
            sink.write({"__key__": f"k{i}", "jpg": buf.getvalue(), "txt": f"c{i}"})
        sink.write({"__key__": "no_txt", "jpg": buf.getvalue()})
        sink.write({"__key__": "no_img", "txt": "x", "json": "{}"})
    with wds.TarWriter(str(tmp_path / "b.tar")) as sink:
        sink.write({"__key__": "k9", "png": buf.getvalue(), "txt": "c9"})
    summary = index_existing_shards(tmp_path)
    assert summary.shard_sizes == [3, 1] and summary.total == 4 and summary.successes == 4
    assert summary.failures_by_status == {"no image": 1, "no caption (.txt)": 1} and summary.n_rows == 6
    m = load_manifest(tmp_path)
    assert m.total == 4 and [p.name for p in m.shard_paths] == ["a.tar", "b.tar"]
    assert json.loads((tmp_path / "sizes.json").read_text())["shards"][0] == {"path": "a.tar", "samples": 3}
    (tmp_path / "b.tar").unlink()
    with pytest.raises(FileNotFoundError, match="missing tar"):
        load_manifest(tmp_path / "sizes.json")
    (tmp_path / "c.tar").write_bytes(b"\x00" * 100 + b"not a tar" * 100)
    with pytest.raises(ValueError, match="c.tar is not a readable tar"):
        index_existing_shards(tmp_path)
    with pytest.raises(FileNotFoundError, match="no \\*.tar"):
        index_existing_shards(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="index_existing_shards"):
        read_download_stats(tmp_path)


def test_img2dataset_failure_is_reported_with_its_output(tmp_path, capsys):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a cat\thttp://127.0.0.1:9/x.jpg\n")
    # img2dataset rejects this combination at start-up, in the child process
    with pytest.raises(RuntimeError, match="(?s)exited with status.*verify_hash and compute_hash must be the same"):
        download_cc3m(tsv, tmp_path / "out", processes_count=1, verify_hash=["sha", "md5"])
    assert "verify_hash" not in capsys.readouterr().out  # img2dataset's output goes to the log only
    assert "verify_hash and compute_hash" in (tmp_path / "out" / "_source" / "download.log").read_text()
    assert not (tmp_path / "out" / "sizes.json").exists()


# --------------------------------------------------------------------------------------------------
# img2dataset against the loopback server (each run ~10 s: worker start-up)

GOOD = {  # file name -> (width, height) served
    "red.jpg": (320, 240), "green.jpg": (300, 400), "small.jpg": (100, 80), "huge.jpg": (3000, 2000),
    "blue.png": (256, 300), "wide.jpg": (640, 256),
}
ROWS = [  # (caption, file) in TSV order; 3 shards of 4 rows
    ('a "quoted" red box, isn\'t it?', "red.jpg"),
    ("caf\u00e9 cr\u00e8me \u2013 \u65e5\u672c\u8a9e \U0001f431", "green.jpg"),
    ("dead link", "gone-1.jpg"),
    ("tiny thing", "small.jpg"),
    ("left\tand right of a tab", "huge.jpg"),
    ("a text file pretending", "fake.jpg"),
    ('"entirely quoted"', "blue.png"),
    ("another dead link", "gone-2.jpg"),
    ("wide \\ backslash, commas", "wide.jpg"),
    ("red again", "red.jpg"),
]
OPTS = dict(processes_count=1, thread_count=4, number_sample_per_shard=4, timeout=5, retries=1)


def expected_samples() -> dict[str, tuple[str, str]]:
    """key -> (caption, file) of the rows that must succeed (key = 5-digit shard + 1-digit row)."""
    return {f"{i // 4:05d}{i % 4}": (cap, f) for i, (cap, f) in enumerate(ROWS) if f in GOOD}


def read_tars(folder: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for tar in sorted(folder.glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            assert s["__key__"] not in out, f"duplicate key {s['__key__']}"
            out[s["__key__"]] = s
    return out


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc3m")
    www = root / "www"
    www.mkdir()
    rng = np.random.default_rng(0)
    for name, (w, h) in GOOD.items():
        if name == "huge.jpg":  # smooth, so the 6-megapixel JPEG stays small and fast to write
            Image.linear_gradient("L").resize((w, h)).convert("RGB").save(www / name)
        else:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(www / name)
    (www / "fake.jpg").write_text("this is text, not an image\n")
    server = LoopbackImageServer(www).start()
    tsv = root / "Train_GCC-training.tsv"
    tsv.write_text("".join(f"{cap}\t{server.url}/{f}\n" for cap, f in ROWS), encoding="utf-8")
    out = root / "shards"
    summary = download_cc3m(tsv, out, **OPTS)
    yield {"tsv": tsv, "out": out, "summary": summary}
    server.stop()


@pytest.mark.slow
def test_download_stores_exactly_the_good_rows(downloaded):
    out, summary = downloaded["out"], downloaded["summary"]
    expected = expected_samples()
    samples = read_tars(out)
    assert set(samples) == set(expected)
    for key, (caption, name) in expected.items():
        s = samples[key]
        assert s["txt"].decode("utf-8") == caption
        meta = json.loads(s["json"])
        assert meta["url"].endswith("/" + name) and meta["caption"] == caption
        w, h = GOOD[name]
        assert (meta["original_width"], meta["original_height"]) == (w, h)
        img = Image.open(io.BytesIO(s["jpg"]))
        scale = 256 / min(w, h)  # keep_ratio: shorter side -> 256, aspect kept (small ones upscaled)
        assert min(img.size) == 256
        assert img.size == (meta["width"], meta["height"])
        assert abs(img.size[0] - w * scale) <= 1 and abs(img.size[1] - h * scale) <= 1
    assert Image.open(io.BytesIO(samples["000010"]["jpg"])).size == (384, 256)  # the 3000x2000 image

    assert summary.n_rows == summary.n_input_rows == len(ROWS) and summary.complete
    assert summary.successes == len(expected) == 7
    assert summary.failures_by_status == {"HTTP Error 404": 2, "Image decoding error": 1}
    assert summary.success_rate == pytest.approx(7 / 10)
    assert [p.name for p in summary.shard_paths] == ["00000.tar", "00001.tar", "00002.tar"]
    assert summary.shard_sizes == [3, 2, 2]
    table = failure_histogram(read_download_stats(out))
    assert table["status"].tolist() == ["HTTP Error 404", "Image decoding error"]
    assert table["count"].tolist() == [2, 1] and table["fraction"].tolist() == pytest.approx([0.2, 0.1])


@pytest.mark.slow
def test_manifest_records_counts_source_and_options(downloaded):
    out, tsv = downloaded["out"], downloaded["tsv"]
    data = json.loads((out / "sizes.json").read_text())
    assert data["total"] == 7 and [s["samples"] for s in data["shards"]] == [3, 2, 2]
    assert data["source"]["sha256"] == hashlib.sha256(tsv.read_bytes()).hexdigest()
    assert data["source"]["n_rows"] == 10 and data["img2dataset_version"] == "1.47.0"
    assert data["options"]["image_size"] == 256 and data["options"]["resize_mode"] == "keep_ratio"
    assert data["failures_by_status"] == {"HTTP Error 404": 2, "Image decoding error": 1}
    manifest = load_manifest(out)
    for path, n in zip(manifest.shard_paths, manifest.shard_sizes):
        with tarfile.open(path) as tar:
            assert sum(m.name.endswith(".jpg") for m in tar.getmembers()) == n
    assert "total   - success" in (out / "_source" / "download.log").read_text()


@pytest.mark.slow
def test_rerun_resumes_a_deleted_shard_without_duplicates(downloaded):
    out, tsv = downloaded["out"], downloaded["tsv"]
    before = read_tars(out)
    kept = {p: p.stat().st_mtime_ns for p in out.glob("0000[02]*")}
    for p in out.glob("00001*"):
        p.unlink()
    summary = download_cc3m(tsv, out, **OPTS)
    assert {p: p.stat().st_mtime_ns for p in out.glob("0000[02]*")} == kept, "finished shards must not be redone"
    after = read_tars(out)  # raises on a duplicate key
    assert set(after) == set(before)
    assert all(after[k]["txt"] == before[k]["txt"] for k in after)
    assert summary.successes == 7 and summary.n_rows == 10 and summary.shard_sizes == [3, 2, 2]
    assert load_manifest(out).total == 7


@pytest.mark.slow
def test_rerun_with_other_options_or_tsv_is_refused(downloaded, tmp_path):
    with pytest.raises(ValueError, match="differs in \\['layout'\\]"):
        download_cc3m(downloaded["tsv"], downloaded["out"], **{**OPTS, "image_size": 128})
    other = tmp_path / "other.tsv"
    other.write_text(downloaded["tsv"].read_text() + "one more\thttp://127.0.0.1:9/x.jpg\n")
    with pytest.raises(ValueError, match="sha256"):
        download_cc3m(other, downloaded["out"], **OPTS)
    with pytest.raises(FileNotFoundError, match="fetch_cc3m_tsv"):
        download_cc3m(tmp_path / "missing.tsv", tmp_path / "o", **OPTS)


# --------------------------------------------------------------------------------------------------
# Incomplete downloads (issue 9.10): img2dataset exits 0 after giving up on a shard


@pytest.mark.slow
def test_a_failed_shard_marks_the_download_incomplete_until_a_rerun_resumes_it(tmp_path, capsys):
    from otterlib.data.loader import IncompleteDownloadError, require_complete

    www = tmp_path / "www"
    www.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(www / f"{i}.jpg")
    out = tmp_path / "shards"
    (out / "00001.tar").mkdir(parents=True)  # img2dataset cannot open shard 1's tar: the shard fails, twice
    with serve_directory(www) as url:
        tsv = tmp_path / "t.tsv"
        tsv.write_text("".join(f"photo {i}\t{url}/{i}.jpg\n" for i in range(8)))
        summary = download_cc3m(tsv, out, **{**OPTS, "image_size": 32})  # 2 shards of 4 rows
        assert "still failed" in (out / "_source" / "download.log").read_text()  # img2dataset only printed it ...
        shown = capsys.readouterr().out.splitlines()  # ... into its log; we show one line
        assert len(shown) == 1 and "INCOMPLETE, 4 of 8 rows processed" in shown[0] and "rerun" in shown[0]
        assert not summary.complete and summary.n_rows == 4 and summary.missing_shards == ["00001"]
        manifest = load_manifest(out)  # ... we record it
        assert not manifest.complete and manifest.n_missing_rows == 4 and manifest.missing_shards == ["00001"]
        message = manifest.incompleteness()
        assert "4 of 8 rows (1 shard: 00001)" in message and "rerun" in message and "data.allow_partial" in message
        with pytest.raises(IncompleteDownloadError, match="4 of 8 rows"):
            require_complete(out, allow_partial=False)
        with pytest.warns(UserWarning, match="4 of 8 rows"):
            assert require_complete(out, allow_partial=True).total == 4

        (out / "00001.tar").rmdir()
        resumed = download_cc3m(tsv, out, **{**OPTS, "image_size": 32})
    assert resumed.complete and resumed.missing_shards == [] and resumed.successes == 8
    assert load_manifest(out).complete and load_manifest(out).incompleteness() is None
    assert require_complete(out, allow_partial=False).total == 8


# --------------------------------------------------------------------------------------------------
# Reproducibility (issue 9.13): the order img2dataset's threads finish in does not reach the batches


@pytest.mark.slow
def test_downloads_finishing_in_other_orders_give_the_same_training_batches(tmp_path):
    import time

    from otterlib.data.loader import build_train_loader
    from otterlib.data.transforms import train_transform

    www = tmp_path / "www"
    www.mkdir()
    rng = np.random.default_rng(4)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)).save(www / f"{i}.jpg")

    class LateFirstRows(QuietHandler):
        """Answers row i of a shard of 8 after (7 - i % 8) x 60 ms: the threads finish in reverse row order."""

        def do_GET(self):
            time.sleep((7 - int(Path(self.path).stem) % 8) * 0.06)
            super().do_GET()

    class LateServer(LoopbackImageServer):
        handler_class = LateFirstRows

    manifests, orders = [], []
    for name, server_class in (("a", LoopbackImageServer), ("b", LateServer)):
        with server_class(www) as server:  # another port each time, so other URLs
            tsv = tmp_path / f"{name}.tsv"
            tsv.write_text("".join(f"photo {i}\t{server.url}/{i}.jpg\n" for i in range(16)))
            out = tmp_path / name
            download_cc3m(tsv, out, **{**OPTS, "number_sample_per_shard": 8, "thread_count": 8, "image_size": 32})
        with tarfile.open(out / "00000.tar") as tar:
            orders.append([n for n in tar.getnames() if n.endswith(".jpg")])
        manifests.append(load_manifest(out))
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    batches = [[(images, captions) for images, captions in build_train_loader(
        m.path, batch_size=4, transform=train_transform(16, 20), epoch=0, seed=0, shuffle_buffer=8)]
        for m in manifests]
    assert [c for _, c in batches[0]] == [c for _, c in batches[1]]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(*batches))
