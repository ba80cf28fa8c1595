"""Two gloo processes on CPU: targets, losses and gradients on 2 ranks × B equal the single-process 2B batch.

The bug-compatible switch reproduces the official ``torch.eye(B, N)``: on rank 1 it must differ from
the fixed targets and equal a POT-solved problem whose removed "diagonal" sits at columns 0..B−1.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import ot
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from otterlib.distributed import all_gather_local_grad, all_gather_no_grad, get_rank, get_world_size
from otterlib.losses import create_loss

WORLD, BATCH, DIM = 2, 4, 8
CONFIGS: dict[str, tuple[str, dict[str, object]]] = {
    "infonce": ("infonce", {}),
    "label_smoothing": ("label_smoothing", {}),
    "kd_vt": ("kd", {"kd_variant": "vt"}),
    "kd_released": ("kd", {"kd_variant": "vv+tt+vt"}),
    "otter": ("otter", {}),
    "otter_bug": ("otter", {"bug_compatible": True}),
    "otter_local": ("otter", {"global_ot": False}),
    "otter_local_bug": ("otter", {"global_ot": False, "bug_compatible": True}),
}


def _global_batch() -> dict[str, torch.Tensor]:
    """2B samples in 2 clusters, so that positives of rank-0 and rank-1 samples have close look-alikes."""
    generator = torch.Generator().manual_seed(0)
    n = WORLD * BATCH
    centers = F.normalize(torch.randn(2, DIM, generator=generator), dim=1)
    base = centers[torch.arange(n) % 2]

    def unit(scale: float) -> torch.Tensor:
        return F.normalize(base + scale * torch.randn(n, DIM, generator=generator), dim=1).double()

    return {"img": unit(0.8), "txt": unit(0.8), "t_img": unit(0.4), "t_txt": unit(0.4)}


def _run(batch: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Targets, loss terms and gradients of every config on this process's (B, D) rows."""
    results = {}
    for key, (name, kwargs) in CONFIGS.items():
        loss = create_loss(name, **kwargs).double()
        img = batch["img"].clone().requires_grad_(True)
        txt = batch["txt"].clone().requires_grad_(True)
        target_img, target_txt = loss.targets(batch["t_img"], batch["t_txt"])
        out = loss(img, txt, batch["t_img"], batch["t_txt"])
        out["loss"].backward()
        results[key] = {
            "target_img": target_img, "target_txt": target_txt, "img_grad": img.grad, "txt_grad": txt.grad,
            **{k: v.detach() for k, v in out.items()},
            **{f"grad_{n}": p.grad for n, p in loss.named_parameters()},
        }
    return results


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        local = {k: v[rows] for k, v in _global_batch().items()}
        gathered = all_gather_no_grad(local["img"].clone().requires_grad_(True))
        leaf = local["img"].clone().requires_grad_(True)
        weights = torch.arange(WORLD * BATCH, dtype=torch.float64)[:, None]
        (weights * all_gather_local_grad(leaf)).sum().backward()  # d/d leaf picks this rank's row weights
        plumbing = {
            "rank": torch.tensor(get_rank()), "world": torch.tensor(get_world_size()),
            "gathered": gathered, "gathered_requires_grad": torch.tensor(gathered.requires_grad),
            "local_grad": leaf.grad,
        }
        torch.save({"plumbing": plumbing, "losses": _run(local)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _pot_otter_rows(batch: dict[str, torch.Tensor], diag_cols: list[int], rows: slice,
                    global_ot: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Oracle: official cost with D at (row, diag_cols[row]), POT in the official order, row-normalised."""
    v, t = batch["t_img"], batch["t_txt"]
    row_idx = range(WORLD * BATCH) if global_ot else range(rows.start, rows.stop)
    mask = torch.zeros(len(row_idx), WORLD * BATCH, dtype=torch.float64)
    for k, g in enumerate(row_idx):
        mask[k, diag_cols[g]] = 100.0
    rv, rt = v[list(row_idx)], t[list(row_idx)]
    shared = (rv @ v.T - mask) + (rt @ t.T - mask)
    out = []
    for cross in (rv @ t.T, rt @ v.T):
        cost = -(shared + cross)
        a = torch.full((cost.shape[0],), 1.0 / cost.shape[0], dtype=torch.float64)
        b = torch.full((cost.shape[1],), 1.0 / cost.shape[1], dtype=torch.float64)
        plan = ot.sinkhorn(b, a, cost.T, 0.15, numItermax=5, stopThr=0.0, warn=False).T
        plan = plan / plan.sum(1, keepdim=True)
        out.append(plan[rows] if global_ot else plan)
    return out[0], out[1]


@pytest.mark.slow
def test_two_ranks_equal_the_single_process_global_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    full = _global_batch()
    single = _run(full)

    for r, result in enumerate(ranks):
        plumbing = result["plumbing"]
        assert plumbing["rank"] == r and plumbing["world"] == WORLD
        torch.testing.assert_close(plumbing["gathered"], full["img"], rtol=0, atol=0)
        assert not plumbing["gathered_requires_grad"]
        expected_grad = torch.arange(r * BATCH, (r + 1) * BATCH, dtype=torch.float64)[:, None].expand(BATCH, DIM)
        torch.testing.assert_close(plumbing["local_grad"], expected_grad, rtol=0, atol=0)

    # everything that is a row slice of the global problem: targets, gradients and the rank-mean of the losses
    for key in ("infonce", "label_smoothing", "kd_vt", "kd_released", "otter"):
        for r, result in enumerate(ranks):
            rows = slice(r * BATCH, (r + 1) * BATCH)
            got = result["losses"][key]
            for name in ("target_img", "target_txt"):
                torch.testing.assert_close(got[name], single[key][name][rows], rtol=1e-10, atol=1e-12)
            # DDP averages parameter gradients over ranks: rank gradients / W = rows of the global-batch gradient
            for name in ("img_grad", "txt_grad"):
                torch.testing.assert_close(got[name] / WORLD, single[key][name][rows], rtol=1e-9, atol=1e-12)
        for name in ("contrastive", "distill", "loss", "grad_logit_scale", "grad_distill_logit_scale"):
            if name in single[key]:
                mean = sum(res["losses"][key][name] for res in ranks) / WORLD
                torch.testing.assert_close(mean, single[key][name], rtol=1e-9, atol=1e-12)

    true_diag = list(range(WORLD * BATCH))
    bug_diag = [g % BATCH for g in range(WORLD * BATCH)]
    one_hot = torch.eye(BATCH, WORLD * BATCH, dtype=torch.float64)
    for r, result in enumerate(ranks):
        rows = slice(r * BATCH, (r + 1) * BATCH)
        positives = one_hot.roll(r * BATCH, dims=1)
        for key, global_ot in (("otter", True), ("otter_local", False)):
            fixed = result["losses"][key]
            bug = result["losses"][key + "_bug"]
            half = torch.full((BATCH,), 0.5, dtype=torch.float64)
            names = ("target_img", "target_txt")
            for name, oracle in zip(names, _pot_otter_rows(full, true_diag, rows, global_ot)):
                torch.testing.assert_close(fixed[name], 0.5 * positives + 0.5 * oracle, rtol=1e-9, atol=1e-12)
                assert torch.equal(fixed[name][positives.bool()], half)
            for name, oracle in zip(names, _pot_otter_rows(full, bug_diag, rows, global_ot)):
                torch.testing.assert_close(bug[name], 0.5 * positives + 0.5 * oracle, rtol=1e-9, atol=1e-12)
            if r == 0:
                # rank 0's own diagonal is right; with global OT the other ranks' misplaced rows still shift its plan
                assert torch.equal(bug["target_img"][positives.bool()], half)
                if not global_ot:
                    torch.testing.assert_close(bug["target_img"], fixed["target_img"], rtol=0, atol=0)
            else:
                # the true positive stays in the cost and the OT part piles mass onto it (fixed: exactly 0.5)
                assert (bug["target_img"] - fixed["target_img"]).abs().max() > 0.1
                assert bug["target_img"][positives.bool()].min() > 0.6
    assert math.isfinite(float(ranks[1]["losses"]["otter_bug"]["loss"]))
    assert np.isfinite(ranks[1]["losses"]["otter_local_bug"]["target_img"].numpy()).all()
