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
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, get_type_hints

import yaml

from otterlib.data.sources import SOURCES
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
    """img2dataset options shared by every source's download (see :class:`otterlib.data.download.DownloadOptions`)."""

    image_size: int = 256
    resize_mode: str = "keep_ratio"
    distributor: str = "multiprocessing"
    """img2dataset's ``distributor``: ``multiprocessing`` (this machine) or ``pyspark`` (a Spark cluster,
    ``docs/paper_grid.md``)."""
    spark_config: dict[str, str] = field(default_factory=dict)
    """With ``pyspark``: the Spark session's settings, e.g. ``{"spark.master": "spark://head:7077"}``."""
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


ORIGINS: tuple[str, ...] = ("official", "synthetic", "webdataset")
"""How a source's pairs are obtained (:attr:`SourceData.origin`)."""


@dataclass
class SourceData:
    """Where one training source's metadata files and shards live (``data.sources.<name>`` of a profile)."""

    origin: str = "official"
    """``official``: the publisher's metadata files, parsed by :mod:`otterlib.data.sources` and downloaded with
    img2dataset; ``synthetic`` (cc3m only): the offline world's pairs (``data.synthetic``) written as CC3M TSVs
    and served over loopback, then the same path; ``webdataset``: training tars already on disk in
    ``webdataset_dir`` (indexed, never deleted), the held-out split downloaded from the metadata as usual."""
    root: str = ""
    """Folder (relative to the repository unless absolute) holding the metadata files (relative file names are
    looked up here) and the shards (``<root>/shards/train``, ``<root>/shards/val``)."""
    webdataset_dir: str | None = None
    """With ``origin: webdataset``: the folder of training tars."""

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"origin must be one of {list(ORIGINS)}, got {self.origin!r}")
        if self.origin == "webdataset" and not self.webdataset_dir:
            raise ValueError("origin 'webdataset' needs webdataset_dir, the folder of the training tars")


@dataclass
class Cc3mData(SourceData):
    """CC3M: Google's two ``caption<TAB>url`` TSVs (:mod:`otterlib.data.sources.cc3m`)."""

    root: str = "data/cc3m"
    train_tsv: str | None = None
    """``Train_GCC-training.tsv``; None: that name under ``root``, fetched from Google when absent."""
    val_tsv: str | None = None
    """``Validation_GCC-1.1.0-Validation.tsv`` (the held-out split); None: under ``root``, fetched when absent."""


@dataclass
class Yfcc15mData(SourceData):
    """YFCC15M: OpenAI's subset list joined with the YFCC100M metadata (:mod:`otterlib.data.sources.yfcc15m`)."""

    root: str = "data/yfcc15m"
    subset_list: str | None = None
    """OpenAI's ``yfcc100m_subset_data.tsv`` (``.bz2`` read as is); None: ``yfcc100m_subset_data.tsv.bz2``
    under ``root``, fetched from OpenAI when absent."""
    metadata: str | None = None
    """The 25-column YFCC100M metadata (Yahoo Webscope); None: ``yfcc100m_dataset.bz2`` under ``root``. It has
    no public URL: put it there by hand."""
    val_per_mille: int = 1
    """Held-out split: photo ids in the first ``val_per_mille`` of 1,000 SHA-1 buckets."""


@dataclass
class WitData(SourceData):
    """WIT, English rows: Google's 17-column TSVs (:mod:`otterlib.data.sources.wit`)."""

    root: str = "data/wit"
    train_files: list[str] | None = None
    """Training TSVs; None: the 10 ``wit_v1.train.all-0000N-of-00010.tsv.gz`` under ``root``, fetched from
    Google when absent."""
    val_files: list[str] | None = None
    """Validation TSVs (the held-out split); None: the 5 ``wit_v1.val.all-0000N-of-00005.tsv.gz``, likewise."""


