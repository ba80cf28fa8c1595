"""Stage 04: zero-shot evaluation of a trained run or a reference model."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from otterlib import layout
from otterlib.config import Profile, resolve_run
from otterlib.env import git_sha, resolve_device
from otterlib.stages.eval_sets import image_integrity, load_eval_set


def evaluate_run(profile: Profile, setting: str | None = None, method: str | None = None,
                 reference: str | None = None, mode: str | None = None, seed: int | None = None
                 ) -> list[dict[str, Any]]:
    """Zero-shot FH@k / mAP of a trained run's best checkpoint (or of a reference model) on every eval set.

    A trained run is (``setting``, ``method``, ``seed``; None: the setting's first seed). Writes ``eval.jsonl``
    (one row per eval set, with provenance; ``n_images_missing`` counts the listed images not on disk, of which
    ``n_images_md5_rejected`` were downloaded but failed the OriginalMD5 check) and ``hits_<set>[_<mode>].npz``
    (image ids, per-image hits and per-class average precisions, :func:`otterlib.report.save_hits`) in the run
    folder.
    """
    from otterlib import report
    from otterlib.checkpoint import BEST, checkpoint_dir, load_student_weights
    from otterlib.data.transforms import eval_transform
    from otterlib.evaluate import evaluate_zero_shot, write_eval_rows
    from otterlib.models import create_model, load_clip_reference
    from otterlib.templates import get_templates

    device = resolve_device(profile.train.device)
    mode = mode or profile.eval.mode
    if reference is not None:
        out_dir = layout.reference_dir(profile, reference)
        model = load_clip_reference(reference, device=device)
        transform = model.preprocess
        provenance: dict[str, Any] = {"setting": "reference", "method": reference, "kind": "reference",
                                      "checkpoint": reference}
    elif setting and method:
        cfg = resolve_run(profile, setting, method, seed)
        out_dir = Path(cfg.run_dir)
        model = create_model(cfg.model)
        ckpt = checkpoint_dir(out_dir) / BEST
        meta = load_student_weights(model, ckpt)
        model.to(device)
        transform = eval_transform(profile.eval.image_size)
        provenance = {"setting": setting, "method": method, "seed": cfg.train.seed, "kind": "trained",
                      "checkpoint": str(ckpt),
                      "checkpoint_epoch": meta.get("epoch"), "config_hash": cfg.config_hash()}
    else:
        raise ValueError("give either setting and method, or reference")
    model.eval()
    rows = []
    sha = git_sha()
    for set_cfg in profile.eval.sets:
        listed = load_eval_set(set_cfg, eval_cfg=profile.eval)
        eval_set = listed.with_existing_images()
        t0 = time.time()
        result = evaluate_zero_shot(model, eval_set, transform, templates=get_templates(profile.eval.templates),
                                    ks=tuple(profile.eval.ks), batch_size=profile.eval.batch_size,
                                    num_workers=profile.eval.num_workers, device=device,
                                    chunk_size=profile.eval.chunk_size, mode=mode)
        report.save_hits(layout.hits_path(out_dir, set_cfg.name, mode), result.image_ids, result.hits,
                         result.ap_class_ids, result.ap)
        rows.append(result.to_row(**provenance, profile=profile.name, templates=profile.eval.templates,
                                  n_images_missing=eval_set.info.get("n_dropped_missing", 0),
                                  n_images_md5_rejected=image_integrity(set_cfg, listed)["n_images_md5_rejected"],
                                  git=sha,
                                  bug_compatible=profile.eval.bug_compatible,
                                  label_source=eval_set.info.get("label_source", "official files"),
                                  eval_seconds=round(time.time() - t0, 2),
                                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
    write_eval_rows(layout.eval_rows_path(out_dir, mode), rows)
    return rows
