"""Training / eval webdataset loaders: determinism, DDP split, exact length, resume, corrupt data."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from otterlib.data.manifest import index_existing_shards, load_manifest
from otterlib.data.loader import build_eval_pairs_loader, build_train_loader, plan_epoch, steps_per_epoch_from_manifest
from otterlib.data.transforms import eval_transform, train_transform

N_SHARDS, PER_SHARD = 6, 8
TRANSFORM = train_transform(16, 20)


def jpeg(rng: np.random.Generator, size: tuple[int, int] = (24, 28)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict]) -> None:
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            sink.write(s)


def caption_of(shard: int, i: int) -> str:
    return f"shard {shard} sample {i} \u00e9\u00e8 \"q\""


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """6 shards x 8 valid samples and their sizes.json; returns the manifest path."""
    root = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(0)
    for s in range(N_SHARDS):
        write_shard(root / f"{s:05d}.tar", [{"__key__": f"{s:05d}{i:04d}", "jpg": jpeg(rng),
                                             "txt": caption_of(s, i), "json": json.dumps({"i": i})}
                                            for i in range(PER_SHARD)])
    return index_existing_shards(root).manifest_path


ALL_CAPTIONS = {caption_of(s, i) for s in range(N_SHARDS) for i in range(PER_SHARD)}


def run(manifest, **kw) -> tuple[list[list[str]], list[torch.Tensor], object]:
    kw.setdefault("transform", TRANSFORM)
    kw.setdefault("seed", 0)
    kw.setdefault("epoch", 0)
    kw.setdefault("shuffle_buffer", 10)
    loader = build_train_loader(manifest, **kw)
    caps, imgs = [], []
    for images, captions in loader:
        assert images.shape == (len(captions), 3, 16, 16)
        caps.append(captions)
        imgs.append(images)
    return caps, imgs, loader


def flat(batches: list[list[str]]) -> list[str]:
    return [c for b in batches for c in b]


def test_manifest_and_steps(clean):
    m = load_manifest(clean)
    assert m.total == 48 and m.shard_sizes == [8] * 6
    assert steps_per_epoch_from_manifest(clean, batch_size=5, world_size=2) == 4  # floor(48 / 10)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        steps_per_epoch_from_manifest(clean, batch_size=25, world_size=2)
    from_tars = build_train_loader(m.shard_paths, batch_size=4, transform=TRANSFORM, epoch=0, seed=0)
    assert len(from_tars) == 12  # a list of tars: samples counted from the tar headers


def test_same_seed_and_epoch_give_the_same_batches(clean):
    caps1, imgs1, loader = run(clean, batch_size=8)
    caps2, imgs2, _ = run(clean, batch_size=8)
    assert len(caps1) == len(loader) == 6
    assert caps1 == caps2
    assert all(torch.equal(a, b) for a, b in zip(imgs1, imgs2))
    assert set(flat(caps1)) == ALL_CAPTIONS  # one rank, 6 x 8 = all samples, each once
    assert loader.stats.samples == 48 and loader.stats.corrupt_samples == 0 and loader.stats.extra_passes == 0


def test_other_epoch_or_seed_changes_order_and_crops(clean):
    caps0, imgs0, _ = run(clean, batch_size=8)
    caps1, _, _ = run(clean, batch_size=8, epoch=1)
    caps_seed, _, _ = run(clean, batch_size=8, seed=1)
    assert set(flat(caps1)) == ALL_CAPTIONS
    assert flat(caps1) != flat(caps0) and flat(caps_seed) != flat(caps0)
    # the same sample gets another random crop in another epoch
    by_caption0 = {c: img for b, i in zip(caps0, imgs0) for c, img in zip(b, i)}
    caps1_, imgs1_, _ = run(clean, batch_size=8, epoch=1)
    diffs = [not torch.equal(by_caption0[c], img) for b, i in zip(caps1_, imgs1_) for c, img in zip(b, i)]
    assert sum(diffs) > 24


def test_caller_rng_is_untouched(clean):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    run(clean, batch_size=8)
    assert torch.equal(state, torch.get_rng_state())


def test_ddp_ranks_get_disjoint_samples_covering_the_epoch(clean):
    seen = []
    for rank in range(2):
        caps, _, loader = run(clean, batch_size=4, rank=rank, world_size=2)
        assert len(caps) == 6 and all(len(b) == 4 for b in caps)  # floor(48 / 8) = 6 full batches per rank
        assert len(set(flat(caps))) == 24  # no repeats within a rank
        seen.append(set(flat(caps)))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == ALL_CAPTIONS


def test_sample_level_split_when_fewer_shards_than_readers(clean):
    shards = load_manifest(clean).shard_paths[:2]  # 2 shards (16 samples), 3 ranks -> split by sample position
    per_rank = []
    for rank in range(3):
        loader = build_train_loader(shards, batch_size=5, transform=TRANSFORM, epoch=0, seed=0, rank=rank,
                                    world_size=3, steps_per_epoch=1, shuffle_buffer=0)
        per_rank.append([c for _, b in loader for c in b])
    assert all(len(c) == 5 for c in per_rank)
    assert len(set().union(*per_rank)) == 15, "ranks must not share samples"
    # without sample shuffling, rank r reads positions floor(16 r / 3) .. + 4 of the epoch's concatenated stream
    streams = [[caption_of(s, i) for s in order for i in range(PER_SHARD)] for order in ((0, 1), (1, 0))]
    assert any(all(per_rank[r] == st[16 * r // 3:][:5] for r in range(3)) for st in streams)


def test_ranks_get_equal_distinct_samples_when_shards_do_not_divide_among_them(clean):
    # 4 ranks over 6 shards of 8: whole-shard splitting would give 16, 16, 8, 8 samples; by position every
    # rank owns 12 = floor(48 / 16) batches x 4 samples, so no rank repeats or drops a sample
    seen = []
    for rank in range(4):
        caps, _, loader = run(clean, batch_size=4, rank=rank, world_size=4)
        assert len(caps) == 3 and all(len(b) == 4 for b in caps)
        assert loader.stats.extra_passes == 0 and len(set(flat(caps))) == 12
        seen.append(set(flat(caps)))
    assert set().union(*seen) == ALL_CAPTIONS
    for a in range(4):
        for b in range(a + 1, 4):
            assert not seen[a] & seen[b], "ranks must never share samples"
    # an explicit, larger steps_per_epoch is honoured by a second pass over the rank's samples
    caps, _, loader = run(clean, batch_size=7, steps_per_epoch=9)
    assert len(caps) == 9 and all(len(b) == 7 for b in caps) and loader.stats.extra_passes == 1


@pytest.mark.parametrize("skip", [1, 2, 5])
def test_skip_batches_yields_the_exact_tail(clean, skip):
    full_caps, full_imgs, _ = run(clean, batch_size=8)
    caps, imgs, loader = run(clean, batch_size=8, skip_batches=skip)
    assert len(loader) == 6 - skip
    assert caps == full_caps[skip:]
    assert all(torch.equal(a, b) for a, b in zip(imgs, full_imgs[skip:]))


def test_workers_keep_the_single_process_stream_and_resume_exactly(clean):
    ref_caps, ref_imgs, _ = run(clean, batch_size=4)
    one_caps, one_imgs, _ = run(clean, batch_size=4, num_workers=1)
    assert one_caps == ref_caps and all(torch.equal(a, b) for a, b in zip(one_imgs, ref_imgs))

    caps2, imgs2, loader = run(clean, batch_size=4, rank=1, world_size=2, num_workers=2)
    assert len(caps2) == 6 and loader.stats.samples == 24
    other, _, _ = run(clean, batch_size=4, rank=0, world_size=2, num_workers=2)
    assert not set(flat(caps2)) & set(flat(other))
    tail_caps, tail_imgs, _ = run(clean, batch_size=4, rank=1, world_size=2, num_workers=2, skip_batches=3)
    assert tail_caps == caps2[3:]
    assert all(torch.equal(a, b) for a, b in zip(tail_imgs, imgs2[3:]))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_workers_share_batches_in_proportion_to_their_samples(clean):
    # 4 workers over 6 equal shards read 2, 2, 1, 1 shards: batch quotas 4, 4, 2, 2 use every sample once
    caps, imgs, loader = run(clean, batch_size=4, num_workers=4)
    assert len(caps) == 12 and loader.stats.extra_passes == 0
    assert sorted(flat(caps)) == sorted(ALL_CAPTIONS)
    again, _, _ = run(clean, batch_size=4, num_workers=4)
    assert again == caps
    for skip in (7, 10):  # resume where some workers have already finished their share
        tail_caps, tail_imgs, _ = run(clean, batch_size=4, num_workers=4, skip_batches=skip)
        assert tail_caps == caps[skip:]
        assert all(torch.equal(a, b) for a, b in zip(tail_imgs, imgs[skip:]))


@pytest.fixture(scope="module")
def dirty(tmp_path_factory) -> list[Path]:
    """3 shards: 23 valid samples, one undecodable JPEG and one sample without caption, both mid-shard."""
    root = tmp_path_factory.mktemp("dirty")
    rng = np.random.default_rng(1)
    paths = []
    for s in range(3):
        samples = [{"__key__": f"{s}{i:03d}", "jpg": jpeg(rng), "txt": caption_of(s, i)} for i in range(8)]
        if s == 1:
            samples.insert(3, {"__key__": f"{s}bad", "jpg": b"\xff\xd8\xff\xe0 this is not a JPEG", "txt": "bad"})
            samples.pop()  # 7 valid + 1 corrupt
        if s == 2:
            samples.insert(4, {"__key__": f"{s}notxt", "jpg": jpeg(rng)})
        paths.append(root / f"{s}.tar")
        write_shard(paths[-1], samples)
    return paths


def test_corrupt_samples_are_skipped_and_counted(dirty):
    loader = build_train_loader(dirty, batch_size=8, transform=TRANSFORM, epoch=0, seed=0, shuffle_buffer=0)
    batches = list(loader)  # 24 samples in sizes terms (the bad JPEG counts, the key without caption does not)
    assert [images.shape for images, _ in batches] == [(8, 3, 16, 16)] * 3
    assert not any("bad" in captions for _, captions in batches)
    assert loader.stats.corrupt_samples >= 2 and loader.stats.read_errors == 0
    assert loader.stats.extra_passes == 1  # 23 good samples for 24 places: one more pass fills the last batch

    ev = build_eval_pairs_loader(dirty, batch_size=10, transform=eval_transform(16, 20))
    batches = list(ev)
    assert [len(c) for _, c in batches] == [10, 10, 3]
    expected = [caption_of(s, i) for s in range(3) for i in range(8) if (s, i) != (1, 7)]
    assert [c for _, b in batches for c in b] == expected  # shard order, tar order
    assert ev.stats.corrupt_samples == 2 and ev.stats.samples == 23
    assert [c for _, b in ev for c in b] == expected  # deterministic on a second pass


def test_truncated_tar_is_counted_not_fatal(dirty, tmp_path):
    data = dirty[0].read_bytes()
    with tarfile.open(dirty[0]) as tar:
        fourth_jpg = [m for m in tar.getmembers() if m.name.endswith(".jpg")][3]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: fourth_jpg.offset_data + fourth_jpg.size // 2])  # cut inside the 4th image
    ev = build_eval_pairs_loader([cut, dirty[2]], batch_size=64, transform=eval_transform(16, 20))
    [(_, captions)] = list(ev)
    assert ev.stats.read_errors >= 1
    assert captions[:3] == [caption_of(0, i) for i in range(3)]
    assert sum(c.startswith("shard 0") for c in captions) == 3
    assert sum(c.startswith("shard 2") for c in captions) == 8

    train = build_train_loader([cut, dirty[2]], batch_size=4, transform=TRANSFORM, epoch=0, seed=0,
                               steps_per_epoch=5, shuffle_buffer=4)
    assert len(list(train)) == 5 and train.stats.read_errors >= 1


def test_all_corrupt_data_raises_instead_of_hanging(tmp_path):
    bad = tmp_path / "bad.tar"
    write_shard(bad, [{"__key__": f"{i}", "jpg": b"garbage", "txt": "x"} for i in range(4)])
    loader = build_train_loader([bad], batch_size=2, transform=TRANSFORM, epoch=0, seed=0, steps_per_epoch=1)
    with pytest.raises(RuntimeError, match="no readable sample"):
        list(loader)


def test_bad_arguments(clean):
    with pytest.raises(ValueError, match="rank"):
        build_train_loader(clean, batch_size=4, transform=TRANSFORM, epoch=0, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="skip_batches"):
        build_train_loader(clean, batch_size=4, transform=TRANSFORM, epoch=0, seed=0, skip_batches=13)
    with pytest.raises(FileNotFoundError, match="index_existing_shards"):
        build_train_loader(clean.parent / "nowhere", batch_size=4, transform=TRANSFORM, epoch=0, seed=0)


# --------------------------------------------------------------------------------------------------
# Reproducibility: the order img2dataset's threads wrote a shard in does not matter (issue 9.13)


def test_two_downloads_with_other_within_shard_orders_give_the_same_batches(tmp_path):
    rng = np.random.default_rng(5)
    samples = {s: [{"__key__": f"{s:05d}{i:04d}", "jpg": jpeg(rng), "txt": caption_of(s, i),
                    "json": json.dumps({"i": i})} for i in range(PER_SHARD)] for s in range(3)}
    manifests = []
    for download, permute in (("a", np.random.default_rng(1)), ("b", np.random.default_rng(2))):
        (tmp_path / download).mkdir()
        for s, shard in samples.items():  # the same samples, written in the order the "threads" finished
            write_shard(tmp_path / download / f"{s:05d}.tar", [shard[i] for i in permute.permutation(PER_SHARD)])
        manifests.append(index_existing_shards(tmp_path / download).manifest_path)
    with tarfile.open(tmp_path / "a" / "00000.tar") as a, tarfile.open(tmp_path / "b" / "00000.tar") as b:
        assert a.getnames() != b.getnames()
    for kw in ({"batch_size": 4}, {"batch_size": 3, "rank": 1, "world_size": 2, "num_workers": 2}):
        (caps_a, imgs_a, _), (caps_b, imgs_b, _) = (run(m, **kw) for m in manifests)
        assert caps_a == caps_b and all(torch.equal(x, y) for x, y in zip(imgs_a, imgs_b))
    pairs = [[c for _, b in build_eval_pairs_loader(m, batch_size=5, transform=eval_transform(16, 20)) for c in b]
             for m in manifests]
    assert pairs[0] == pairs[1] == [caption_of(s, i) for s in range(3) for i in range(PER_SHARD)]  # key order



# --------------------------------------------------------------------------------------------------
# Rank x worker balance at the paper's scale (issue 9.11; a plan only, no data)


@pytest.mark.parametrize("world_size, n_workers", [(8, 8), (8, 1), (3, 5)])
def test_paper_scale_plan_gives_every_rank_the_same_distinct_samples(world_size, n_workers):
    sizes = [10_000] * 331 + [8_333]  # CC3M train: 3,318,333 TSV rows in shards of 10,000
    sizes = [n - (i * 37) % 1300 for i, n in enumerate(sizes)]  # and about 10 % failed downloads, unevenly
    batch = 64
    total = sum(sizes)
    steps = total // (batch * world_size)
    plan = plan_epoch(sizes, world_size=world_size, n_workers=n_workers, batch_size=batch, steps=steps)
    assert len(plan) == world_size and all(len(workers) == n_workers for workers in plan)
    spans = []
    for rank, workers in enumerate(plan):
        assert sum(w.batches for w in workers) == steps
        assert max(w.batches for w in workers) - min(w.batches for w in workers) <= 1
        for w in workers:
            assert w.n_samples == w.batches * batch, "a worker reads exactly its batches' samples: no repeats"
            assert len(w.slices) <= w.n_samples // min(sizes) + 2, "a worker reads a run of neighbouring shards"
            spans += [(shard, start, stop) for shard, start, stop in w.slices]
            assert all(0 <= start < stop <= sizes[shard] for shard, start, stop in w.slices)
    spans.sort()
    assert all(a[0] != b[0] or a[2] <= b[1] for a, b in zip(spans, spans[1:])), "no sample is read twice"
    used = sum(stop - start for _, start, stop in spans)
    assert used == world_size * steps * batch  # every rank: steps x batch distinct samples
    assert total - used < world_size * (batch + 1)  # dropped per epoch: under one batch per rank


def test_plan_repeats_only_when_the_steps_ask_for_more_samples_than_there_are():
    plan = plan_epoch([8] * 6, world_size=2, n_workers=2, batch_size=7, steps=5)  # 70 samples of 48
    for workers in plan:
        assert sum(w.n_samples for w in workers) == 24 and [w.batches for w in workers] == [3, 2]
    with pytest.raises(ValueError, match="rank 0 worker 0 gets no samples"):
        plan_epoch([3], world_size=2, n_workers=2, batch_size=1, steps=2)
