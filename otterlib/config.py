"""Profiles: everything a run needs, as data.

A profile is a YAML file in ``data/profiles/<name>.yaml`` that maps onto :class:`Profile`. Notebooks
select one with the ``profile`` parameter and override single fields with dotted keys
(``{"train.epochs": 1, "settings.0.model.embed_dim": 128}``). Unknown keys are errors, so a typo in a
profile or an override never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, get_type_hints

import yaml

from otterlib.env import REPO_ROOT

PROFILE_DIR: Path = REPO_ROOT / "data" / "profiles"


@dataclass
class SyntheticConfig:
    """The seeded synthetic world of the offline profile (:mod:`otterlib.data.world`): training pairs and eval
    sets drawn from it."""

    n_train: int = 1536
    n_val: int = 256
    n_eval_goi: int = 300
    n_eval_in10k: int = 300
    image_size: int = 64
    noise_fraction: float = 0.3
    """Fraction of training pairs whose caption is corrupted, split evenly between ``noise_kinds``."""
    noise_kinds: list[str] = field(default_factory=lambda: ["wrong", "partial"])
    """``wrong`` (another image's caption, false of this one) and/or ``partial`` (true but incomplete)."""
    zipf_exponent: float = 0.5
    """Skew of the attribute draws: value of rank r (1 = most frequent) has probability ∝ r^-zipf_exponent."""
    seed: int = 0


@dataclass
class DownloadConfig:
    """img2dataset options (see :func:`otterlib.data.download_cc3m`)."""

    image_size: int = 256
    resize_mode: str = "keep_ratio"
    processes_count: int = 16
    thread_count: int = 64
    retries: int = 2
    timeout: int = 10
    number_sample_per_shard: int = 10000
    encode_quality: int = 95
    min_image_size: int = 0
    max_aspect_ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Further img2dataset keyword arguments, passed through unchanged."""


@dataclass
class DataConfig:
    """Where the training pairs come from and where they land."""

    source: str = "cc3m"
    """``synthetic`` (offline smoke data served over loopback), ``cc3m`` (official TSV) or ``webdataset``
    (an existing folder of tars)."""
    root: str = "data/cc3m"
    """Folder (relative to the repository unless absolute) that holds the TSVs and shards."""
    train_tsv: str | None = None
    """Path to ``Train_GCC-training.tsv``; fetched from the official URL when absent and None."""
    val_tsv: str | None = None
    """Path to ``Validation_GCC-1.1.0-Validation.tsv`` (held-out split for checkpoint selection)."""
    webdataset_dir: str | None = None
    max_train_samples: int | None = None
    """Use only the first N rows of the training TSV (e.g. the single-GPU ``mini`` profile)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)


@dataclass
class EvalSetConfig:
    """One zero-shot eval set: its official metadata files and its images."""

    name: str = "goi"
    """``goi`` (Open Images V6 test) or ``in10k`` (Tencent ML-Images val)."""
    metadata_dir: str = "data/eval"
    images_dir: str = "data/eval/images"
    download_images: bool = False
    """GOI only: download missing test images from the official image list with img2dataset."""


@dataclass
class EvalConfig:
    """Zero-shot protocol."""

    sets: list[EvalSetConfig] = field(default_factory=lambda: [EvalSetConfig("goi"), EvalSetConfig("in10k")])
    templates: str = "paper"
    """``paper`` (the single template ``a photo of {}.``) or ``clip80`` (ensemble of CLIP's 80)."""
    mode: str = "paper"
    """``paper`` (official candidate lists) or ``clean`` (deduplicated names, leaf-only IN10K)."""
    ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    batch_size: int = 256
    chunk_size: int = 4096
    num_workers: int = 8
    image_size: int = 224
    references: list[str] = field(default_factory=lambda: ["clip_rn50"])
    """Eval-only reference models from :mod:`otterlib.models` (e.g. OpenAI CLIP RN50)."""


