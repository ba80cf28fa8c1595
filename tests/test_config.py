"""Profiles: loading, inheritance, dotted overrides, strict keys, per-run resolution."""
import pytest

from otterlib import config


def test_builtin_profiles_load():
    assert {"smoke", "paper", "mini"} <= set(config.available_profiles())
    smoke = config.load_profile("smoke")
    assert smoke.offline and smoke.data.source("cc3m").origin == "synthetic" and len(smoke.settings) >= 2
    assert smoke.methods == ["infonce", "label_smoothing", "kd", "otter"]


def test_paper_profile_holds_the_paper_recipe():
    p = config.load_profile("paper")
    t, l = p.train, p.loss
    assert (t.batch_size, t.lr, t.momentum, t.weight_decay, t.epochs, t.schedule) == (512, 3e-3, 0.9, 0.0, 10, "cosine_epoch")
    assert (l.alpha, l.sinkhorn_lambda, l.sinkhorn_iter, l.teacher_temperature, l.ema_decay) == (0.5, 0.15, 5, 100.0, 0.999)
    assert p.settings[0].model.image_encoder == "timm:resnet50" and p.settings[0].model.embed_dim == 768
    assert p.eval.templates == "paper" and p.eval.references == ["clip_rn50"]


def test_mini_inherits_from_paper():
    mini, paper = config.load_profile("mini"), config.load_profile("paper")
    assert mini.name == "mini" and mini.data.max_train_samples == 300000 and mini.train.nproc == 1
    assert mini.train.batch_size == paper.train.batch_size and mini.loss == paper.loss


def test_overrides_apply_dotted_keys_and_list_indices():
    p = config.load_profile("smoke", {"train.epochs": 1, "settings.1.model.embed_dim": 64,
                                      "loss": {"alpha": 0.7}})
    assert p.train.epochs == 1 and p.settings[1].model.embed_dim == 64
    assert p.loss.alpha == 0.7 and p.loss.sinkhorn_iter == 5


@pytest.mark.parametrize("overrides,match", [
    ({"train.epoch": 1}, "unknown field"),
    ({"settings.9.name": "x"}, "not an index"),
    ({"train.epochs.x": 1}, "not a section|goes through a value"),
])
def test_bad_overrides_are_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        config.load_profile("smoke", overrides)


def test_unknown_profile_lists_available():
    with pytest.raises(FileNotFoundError, match="available"):
        config.load_profile("nope")


def test_inheritance_loop_is_detected(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ValueError, match="loops"):
        config.load_profile(tmp_path / "a.yaml")


def test_resolve_run_applies_setting_overrides_and_hash_tracks_weights_only(tmp_path):
    p = config.load_profile("smoke")
    run = config.resolve_run(p, "tiny-scratch", "otter")
    assert run.train.epochs == p.setting("tiny-scratch").train["epochs"] != p.train.epochs
    moved = config.resolve_run(config.load_profile("smoke", {"results_dir": str(tmp_path)}), "tiny-scratch", "otter")
    assert moved.run_dir != run.run_dir and moved.config_hash() == run.config_hash()
    other = config.resolve_run(config.load_profile("smoke", {"loss.alpha": 0.3}), "tiny-scratch", "otter")
    assert other.config_hash() != run.config_hash()
    assert config.RunConfig.from_dict(run.to_dict()) == run
    with pytest.raises(ValueError, match="not in profile"):
        config.resolve_run(p, "tiny-scratch", "dino")
    with pytest.raises(KeyError, match="no setting"):
        config.resolve_run(p, "nope", "otter")


def test_seeds_make_one_run_per_seed_with_its_own_folder_and_train_seed(tmp_path):
    p = config.load_profile("smoke", {"results_dir": str(tmp_path), "seeds": [3, 5],
                                      "settings.1.seeds": [7]})
    assert p.seeds_of("lite0-minilm") == [3, 5] and p.seeds_of("tiny-scratch") == [7]
    runs = p.runs()
    assert len(runs) == (2 + 1) * len(p.methods)
    assert ("lite0-minilm", "otter", 5) in runs and ("tiny-scratch", "kd", 7) in runs
    a, b = (config.resolve_run(p, "lite0-minilm", "otter", s) for s in (3, 5))
    assert (a.train.seed, b.train.seed) == (3, 5)
    assert a.run_dir == str(tmp_path / "smoke" / "lite0-minilm" / "otter" / "seed3") != b.run_dir
    assert a.config_hash() != b.config_hash()
    assert config.resolve_run(p, "tiny-scratch", "otter").train.seed == 7  # None: the setting's first seed
    with pytest.raises(ValueError, match="not a seed"):
        config.resolve_run(p, "lite0-minilm", "otter", 7)


@pytest.mark.parametrize("seeds", [[], [1, 1], [-1], [True]])
def test_bad_seed_lists_are_clear_errors(seeds):
    p = config.load_profile("smoke", {"seeds": seeds})
    with pytest.raises(ValueError, match="seeds must be"):
        p.runs()


def test_a_setting_cannot_set_train_seed_directly():
    p = config.load_profile("smoke", {"settings.1.train": {"seed": 3}})
    with pytest.raises(ValueError, match="seeds"):
        config.resolve_run(p, "tiny-scratch", "otter")