@dataclass
class DataSources:
    """Per training source, where its data live: one field per name of :data:`otterlib.data.sources.SOURCES`;
    None = not configured (a setting on it is refused)."""

    cc3m: Cc3mData | None = None
    yfcc15m: Yfcc15mData | None = None
    wit: WitData | None = None

    def configured(self) -> list[str]:
        """Names of the configured sources."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclass
class DataConfig:
    """The training pairs: per-source locations, and what all sources share (download options, caps)."""

    sources: DataSources = field(default_factory=lambda: DataSources(cc3m=Cc3mData()))
    max_train_samples: int | None = None
    """Use only the first N pairs of every source's training table (e.g. the single-GPU ``mini`` profile)."""
    allow_partial: bool = False
    """Train on an incomplete download (rows img2dataset gave up on; ``sizes.json`` says ``complete: false``).
    Default: training refuses it and says how to resume."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The offline world a ``synthetic`` source and the synthetic eval sets are drawn from."""
    download: DownloadConfig = field(default_factory=DownloadConfig)

    MOVED: ClassVar[dict[str, str]] = {
        name: f"data.sources.<source>.{name}" for name in ("root", "train_tsv", "val_tsv", "webdataset_dir")
    } | {"source": "data.sources.<source>.origin (official, synthetic or webdataset)"}
    """Fields of the former single-source data section and where they live now (named in the error)."""

    def source(self, name: str) -> SourceData:
        """The configuration of source ``name``; a ValueError naming the configured ones when it has none."""
        configured = self.sources.configured()
        if name not in configured:
            raise ValueError(f"no data.sources.{name} in this profile (it configures {configured}): add one with "
                             f"its root and metadata files (docs/paper_grid.md)")
        return getattr(self.sources, name)

    @property
    def synthetic_world(self) -> bool:
        """True when a source's pairs come from the synthetic world (the offline profiles); the eval sets are
        then drawn from it too."""
        return any(self.source(name).origin == "synthetic" for name in self.sources.configured())

    def __post_init__(self) -> None:
        for name in self.sources.configured():
            if name != "cc3m" and self.source(name).origin == "synthetic":
                raise ValueError(f"data.sources.{name}.origin: the synthetic world writes CC3M-format pairs, so only "
                                 f"data.sources.cc3m can be synthetic")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"data.max_train_samples must be >= 1 or null, got {self.max_train_samples}")


@dataclass
class RunData(SourceData):
    """The training data of one run: its setting's source and where that source's shards are (set by
    :func:`resolve_run`)."""

    source: str = "cc3m"
    allow_partial: bool = False
    """``data.allow_partial`` of the profile."""


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
    goi_repeated_names: str = "first"
    """When the paper's ``goi_images.txt`` is absent, GOI labels are rebuilt from the Open Images CSVs through
    display names; a name that several class ids carry (12 in the paper's list) labels the ``first`` of them
    or ``all`` of them (reasoning in ``docs/eval_sets.md``). Unused when ``goi_images.txt`` is present."""
    bug_compatible: bool = False
    """Reproduce the official evaluation where we fix a defect of it: Tencent class 0 is named ``-1  thing``
    (caption ``a photo of -1  thing.``) as the official parser reads the malformed row 0; the fix names it
    ``thing``. Use it to reproduce the README row of the released checkpoints to the letter."""


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
    teacher_mode: str = "train"
    """Mode of every EMA-teacher submodule (KD, OTTER): ``train`` (official: dropout on, BatchNorm batch statistics)
    or ``eval`` (dropout off, BatchNorm on the student's running statistics)."""


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
    nnodes: int = 1
    """Nodes; >1 launches torchrun's multi-node rendezvous on every node (see ``docs/paper_grid.md``)."""
    rdzv_endpoint: str | None = None
    """``host:port`` of the rendezvous (any node that all reach, e.g. the first of a SLURM allocation);
    required when ``nnodes > 1``."""
    rdzv_id: str | None = None
    """Rendezvous id shared by the nodes of one run; None: derived from the run (profile, setting, method, seed)."""
    rdzv_backend: str = "c10d"
    """torchrun ``--rdzv-backend`` (``c10d`` needs no extra service)."""
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
    """Image encoder and images in channels-last memory format (CUDA only; the values are the same)."""
    deterministic: bool = False
    compile: bool = False
    """``torch.compile`` the student (encoders + objective) and the EMA teacher in place (``nn.Module.compile``);
    the first steps compile (minutes at paper shape). Same values up to float rounding (``docs/benchmarks.md``)."""
    optimizer_impl: str = "auto"
    """``auto`` (torch's choice: foreach on CUDA), ``for_loop``, ``foreach`` or ``fused`` (one kernel for all
    parameters); the same update up to float rounding."""
    text_attention: str = "sdpa"
    """Attention kernel of the Hugging Face text encoder: ``sdpa`` (transformers' default) or ``eager`` (the official
    code's). Equal up to float rounding without dropout; with dropout they draw different masks."""
    teacher_inference_mode: bool = False
    """Run the EMA teacher's forward under ``torch.inference_mode`` instead of ``no_grad`` (same values, same
    train-mode BatchNorm and dropout)."""