@dataclass
class ModelConfig:
    """An image encoder and a text encoder from the registries in :mod:`otterlib.models`."""

    image_encoder: str = "timm:resnet50"
    text_encoder: str = "hf:johngiorgi/declutr-sci-base"
    embed_dim: int = 768
    pretrained: bool = True
    max_text_tokens: int = 60
    freeze_image_blocks: int = 0
    """Freeze this many leading stages of the image encoder (0 = all trainable, the paper)."""
    freeze_text_layers: int = 0
    """Freeze the embeddings and this many leading transformer layers (0 = all trainable)."""


@dataclass
class LossConfig:
    """Objective hyper-parameters (paper defaults; see docs/losses.md)."""

    alpha: float = 0.5
    epsilon: float = 0.5
    teacher_temperature: float = 100.0
    kd_variant: str = "vt"
    sinkhorn_lambda: float = 0.15
    sinkhorn_iter: int = 5
    vv_coef: float = 1.0
    tt_coef: float = 1.0
    remove_diag: bool = True
    global_ot: bool = True
    bug_compatible: bool = False
    logit_scale_init: float = 3.9
    ema_decay: float = 0.999


@dataclass
class TrainConfig:
    """The optimisation recipe (paper: SGD 0.9, lr 3e-3, wd 0, cosine per epoch, 10 epochs, batch 512)."""

    epochs: int = 10
    batch_size: int = 512
    """Global batch (all processes together)."""
    optimizer: str = "sgd"
    """``sgd`` (the paper: SGD with ``momentum``) or ``adamw`` (a named deviation for short CPU runs)."""
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine_epoch"
    """``cosine_epoch`` (CosineAnnealingLR(T_max=epochs) stepped per epoch, the official code) or ``constant``."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``."""
    grad_clip: float | None = None
    seed: int = 0
    """The run's seed (initialisation, data order, augmentation, dropout); set per run from the profile's
    ``seeds`` by :func:`resolve_run`."""
    nproc: int = 1
    """Processes per node; >1 launches ``torchrun -m otterlib.train``."""
    device: str = "auto"
    num_workers: int = 8
    shuffle_buffer: int = 5000
    image_size: int = 224
    log_every: int = 10
    checkpoint_every_steps: int = 0
    """Also replace ``latest`` every N steps inside an epoch (0 = only at epoch ends)."""
    max_steps_per_epoch: int | None = None
    """Cap on steps per epoch (smoke tests); None = one pass over the data."""
    keep_epoch_checkpoints: bool = True
    """Keep the student's weights after every epoch (``checkpoints/epoch_NNN.pt``)."""
    channels_last: bool = True
    deterministic: bool = False


@dataclass
class SettingConfig:
    """One dataset/architecture setting of the comparison table."""

    name: str = "cc3m-rn50-declutr-sci-base"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: dict[str, Any] = field(default_factory=dict)
    """Per-setting overrides of :class:`TrainConfig` fields (named deviations)."""
    seeds: list[int] | None = None
    """Training seeds of this setting (None: the profile's ``seeds``)."""