def test_paper_grid_is_seven_settings_readme_row_first_as_data():
    p = config.load_profile("paper")
    grid = [(s.name, s.source, s.provenance, s.model.image_encoder, s.model.text_encoder) for s in p.settings]
    assert grid == [
        ("cc3m-rn50-declutr-sci-base", "cc3m", "published", "timm:resnet50", "declutr-sci-base"),
        ("cc3m-fbnetv3b-declutr-sci-base", "cc3m", "reconstructed", "timm:fbnetv3_b", "declutr-sci-base"),
        ("cc3m-rn50-sbert-base", "cc3m", "reconstructed", "timm:resnet50", "sentence-transformer-base"),
        ("cc3m-fbnetv3b-sbert-base", "cc3m", "reconstructed", "timm:fbnetv3_b", "sentence-transformer-base"),
        ("cc3m-rn50-declutr-base", "cc3m", "reconstructed", "timm:resnet50", "declutr-base"),
        ("yfcc15m-rn50-declutr-sci-base", "yfcc15m", "reconstructed", "timm:resnet50", "declutr-sci-base"),
        ("wit-rn50-declutr-sci-base", "wit", "reconstructed", "timm:resnet50", "declutr-sci-base"),
    ]
    assert {(s.model.embed_dim, s.model.max_text_tokens, s.model.pretrained) for s in p.settings} == {(768, 60, True)}
    assert len(p.runs()) == 7 * 4
    # The settings share their model block through YAML merge keys: an override of one changes only that one.
    changed = config.load_profile("paper", {"settings.5.model.embed_dim": 512})
    assert [s.model.embed_dim for s in changed.settings] == [768] * 5 + [512, 768]


def test_published_provenance_matches_the_published_numbers():
    from otterlib import report

    published = set(report.read_published()["setting"])
    for name in ("paper", "mini"):
        marked = {s.name for s in config.load_profile(name).settings if s.provenance == "published"}
        assert marked == published == {"cc3m-rn50-declutr-sci-base"}


def test_mini_runs_the_same_seven_settings_at_300k_pairs_2_epochs_on_one_gpu():
    mini, paper = config.load_profile("mini"), config.load_profile("paper")
    assert mini.settings == paper.settings
    assert (mini.data.max_train_samples, mini.train.epochs, mini.train.nproc, mini.train.nnodes) == (300_000, 2, 1, 1)


@pytest.mark.parametrize("field,value,match", [("source", "laion", "unknown source 'laion'.*'cc3m'"),
                                               ("provenance", "guessed", "provenance must be one of")])
def test_bad_source_or_provenance_is_a_clear_error(field, value, match):
    with pytest.raises(ValueError, match=match):
        config.load_profile("paper", {f"settings.1.{field}": value})


def test_each_run_gets_its_own_source_data():
    p = config.load_profile("paper", {"data.allow_partial": True, "data.sources.wit.root": "/big/wit"})
    for setting, source, root in [("cc3m-fbnetv3b-declutr-sci-base", "cc3m", "data/cc3m"),
                                  ("yfcc15m-rn50-declutr-sci-base", "yfcc15m", "data/yfcc15m"),
                                  ("wit-rn50-declutr-sci-base", "wit", "/big/wit")]:
        data = config.resolve_run(p, setting, "otter").data
        assert (data.source, data.origin, data.root, data.allow_partial) == (source, "official", root, True)
    smoke = config.load_profile("smoke")
    assert config.resolve_run(smoke, "tiny-scratch", "kd").data.origin == "synthetic"
    run = config.resolve_run(p, "wit-rn50-declutr-sci-base", "otter")
    assert config.RunConfig.from_dict(run.to_dict()) == run  # config.yaml round-trips


def test_a_setting_on_a_source_the_profile_does_not_configure_is_refused_at_load():
    with pytest.raises(ValueError, match=r"setting 'tiny-scratch' trains on wit, but profile 'smoke' has no "
                                         r"data.sources.wit \(it configures \['cc3m'\]\)"):
        config.load_profile("smoke", {"settings.1.source": "wit"})


@pytest.mark.parametrize("overrides,match", [
    ({"data.root": "/x"}, r"unknown field\(s\) \['root'\].*data.root is now data.sources.<source>.root"),
    ({"data.source": "cc3m"}, r"data.source is now data.sources.<source>.origin"),
    ({"data.sources.laion": {"root": "x"}}, r"unknown field\(s\) \['laion'\] for DataSources; valid: \['cc3m', 'wit', 'yfcc15m'\]"),
    ({"data.sources.wit.origin": "synthetic"}, "only data.sources.cc3m can be synthetic"),
    ({"data.sources.cc3m.origin": "webdataset"}, "needs webdataset_dir"),
    ({"data.sources.cc3m.origin": "torrent"}, r"origin must be one of \['official', 'synthetic', 'webdataset'\]"),
])
def test_bad_data_sections_are_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        config.load_profile("paper", overrides)


def test_the_data_sources_section_names_exactly_the_declared_sources():
    from dataclasses import fields

    from otterlib.data.sources import SOURCES

    assert [f.name for f in fields(config.DataSources)] == list(SOURCES)


def test_rendezvous_fields_do_not_change_the_config_hash_but_the_node_count_does():
    p = config.load_profile("paper")
    run = config.resolve_run(p, "cc3m-rn50-declutr-sci-base", "otter")
    moved = config.resolve_run(config.load_profile("paper", {"train.rdzv_endpoint": "node7:29500",
                                                             "train.rdzv_id": "job42"}), run.setting, "otter")
    assert moved.config_hash() == run.config_hash()
    wider = config.resolve_run(config.load_profile("paper", {"train.nnodes": 2}), run.setting, "otter")
    assert wider.config_hash() != run.config_hash()


def test_concurrent_writers_of_one_yaml_never_collide(tmp_path):
    import threading

    errors = []

    def write(i):
        try:
            for _ in range(20):
                config.save_yaml({"writer": i}, tmp_path / "profile.yaml")
        except OSError as err:  # a shared temporary name: one writer's replace() finds the file gone
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and list(tmp_path.iterdir()) == [tmp_path / "profile.yaml"]
