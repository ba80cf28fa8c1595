"""Compute and disk plans, and the throughput records they read."""
import json

import pytest

from otterlib import benchmarks, plans
from otterlib.benchmarks import BenchmarkRecord
from otterlib.config import load_profile


def _record(method="otter", device="NVIDIA H200", samples_per_s=500.0, gpus=1, **kw):
    fields = dict(image_encoder="timm:resnet50", text_encoder="declutr-sci-base", method=method, batch_per_gpu=64,
                  image_size=224, precision="bf16", device=device, gpus=gpus, samples_per_s=samples_per_s,
                  measured="2025-01-01", command="python -m otterlib.bench ...", git="abc")
    return BenchmarkRecord(**(fields | kw))


def test_gpu_hours_come_from_the_matching_per_gpu_rate_and_are_unmeasured_otherwise():
    profile = load_profile("paper")
    records = [_record(), _record(device="NVIDIA A100", samples_per_s=1000.0, gpus=4),
               _record(method="kd", batch_per_gpu=32)]  # another batch per GPU: not this plan's
    plan = plans.compute_plan(profile, ["cc3m-rn50-declutr-sci-base", "cc3m-rn50-sbert-base"], records)
    first = plan.iloc[0]
    assert (first["samples/epoch"], first["steps"], first["GPUs"]) == ("3,318,333", "6,481 x 10", "1x8")
    seen = 6481 * 10 * 512
    assert first["GPU-h otter"] == f"{seen / 500 / 3600:.1f} (NVIDIA H200) / {seen / 250 / 3600:.1f} (NVIDIA A100)"
    assert first["GPU-h kd"] == first["GPU-h infonce"] == "unmeasured"
    assert plan.iloc[1]["GPU-h otter"] == "unmeasured"  # other text encoder


def test_short_runs_show_their_gpu_hours_instead_of_zero():
    assert plans.format_hours(0.046) == "0.046" and plans.format_hours(0.5) == "0.5"
    assert plans.format_hours(12.34) == "12.3" and plans.format_hours(1.0) == "1.0"


def test_samples_are_measured_from_downloaded_shards_else_bounded(tiny_data_root):
    smoke = load_profile("smoke", {"data.sources.cc3m.root": str(tiny_data_root)})
    row = plans.compute_plan(smoke, ["tiny-scratch"], []).iloc[0]
    assert (row["samples/epoch"], row["basis"], row["steps"]) == ("96", "measured (sizes.json)", "3 x 4")
    mini = plans.compute_plan(load_profile("mini"), None, [])
    assert set(mini["samples/epoch"]) == {"300,000"} and set(mini["steps"]) == {"585 x 2"}
    wit = plans.compute_plan(load_profile("paper"), ["wit-rn50-declutr-sci-base"], []).iloc[0]
    assert (wit["samples/epoch"], wit["steps"], wit["GPU-h otter"]) == ("?", "?", "?")


def test_parsed_row_counts_replace_the_unknown_ones_once_a_download_started(tmp_path):
    """WIT publishes no English count: once 01 has parsed its TSVs, the rows it asked img2dataset for plan it."""
    import json

    paper = load_profile("paper", {"data.sources.wit.root": str(tmp_path)})
    for split, n in (("train", 5_432_100), ("val", 12_345)):
        (tmp_path / "shards" / split / "_source").mkdir(parents=True)
        (tmp_path / "shards" / split / "_source" / "request.json").write_text(json.dumps({"n_rows": n}))
    row = plans.compute_plan(paper, ["wit-rn50-declutr-sci-base"], []).iloc[0]
    assert (row["samples/epoch"], row["basis"], row["steps"]) == \
        ("5,432,100", "<= parsed rows (_source/request.json)", f"{5_432_100 // 512:,} x 10")
    disk = plans.disk_plan(paper, ["wit-rn50-declutr-sci-base"]).iloc[0]
    assert disk["rows"] == f"{5_432_100 + 12_345:,}" and disk["GB"] != "?"


def test_disk_plan_counts_each_used_source_once_and_scales_with_the_image_area():
    plan = plans.disk_plan(load_profile("paper")).set_index("source")
    assert plan.loc["cc3m", "settings"] == 5 and plan.loc["cc3m", "rows"] == "3,334,173"
    assert plan.loc["cc3m", "GB"] == f"{3_334_173 * plans.BYTES_PER_ROW_256 / 1e9:,.1f}"
    assert plan.loc["wit", "GB"] == "?"
    big = plans.disk_plan(load_profile("paper", {"data.download.image_size": 512}), ["yfcc15m-rn50-declutr-sci-base"])
    assert list(big["source"]) == ["yfcc15m"]
    assert big.iloc[0]["GB"] == f"{14_829_396 * plans.BYTES_PER_ROW_256 * 4 / 1e9:,.1f}"
    with pytest.raises(ValueError, match="no setting 'x'"):
        plans.disk_plan(load_profile("paper"), ["x"])


def test_the_benchmark_file_is_checked_record_by_record(tmp_path):
    path = tmp_path / "b.json"
    benchmarks.append_records(path, [_record()])
    benchmarks.append_records(path, [_record(method="kd")])
    assert [r.method for r in benchmarks.load_benchmarks(path)] == ["otter", "kd"]
    doc = json.loads(path.read_text())
    del doc["records"][1]["gpus"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="record 1 must have exactly the fields"):
        benchmarks.load_benchmarks(path)
    doc["records"][1]["gpus"] = 1
    doc["records"][1]["precision"] = "fp16"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="record 1: precision must be bf16 or fp32"):
        benchmarks.load_benchmarks(path)
    assert isinstance(benchmarks.load_benchmarks(benchmarks.BENCHMARKS_PATH), list)  # the shipped file parses


def test_the_benchmark_tool_records_what_plans_match(tmp_path):
    from otterlib import bench

    path = tmp_path / "b.json"
    bench.main(["--image-encoder", "tiny_cnn", "--text-encoder", "tiny_bert", "--batch", "4", "--image-size", "32",
                "--rounds", "1", "--block", "1", "--warmup", "0", "--device", "cpu", "--methods", "infonce", "--record", str(path)])
    (rec,) = benchmarks.load_benchmarks(path)
    assert (rec.method, rec.batch_per_gpu, rec.image_size, rec.precision, rec.device, rec.gpus) == \
        ("infonce", 4, 32, "fp32", "cpu", 1)
    assert rec.command.startswith("python -m otterlib.bench --image-encoder tiny_cnn")
    smoke = load_profile("smoke", {"settings.1.train": {"batch_size": 4, "image_size": 32}})
    row = plans.compute_plan(smoke, ["tiny-scratch"], [rec]).iloc[0]
    assert row["GPU-h infonce"].endswith("(cpu)") and row["GPU-h otter"] == "unmeasured"