@dataclass
class NoiseStudyConfig:
    """The controlled-noise study of notebook 06: trainable projection heads with their own EMA teacher on
    cached features of locked pretrained encoders (:mod:`otterlib.locked`), trained on synthetic pairs whose
    noise fraction is set (:mod:`otterlib.data.world`), for every noise level × training-set size × method × seed."""

    setting: str | None = None
    """The profile setting whose encoders (and ``embed_dim``) are locked; None: the first setting."""
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.6])
    """Fractions of corrupted training pairs (half wrong captions, half partial ones)."""
    sizes: list[int] = field(default_factory=lambda: [2000, 8000])
    """Training-set sizes; each smaller set is the first pairs of the largest one (nested)."""
    methods: list[str] | None = None
    """Objectives to compare (None: the profile's ``methods``)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    """Training seeds (head initialisation and batch order, shared by every method: paired runs)."""
    steps: int = 2000
    """Optimizer steps of every run, whatever the training-set size."""
    batch_size: int = 128
    embed_dim: int | None = None
    """Width of the joint embedding; None: the setting's ``model.embed_dim``."""
    train: dict[str, Any] = field(default_factory=dict)
    """Overrides of the profile's :class:`TrainConfig` for the heads (e.g. ``lr``, ``optimizer``)."""
    record_every: int = 50
    """Target precision is recorded on the training batch every this many steps (and at the first and last)."""
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    data_seed: int = 0
    """Seed of the study's synthetic training pairs (independent of the training seeds)."""
    n_boot: int = 2000
    """Bootstrap replicates of the paired OTTER − best-baseline intervals."""
    tie_tolerance: float = 0.1
    """The paper-style fixed rule: a tie when OTTER is within this many points of the best baseline."""
    workers: int = 1
    """Spawned processes that run the grid, each on ``threads`` torch threads; 0 runs it in this process."""
    threads: int = 1
    """Torch threads of each worker and of the feature extraction."""
    device: str = "cpu"
    feature_batch_size: int = 64
    """Images or captions per forward pass of the locked encoders (on ``threads`` torch threads)."""
    cache_dir: str = "data/features"
    """Where the locked encoders' features are cached (relative to the repository unless absolute)."""


@dataclass
class Profile:
    """Everything a reproduction needs: data, settings × methods, training recipe and evaluation."""

    name: str = "paper"
    description: str = ""
    offline: bool = False
    results_dir: str = "results"
    methods: list[str] = field(default_factory=lambda: ["infonce", "label_smoothing", "kd", "otter"])
    settings: list[SettingConfig] = field(default_factory=lambda: [SettingConfig()])
    seeds: list[int] = field(default_factory=lambda: [0])
    """Training seeds: every (setting, method) is trained once per seed (``train.seed`` of the run), into its
    own run folder; tables average over seeds and the statistics resample them."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    noise_study: NoiseStudyConfig = field(default_factory=NoiseStudyConfig)

    def setting(self, name: str) -> SettingConfig:
        """The setting called ``name``."""
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(f"profile {self.name!r} has no setting {name!r}; it has {[s.name for s in self.settings]}")

    def path(self, relative: str | Path) -> Path:
        """A profile path resolved against the repository root (absolute paths stay as they are)."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def results_root(self) -> Path:
        """``results/<profile>``."""
        return self.path(self.results_dir) / self.name

    def seeds_of(self, setting: str) -> list[int]:
        """The training seeds of ``setting``: its own ``seeds``, else the profile's."""
        seeds = self.setting(setting).seeds
        seeds = list(self.seeds if seeds is None else seeds)
        if not seeds or len(set(seeds)) != len(seeds) or any(isinstance(x, bool) or not isinstance(x, int) or x < 0
                                                             for x in seeds):
            raise ValueError(f"setting {setting!r}: seeds must be a non-empty list of distinct ints >= 0, got {seeds}")
        return seeds

    def runs(self) -> list[tuple[str, str, int]]:
        """Every training run of the profile as (setting, method, seed), settings then methods then seeds."""
        return [(s.name, m, seed) for s in self.settings for m in self.methods for seed in self.seeds_of(s.name)]

    def run_dir(self, setting: str, method: str, seed: int) -> Path:
        """``results/<profile>/<setting>/<method>/seed<seed>``: the folder of one training run."""
        return self.results_root / setting / method / f"seed{seed}"


@dataclass
class RunConfig:
    """The resolved configuration of one (setting, method) training run."""

    profile: str
    setting: str
    method: str
    model: ModelConfig
    train: TrainConfig
    loss: LossConfig
    data: DataConfig
    run_dir: str
    offline: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        return _build(cls, d, "run")

    def config_hash(self) -> str:
        """sha256 (12 hex) of everything that changes the trained weights (not the output folder)."""
        d = self.to_dict()
        d.pop("run_dir")
        return config_hash(d)