LAUNCH_ONLY_TRAIN_FIELDS: tuple[str, ...] = ("rdzv_endpoint", "rdzv_id", "rdzv_backend")
"""Train fields that only say where processes meet (not in :meth:`RunConfig.config_hash`: a run resumes in
another allocation)."""

PROVENANCES: tuple[str, ...] = ("published", "reconstructed")


@dataclass
class SettingConfig:
    """One dataset/architecture setting of the comparison table."""

    name: str = "cc3m-rn50-declutr-sci-base"
    source: str = "cc3m"
    """Training source: a key of :data:`otterlib.data.sources.SOURCES` (``cc3m``, ``yfcc15m``, ``wit``)."""
    provenance: str = "reconstructed"
    """``published``: the paper's numbers for this setting are known (``data/published/``); ``reconstructed``:
    they are not (the paper's seven settings are reconstructed from what it names, or the setting is ours)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: dict[str, Any] = field(default_factory=dict)
    """Per-setting overrides of :class:`TrainConfig` fields (named deviations)."""
    seeds: list[int] | None = None
    """Training seeds of this setting (None: the profile's ``seeds``)."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"setting {self.name!r}: unknown source {self.source!r}; valid: {sorted(SOURCES)}")
        if self.provenance not in PROVENANCES:
            raise ValueError(f"setting {self.name!r}: provenance must be one of {list(PROVENANCES)}, "
                             f"got {self.provenance!r}")


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

    def __post_init__(self) -> None:
        configured = self.data.sources.configured()
        for s in self.settings:
            if s.source not in configured:
                raise ValueError(f"setting {s.name!r} trains on {s.source}, but profile {self.name!r} has no "
                                 f"data.sources.{s.source} (it configures {configured}): add one with its root and "
                                 f"metadata files (docs/paper_grid.md)")

    def used_sources(self, settings: list[str] | None = None) -> list[str]:
        """The training sources of ``settings`` (None: all the profile's settings), each once, in profile order."""
        names = [s.name for s in self.settings] if settings is None else [self.setting(n).name for n in settings]
        return list(dict.fromkeys(s.source for s in self.settings if s.name in names))

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
    data: RunData
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
        for name in LAUNCH_ONLY_TRAIN_FIELDS:
            d["train"].pop(name)
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
        moved = getattr(cls, "MOVED", {})
        hints = "".join(f"; {where}.{k} is now {moved[k]}" for k in sorted(unknown) if k in moved)
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} for {cls.__name__}; valid: {sorted(names)}"
                         f"{hints}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = getattr(hint, "__origin__", None)
    optional = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    if isinstance(hint, types.UnionType) and len(optional) == 1 and dataclasses.is_dataclass(optional[0]):
        return None if value is None else _build(optional[0], value, where)  # e.g. ``Cc3mData | None``
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


def setting_train(profile: Profile, setting: str) -> TrainConfig:
    """The profile's training recipe with ``setting``'s ``train`` overrides applied (its seed still the profile's)."""
    s = profile.setting(setting)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(s.train) - train_fields
    if unknown:
        raise ValueError(f"setting {setting!r}: unknown train field(s) {sorted(unknown)}")
    if "seed" in s.train:
        raise ValueError(f"setting {setting!r}: set its training seeds with `seeds`, not train.seed")
    return dataclasses.replace(profile.train, **s.train)


def resolve_run(profile: Profile, setting: str, method: str, seed: int | None = None) -> RunConfig:
    """The full configuration of one (setting, method, seed) run, with the setting's train overrides applied
    and its source's data (``data.sources.<source>``) as the run's data.

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
    where = profile.data.source(s.source)
    data = RunData(origin=where.origin, root=where.root, webdataset_dir=where.webdataset_dir, source=s.source,
                   allow_partial=profile.data.allow_partial)
    train = dataclasses.replace(setting_train(profile, setting), seed=seed)
    return RunConfig(profile=profile.name, setting=setting, method=method, model=s.model, train=train,
                     loss=profile.loss, data=data, run_dir=str(profile.run_dir(setting, method, seed)),
                     offline=profile.offline)


def save_yaml(obj: Any, path: Path) -> None:
    """Write a dataclass or mapping as YAML (atomically, also when several processes write the same file)."""
    d = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique: machines may share the folder
    tmp.write_text(yaml.safe_dump(d, sort_keys=False))
    tmp.replace(path)