def config_hash(d: Mapping[str, Any]) -> str:
    """Short stable hash of a JSON-serialisable mapping."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses; unknown keys raise."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} for {cls.__name__}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = getattr(hint, "__origin__", None)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        (item,) = hint.__args__
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_coerce(item, v, f"{where}.{i}") for i, v in enumerate(value)]
    return value


def _deep_update(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def apply_overrides(d: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (``"train.epochs": 2``, ``"settings.0.name": "x"``) to a nested dict."""
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        node: Any = d
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[: i + 1]))
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, dotted)] = value
        elif isinstance(node, dict):
            if isinstance(value, Mapping) and isinstance(node.get(last), dict):
                _deep_update(node[last], value)
            else:
                node[last] = value
        else:
            raise ValueError(f"override {dotted!r}: {'.'.join(parts[:-1])} is not a section")
    return d


def _child(node: Any, part: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if isinstance(node, dict):
        if part not in node:
            node[part] = {}
        return node[part]
    raise ValueError(f"override path {where!r} goes through a value, not a section")


def _index(node: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ValueError(f"override {where!r}: {part!r} is not an index of a {len(node)}-item list")
    return int(part)


def available_profiles() -> list[str]:
    """Names of the profiles in ``data/profiles``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path = "smoke", overrides: Mapping[str, Any] | None = None) -> Profile:
    """Load a profile by name (``data/profiles/<name>.yaml``) or path and apply dotted-key overrides.

    A profile may name ``base: <other profile>`` to start from another one.
    """
    d = _load_yaml_chain(name_or_path, seen=())
    apply_overrides(d, overrides or {})
    return _build(Profile, d, f"profile {name_or_path}")


def _load_yaml_chain(name_or_path: str | Path, seen: tuple[str, ...]) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile {name_or_path!r} not found (looked for {path}); "
                                f"available: {available_profiles()}")
    if str(path) in seen:
        raise ValueError(f"profile inheritance loops: {' -> '.join(seen + (str(path),))}")
    d = yaml.safe_load(path.read_text()) or {}
    base = d.pop("base", None)
    if base is None:
        return d
    return _deep_update(_load_yaml_chain(base, seen + (str(path),)), d)


def resolve_run(profile: Profile, setting: str, method: str, seed: int | None = None) -> RunConfig:
    """The full configuration of one (setting, method, seed) run, with the setting's train overrides applied.

    ``seed`` (one of the setting's seeds; None: the first) becomes ``train.seed``.
    """
    seeds = profile.seeds_of(setting)
    if seed is None:
        seed = seeds[0]
    if seed not in seeds:
        raise ValueError(f"seed {seed} is not a seed of setting {setting!r} (seeds: {seeds})")
    if method not in profile.methods:
        raise ValueError(f"method {method!r} is not in profile {profile.name!r} (methods: {profile.methods})")
    s = profile.setting(setting)
    train = dataclasses.replace(profile.train)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(s.train) - train_fields
    if unknown:
        raise ValueError(f"setting {setting!r}: unknown train field(s) {sorted(unknown)}")
    if "seed" in s.train:
        raise ValueError(f"setting {setting!r}: set its training seeds with `seeds`, not train.seed")
    train = dataclasses.replace(train, **s.train, seed=seed)
    return RunConfig(profile=profile.name, setting=setting, method=method, model=s.model, train=train,
                     loss=profile.loss, data=profile.data, run_dir=str(profile.run_dir(setting, method, seed)),
                     offline=profile.offline)


def save_yaml(obj: Any, path: Path) -> None:
    """Write a dataclass or mapping as YAML (atomically)."""
    d = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(d, sort_keys=False))
    tmp.replace(path)
