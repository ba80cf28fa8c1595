"""The four objectives against hand-computed values, independent numpy oracles and their limits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from otterlib.losses import (
    LOSSES,
    OTTER,
    InfoNCE,
    KnowledgeDistillation,
    LabelSmoothing,
    create_loss,
)

# Hand-chosen unit vectors (B = 3, D = 3): student and teacher, image and text.
IMG = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])
TXT = np.array([[0.8, 0.6, 0.0], [0.6, 0.0, 0.8], [0.0, 0.8, 0.6]])
T_IMG = np.array([[0.8, 0.0, 0.6], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
T_TXT = np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.6], [0.0, 0.6, 0.8]])
THETA, THETA_D = 0.5, 1.2  # distinct logit scales e^0.5 and e^1.2, both inside the clamp


# ---------------------------------------------------------------- numpy oracles (explicit loops)
def np_log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    out = np.empty_like(logits)
    for i, row in enumerate(logits):
        shifted = row - row.max()
        out[i] = shifted - math.log(sum(math.exp(x) for x in shifted))
    return out


def np_sims(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.array([[sum(a * b for a, b in zip(r, c)) for c in cols] for r in rows])


def np_hard_ce(logits: np.ndarray) -> float:
    log_p = np_log_softmax_rows(logits)
    return -sum(log_p[i, i] for i in range(len(logits))) / len(logits)


def np_soft_ce(logits: np.ndarray, target: np.ndarray) -> float:
    log_p = np_log_softmax_rows(logits)
    return -float((target * log_p).sum()) / len(logits)


def np_kl(logits: np.ndarray, target: np.ndarray) -> float:
    log_p = np_log_softmax_rows(logits)
    total = 0.0
    for i in range(target.shape[0]):
        for j in range(target.shape[1]):
            if target[i, j] > 0:
                total += target[i, j] * (math.log(target[i, j]) - log_p[i, j])
    return total / target.shape[0]


def np_official_sinkhorn(cost: np.ndarray, lam: float, n_iter: int) -> np.ndarray:
    q = np.exp(-cost / lam)
    q = q / q.sum()
    n_rows, n_cols = q.shape
    for _ in range(n_iter):
        for i in range(n_rows):
            q[i] = q[i] / q[i].sum() / n_rows
        for j in range(n_cols):
            q[:, j] = q[:, j] / q[:, j].sum() / n_cols
    return q


def np_otter_soft(t_img: np.ndarray, t_txt: np.ndarray, lam: float = 0.15, n_iter: int = 5,
                  vv: float = 1.0, tt: float = 1.0, remove_diag: bool = True,
                  official_penalty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Removed diagonal: an infinite cost, or (``official_penalty``) the official −100 on S^{vv} and S^{tt},
    which the coefficients scale."""
    n = len(t_img)
    s_vv, s_tt = np_sims(t_img, t_img), np_sims(t_txt, t_txt)
    s_vt, s_tv = np_sims(t_img, t_txt), np_sims(t_txt, t_img)
    d = np.eye(n) * (100.0 if remove_diag and official_penalty else 0.0)
    removed = np.where(np.eye(n, dtype=bool), np.inf if remove_diag and not official_penalty else 0.0, 0.0)
    out = []
    for cross in (s_vt, s_tv):
        cost = -(vv * (s_vv - d) + tt * (s_tt - d) + cross) + removed
        plan = np_official_sinkhorn(cost, lam, n_iter)
        out.append(plan / plan.sum(axis=1, keepdims=True))
    return out[0], out[1]


def np_softmax_rows(logits: np.ndarray) -> np.ndarray:
    return np.exp(np_log_softmax_rows(logits))


def np_two_term_loss(m_img: np.ndarray, m_txt: np.ndarray, alpha: float) -> tuple[float, float, float]:
    s, s_d = math.exp(THETA), math.exp(THETA_D)
    vt, tv = np_sims(IMG, TXT), np_sims(TXT, IMG)
    contrastive = np_hard_ce(s * vt) + np_hard_ce(s * tv)
    distill = np_kl(s_d * vt, m_img) + np_kl(s_d * tv, m_txt)
    return contrastive, distill, alpha * contrastive + (1 - alpha) * distill


# ---------------------------------------------------------------- helpers
def t64(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def with_scales(loss: torch.nn.Module) -> torch.nn.Module:
    loss = loss.double()
    with torch.no_grad():
        loss.logit_scale.fill_(THETA)
        if hasattr(loss, "distill_logit_scale"):
            loss.distill_logit_scale.fill_(THETA_D)
    return loss


def random_unit(batch: int, dim: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, dim, generator=generator), dim=1).to(dtype)


def clustered_batch(batch: int = 16, dim: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image/text unit embeddings in 4 semantic clusters, captions a noisy view of their image."""
    generator = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(4, dim, generator=generator), dim=1)
    img = F.normalize(centers[torch.arange(batch) % 4] + 0.35 * torch.randn(batch, dim, generator=generator), dim=1)
    txt = F.normalize(img + 0.35 * torch.randn(batch, dim, generator=generator), dim=1)
    return img, txt


# ---------------------------------------------------------------- literal values
def test_infonce_literal_orthonormal() -> None:
    eye = torch.eye(3)
    out = InfoNCE(logit_scale_init=0.0)(eye, eye)  # s = 1, S = I: each row -log(e/(e+2))
    assert out["loss"].item() == pytest.approx(2 * math.log(1 + 2 / math.e), rel=1e-6)
    assert out["distill"].item() == 0.0 and out["contrastive"] is out["loss"]


def test_label_smoothing_literal_orthonormal() -> None:
    eye = torch.eye(3)
    out = LabelSmoothing(epsilon=0.5, logit_scale_init=0.0)(eye, eye)  # target (0.5, 0.25, 0.25)
    assert out["loss"].item() == pytest.approx(2 * (math.log(math.e + 2) - 0.5), rel=1e-6)
    target, _ = LabelSmoothing(epsilon=0.5).targets(eye, eye)
    torch.testing.assert_close(target, torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]))


def test_otter_literal_two_samples() -> None:
    """B = 2 with the diagonal removed: the only off-diagonal match takes all of M̃'s mass."""
    eye = torch.eye(2)
    loss = OTTER(alpha=0.5, logit_scale_init=0.0)
    m_img, m_txt = loss.soft_targets(eye, eye)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert torch.equal(m_img, swap) and torch.equal(m_txt, swap)
    torch.testing.assert_close(loss.targets(eye, eye)[0], torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    out = loss(eye, eye, eye, eye)  # s = s_d = 1, S = I
    assert out["contrastive"].item() == pytest.approx(2 * math.log(1 + math.exp(-1)), rel=1e-6)
    assert out["distill"].item() == pytest.approx(2 * math.log(1 + math.e), rel=1e-6)
    assert out["loss"].item() == pytest.approx(math.log(1 + math.exp(-1)) + math.log(1 + math.e), rel=1e-6)


def test_kd_literal_row() -> None:
    """Teacher S^{vt} row (0.5, 0.49): T_t = 100 gives softmax(50, 49) = (1/(1+e^-1), 1/(1+e))."""
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[0.5, math.sqrt(0.75)], [0.49, math.sqrt(1 - 0.49 ** 2)]], dtype=torch.float64)
    m_img, _ = KnowledgeDistillation(kd_variant="vt").soft_targets(v, t)
    torch.testing.assert_close(m_img[0], torch.tensor([1 / (1 + math.exp(-1)), 1 / (1 + math.e)], dtype=torch.float64))
    m_img, _ = KnowledgeDistillation(kd_variant="vv+tt+vt").soft_targets(v, t)
    gap = (1 + 1 + 0.5) - (0.0 + 0.5 * 0.49 + math.sqrt(0.75 * (1 - 0.49 ** 2)) + 0.49)
    torch.testing.assert_close(m_img[0, 1], torch.tensor(1 / (1 + math.exp(100 * gap)), dtype=torch.float64))


# ---------------------------------------------------------------- hand-chosen B = 3 against the numpy oracles
def test_infonce_and_ls_values_match_numpy() -> None:
    s = math.exp(THETA)
    vt, tv = np_sims(IMG, TXT), np_sims(TXT, IMG)
    out = with_scales(InfoNCE())(t64(IMG), t64(TXT))
    assert out["loss"].item() == pytest.approx(np_hard_ce(s * vt) + np_hard_ce(s * tv), rel=1e-12)
    smooth = np.full((3, 3), 0.3 / 2) + np.eye(3) * (0.7 - 0.15)
    out = with_scales(LabelSmoothing(epsilon=0.3))(t64(IMG), t64(TXT))
    assert out["loss"].item() == pytest.approx(np_soft_ce(s * vt, smooth) + np_soft_ce(s * tv, smooth), rel=1e-12)


@pytest.mark.parametrize("bug_compatible", [False, True])
@pytest.mark.parametrize("remove_diag", [True, False])
@pytest.mark.parametrize(
    ("lam", "n_iter", "vv", "tt"), [(0.15, 5, 1.0, 1.0), (0.5, 2, 0.5, 0.0), (0.05, 4, 1.0, 1.0), (0.5, 3, 0.01, 0.0)],
)
def test_otter_targets_and_loss_match_numpy(bug_compatible: bool, remove_diag: bool, lam: float, n_iter: int,
                                            vv: float, tt: float) -> None:
    loss = with_scales(OTTER(alpha=0.4, sinkhorn_lambda=lam, sinkhorn_iter=n_iter, vv_coef=vv, tt_coef=tt,
                             remove_diag=remove_diag, bug_compatible=bug_compatible))
    exp_img, exp_txt = np_otter_soft(T_IMG, T_TXT, lam, n_iter, vv, tt, remove_diag, official_penalty=bug_compatible)
    m_img, m_txt = loss.soft_targets(t64(T_IMG), t64(T_TXT))
    np.testing.assert_allclose(m_img.numpy(), exp_img, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(m_txt.numpy(), exp_txt, rtol=1e-9, atol=1e-15)
    target_img, target_txt = loss.targets(t64(T_IMG), t64(T_TXT))
    np.testing.assert_allclose(target_img.numpy(), 0.4 * np.eye(3) + 0.6 * exp_img, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(target_txt.numpy(), 0.4 * np.eye(3) + 0.6 * exp_txt, rtol=1e-9, atol=1e-15)
    out = loss(t64(IMG), t64(TXT), t64(T_IMG), t64(T_TXT))
    expected = np_two_term_loss(exp_img, exp_txt, alpha=0.4)
    for key, value in zip(("contrastive", "distill", "loss"), expected):
        assert out[key].item() == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize("variant", ["vt", "vv+tt+vt"])
def test_kd_targets_and_loss_match_numpy(variant: str) -> None:
    loss = with_scales(KnowledgeDistillation(alpha=0.3, teacher_temperature=5.0, kd_variant=variant))
    s_vt, s_tv = np_sims(T_IMG, T_TXT), np_sims(T_TXT, T_IMG)
    if variant == "vv+tt+vt":
        shared = np_sims(T_IMG, T_IMG) + np_sims(T_TXT, T_TXT)
        s_vt, s_tv = shared + s_vt, shared + s_tv
    exp_img, exp_txt = np_softmax_rows(5.0 * s_vt), np_softmax_rows(5.0 * s_tv)
    m_img, m_txt = loss.soft_targets(t64(T_IMG), t64(T_TXT))
    np.testing.assert_allclose(m_img.numpy(), exp_img, rtol=1e-12)
    np.testing.assert_allclose(m_txt.numpy(), exp_txt, rtol=1e-12)
    target_img, _ = loss.targets(t64(T_IMG), t64(T_TXT))
    np.testing.assert_allclose(target_img.numpy(), 0.3 * np.eye(3) + 0.7 * exp_img, rtol=1e-12)
    out = loss(t64(IMG), t64(TXT), t64(T_IMG), t64(T_TXT))
    expected = np_two_term_loss(exp_img, exp_txt, alpha=0.3)
    for key, value in zip(("contrastive", "distill", "loss"), expected):
        assert out[key].item() == pytest.approx(value, rel=1e-10)


def test_two_term_loss_is_soft_ce_minus_entropy_when_scales_agree() -> None:
    img, txt = random_unit(6, 5, 0, torch.float64), random_unit(6, 5, 1, torch.float64)
    t_img, t_txt = clustered_batch(6, 5, seed=2)
    t_img, t_txt = t_img.double(), t_txt.double()
    loss = OTTER(alpha=0.5, logit_scale_init=2.0).double()
    out = loss(img, txt, t_img, t_txt)
    target_img, target_txt = loss.targets(t_img, t_txt)
    m_img, m_txt = loss.soft_targets(t_img, t_txt)
    s = math.exp(2.0)
    ce = (np_soft_ce(s * (img @ txt.T).numpy(), target_img.numpy())
          + np_soft_ce(s * (txt @ img.T).numpy(), target_txt.numpy()))
    entropy = sum(float(-(m * torch.log(m.clamp_min(1e-300))).sum(1).mean()) for m in (m_img, m_txt))
    assert out["loss"].item() == pytest.approx(ce - 0.5 * entropy, rel=1e-9)


# ---------------------------------------------------------------- limits
@pytest.mark.parametrize("name", ["kd", "otter"])
def test_alpha_one_equals_infonce_values_and_gradients(name: str) -> None:
    base = InfoNCE(logit_scale_init=3.0)
    distil = create_loss(name, alpha=1.0, logit_scale_init=3.0)
    t_img, t_txt = clustered_batch(8, 16)
    results = []
    for loss in (base, distil):
        img = random_unit(8, 16, 3).requires_grad_(True)
        txt = random_unit(8, 16, 4).requires_grad_(True)
        out = loss(img, txt, t_img, t_txt)
        out["loss"].backward()
        results.append((out["loss"].detach(), img.grad, txt.grad, loss.logit_scale.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    assert distil.targets(t_img, t_txt)[0].equal(torch.eye(8))


def test_epsilon_zero_label_smoothing_equals_infonce() -> None:
    results = []
    for loss in (InfoNCE(), LabelSmoothing(epsilon=0.0)):
        img = random_unit(8, 16, 3).requires_grad_(True)
        txt = random_unit(8, 16, 4).requires_grad_(True)
        out = loss(img, txt)
        out["loss"].backward()
        results.append((out["loss"].detach(), img.grad, txt.grad, loss.logit_scale.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_large_lambda_otter_plan_tends_to_uniform() -> None:
    """λ → ∞ flattens the plan: without diagonal removal M̃ → 1/N everywhere."""
    t_img, t_txt = clustered_batch(8, 16)
    otter_img, otter_txt = OTTER(alpha=0.5, sinkhorn_lambda=1e5, sinkhorn_iter=20, remove_diag=False).targets(
        t_img, t_txt)
    uniform = 0.5 * torch.eye(8) + 0.5 / 8
    torch.testing.assert_close(otter_img, uniform, rtol=0, atol=1e-5)
    torch.testing.assert_close(otter_txt, uniform, rtol=0, atol=1e-5)
    deviations = [(OTTER(sinkhorn_lambda=lam).targets(t_img, t_txt)[0] - LabelSmoothing(epsilon=0.5).targets(
        t_img, t_txt)[0]).abs().max().item() for lam in (0.15, 0.5, 2.0, 8.0)]
    assert deviations == sorted(deviations, reverse=True) and deviations[0] > 0.1


def test_equidistant_teacher_gives_the_label_smoothing_target() -> None:
    """Teacher embeddings on a regular simplex: every off-diagonal cost is equal, so with the diagonal
    removed the plan is uniform off the diagonal and OTTER's target is LS with ε = 1 − α, for any λ."""
    n = 5
    simplex = torch.eye(n) - 1.0 / n
    simplex = F.normalize(simplex, dim=1)
    ls_img, _ = LabelSmoothing(epsilon=0.7).targets(simplex, simplex)
    for lam in (0.05, 0.15, 1.0):
        otter_img, otter_txt = OTTER(alpha=0.3, sinkhorn_lambda=lam).targets(simplex, simplex)
        torch.testing.assert_close(otter_img, ls_img)
        torch.testing.assert_close(otter_txt, ls_img)


def test_removed_diagonal_is_exactly_zero_and_targets_are_stochastic() -> None:
    t_img, t_txt = clustered_batch(16, 32)
    loss = OTTER()
    for m in loss.soft_targets(t_img, t_txt):
        assert torch.equal(m.diagonal(), torch.zeros(16))
        torch.testing.assert_close(m.sum(1), torch.ones(16))
    for target in loss.targets(t_img, t_txt):
        assert torch.equal(target.diagonal(), torch.full((16,), 0.5))
        torch.testing.assert_close(target.sum(1), torch.ones(16))
    kept, _ = OTTER(remove_diag=False).soft_targets(t_img, t_txt)
    assert kept.diagonal().min() > 0.5  # the self-pair dominates when it is not removed


@pytest.mark.parametrize(("vv", "tt"), [(0.0, 0.0), (0.01, 0.0), (0.0, 2.0), (1.0, 1.0), (-0.5, 1.0)])
def test_removed_diagonal_is_exactly_zero_for_every_coefficient_choice(vv: float, tt: float) -> None:
    """vv = tt = 0 is the vt-only cost ablation. Official code: the −100 penalty is scaled by the coefficients,
    so it vanishes there (kept under ``bug_compatible``, checked against the numpy oracle)."""
    t_img, t_txt = clustered_batch(16, 32)
    for m in OTTER(vv_coef=vv, tt_coef=tt).soft_targets(t_img, t_txt):
        assert torch.equal(m.diagonal(), torch.zeros(16))
        torch.testing.assert_close(m.sum(1), torch.ones(16))
    official, _ = OTTER(vv_coef=vv, tt_coef=tt, bug_compatible=True).soft_targets(t_img.double(), t_txt.double())
    expected, _ = np_otter_soft(t_img.double().numpy(), t_txt.double().numpy(), vv=vv, tt=tt, official_penalty=True)
    np.testing.assert_allclose(official.numpy(), expected, rtol=1e-9, atol=1e-15)
    if vv + tt < 0.5:  # the official penalty 100·(vv + tt) ≤ 1 removes nothing at λ = 0.15, it only damps
        assert official.diagonal().min() > 0


def test_released_kd_target_is_near_one_hot_and_vt_variant_distils() -> None:
    t_img, t_txt = clustered_batch(16, 32)
    released, _ = KnowledgeDistillation(kd_variant="vv+tt+vt").soft_targets(t_img, t_txt)
    initial, _ = KnowledgeDistillation(kd_variant="vt").soft_targets(t_img, t_txt)
    assert released.diagonal().mean() > 0.999
    assert initial.diagonal().mean() < 0.9


def test_single_process_bug_compatible_and_local_ot_are_the_global_solution() -> None:
    t_img, t_txt = clustered_batch(8, 16)
    reference = OTTER().soft_targets(t_img, t_txt)
    for kwargs in ({"bug_compatible": True}, {"global_ot": False}, {"global_ot": False, "bug_compatible": True}):
        for a, b in zip(OTTER(**kwargs).soft_targets(t_img, t_txt), reference):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------- gradients and scales
@pytest.mark.parametrize("name", ["kd", "otter"])
def test_gradients_reach_student_and_both_scales_never_the_teacher(name: str) -> None:
    loss = create_loss(name)
    img = random_unit(8, 16, 3).requires_grad_(True)
    txt = random_unit(8, 16, 4).requires_grad_(True)
    t_img, t_txt = (x.clone().requires_grad_(True) for x in clustered_batch(8, 16))
    out = loss(img, txt, t_img, t_txt)
    assert not loss.soft_targets(t_img, t_txt)[0].requires_grad
    g_nce = torch.autograd.grad(out["contrastive"], [img, txt, loss.logit_scale], retain_graph=True)
    g_kl = torch.autograd.grad(out["distill"], [img, txt, loss.distill_logit_scale], retain_graph=True)
    for grad in (*g_nce, *g_kl):
        assert grad.abs().max() > 0
    out["loss"].backward()
    assert t_img.grad is None and t_txt.grad is None
    assert loss.logit_scale.grad.abs() > 0 and loss.distill_logit_scale.grad.abs() > 0


def test_gathered_columns_carry_no_gradient_by_default() -> None:
    img = random_unit(6, 8, 3).requires_grad_(True)
    txt = random_unit(6, 8, 4).requires_grad_(True)
    scale = math.exp(3.9)
    labels = torch.arange(6)
    for local_column_grad, detach in ((False, True), (True, False)):
        loss = InfoNCE(local_column_grad=local_column_grad)
        got = torch.autograd.grad(loss(img, txt)["loss"], [img, txt])
        cols_t, cols_v = (txt.detach(), img.detach()) if detach else (txt, img)
        ref = F.cross_entropy(scale * img @ cols_t.T, labels) + F.cross_entropy(scale * txt @ cols_v.T, labels)
        for a, b in zip(got, torch.autograd.grad(ref, [img, txt])):
            torch.testing.assert_close(a, b)


def test_scales_are_clamped_and_reported() -> None:
    loss = OTTER(logit_scale_init=5.0)  # exp(5) = 148 -> 100
    assert loss.scales() == pytest.approx({"logit_scale": 100.0, "distill_logit_scale": 100.0})
    assert InfoNCE().scales() == pytest.approx({"logit_scale": math.exp(3.9)})
    img, txt = random_unit(4, 8, 0), random_unit(4, 8, 1)
    loss(img, txt, img, txt)["loss"].backward()
    assert loss.logit_scale.grad == 0 and loss.distill_logit_scale.grad == 0  # clamped: no gradient
    assert InfoNCE(scale_clamp=(1.0, 10.0)).scales()["logit_scale"] == pytest.approx(10.0)
    assert {n for n, _ in OTTER().named_parameters()} == {"logit_scale", "distill_logit_scale"}
    assert [n for n, _ in LabelSmoothing().named_parameters()] == ["logit_scale"]


# ---------------------------------------------------------------- precision
def hard_negative_batch(batch: int = 512, dim: int = 768, group: int = 8,
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher unit embeddings (float32) in groups of ``group`` near-duplicate pairs: within a group
    image-image cosines are ≈ 0.98 and each caption is ≈ 0.99 from its image, so the logits that decide the loss
    differ by less than bf16's resolution near 1 (2^-8)."""
    generator = torch.Generator().manual_seed(seed)

    def jitter(x: torch.Tensor, scale: float) -> torch.Tensor:
        return F.normalize(x + scale * torch.randn(x.shape, generator=generator) / dim ** 0.5, dim=1)

    centers = F.normalize(torch.randn(batch // group, dim, generator=generator), dim=1)
    img = jitter(centers.repeat_interleave(group, 0), 0.15)
    txt = jitter(img, 0.15)
    return img, txt, jitter(img, 0.05), jitter(txt, 0.05)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("infonce", {}), ("infonce", {"local_column_grad": True}), ("label_smoothing", {}), ("kd", {}),
     ("kd", {"kd_variant": "vv+tt+vt"}), ("otter", {}), ("otter", {"local_column_grad": True})],
)
def test_gradients_under_bf16_autocast_equal_float32(name: str, kwargs: dict[str, object]) -> None:
    """Float32 embeddings, B = 512, D = 768, hard negatives: every gradient (embeddings and temperatures) under
    CPU bf16 autocast is the float32 one to < 1e-3 relative (norm of the difference / norm of the float32 one)."""
    img, txt, t_img, t_txt = hard_negative_batch()
    results = []
    for amp in (False, True):
        loss = create_loss(name, **kwargs)
        a, b = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=amp):
            out = loss(a, b, t_img, t_txt)
        out["loss"].backward()
        assert all(v.dtype == torch.float32 for v in out.values())
        results.append({"loss": out["loss"].detach(), "img": a.grad, "txt": b.grad,
                        **{n: p.grad for n, p in loss.named_parameters()}})
    reference, autocast = results
    for key, expected in reference.items():
        error = float((autocast[key] - expected).norm() / expected.norm())
        assert error < 1e-3, f"{key}: relative error {error:.2e}"


def test_teacher_targets_ignore_autocast_and_stay_finite() -> None:
    t_img, t_txt = clustered_batch(32, 64)
    img, txt = random_unit(32, 64, 3), random_unit(32, 64, 4)
    for loss in (OTTER(), KnowledgeDistillation(), KnowledgeDistillation(kd_variant="vv+tt+vt")):
        reference = loss.soft_targets(t_img, t_txt)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            under = loss.soft_targets(t_img, t_txt)
            out = loss(img.bfloat16(), txt.bfloat16(), t_img.bfloat16(), t_txt.bfloat16())
        for a, b in zip(under, reference):
            assert a.dtype == torch.float32
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert all(torch.isfinite(v) for v in out.values())
        for m in loss.soft_targets(t_img.half(), t_txt.half()):
            assert m.dtype == torch.float32 and torch.isfinite(m).all()
            torch.testing.assert_close(m.sum(1), torch.ones(32))
        half_out = loss(img.half(), txt.half(), t_img.half(), t_txt.half())
        assert all(torch.isfinite(v) for v in half_out.values())


# ---------------------------------------------------------------- factory and validation
def test_registry_and_factory() -> None:
    assert LOSSES == {"infonce": InfoNCE, "label_smoothing": LabelSmoothing, "kd": KnowledgeDistillation,
                      "otter": OTTER}
    assert [create_loss(n).needs_teacher for n in LOSSES] == [False, False, True, True]
    loss = create_loss("otter", alpha=0.3, sinkhorn_lambda=0.1, sinkhorn_iter=4, vv_coef=0.0, tt_coef=2.0,
                       remove_diag=False, global_ot=False, bug_compatible=True, logit_scale_init=2.0,
                       scale_clamp=(0.5, 50.0))
    assert (loss.alpha, loss.sinkhorn_lambda, loss.sinkhorn_iter, loss.vv_coef, loss.tt_coef, loss.remove_diag,
            loss.global_ot, loss.bug_compatible, loss.scale_clamp) == (0.3, 0.1, 4, 0.0, 2.0, False, False, True,
                                                                       (0.5, 50.0))
    kd = create_loss("kd")
    assert (kd.alpha, kd.teacher_temperature, kd.kd_variant) == (0.5, 100.0, "vt")
    otter = create_loss("otter")
    assert (otter.alpha, otter.sinkhorn_lambda, otter.sinkhorn_iter, otter.remove_diag, otter.global_ot,
            otter.bug_compatible) == (0.5, 0.15, 5, True, True, False)
    assert create_loss("label_smoothing").epsilon == 0.5
    with pytest.raises(ValueError, match="infonce"):
        create_loss("clip")
    with pytest.raises(ValueError, match="sinkhorn_lambda"):
        create_loss("kd", sinkhorn_lambda=0.15)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("otter", {"alpha": 1.5}), ("kd", {"kd_variant": "tt"}), ("kd", {"teacher_temperature": 0.0}),
     ("label_smoothing", {"epsilon": 1.0}), ("otter", {"sinkhorn_lambda": 0.0}), ("otter", {"sinkhorn_iter": -1}),
     ("infonce", {"scale_clamp": (100.0, 1.0)})],
)
def test_bad_constructor_arguments_raise(name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        create_loss(name, **kwargs)


def test_bad_inputs_raise() -> None:
    img, txt = random_unit(4, 8, 0), random_unit(4, 8, 1)
    with pytest.raises(ValueError, match="needs teacher"):
        OTTER()(img, txt)
    with pytest.raises(ValueError, match="same shape"):
        InfoNCE()(img, txt[:3])
    with pytest.raises(ValueError, match="teacher batch"):
        KnowledgeDistillation()(img, txt, img[:2], txt[:2])
    with pytest.raises(ValueError, match="at least 2"):
        OTTER().soft_targets(img[:1], txt[:1])


@pytest.mark.parametrize("method", ["kd", "otter"])
def test_precomputed_soft_targets_give_the_same_terms(method):
    """The trainer computes the teacher's soft targets as a phase of their own and passes them in."""
    torch.manual_seed(0)
    img, txt, t_img, t_txt = (torch.nn.functional.normalize(torch.randn(6, 8), dim=-1) for _ in range(4))
    loss = create_loss(method)
    direct = loss(img, txt, t_img, t_txt)
    given = loss(img, txt, soft_targets=loss.soft_targets(t_img, t_txt))
    assert {k: float(v) for k, v in direct.items()} == {k: float(v) for k, v in given.items()}
    with pytest.raises(ValueError, match="either the teacher embeddings or soft_targets"):
        loss(img, txt, t_img, t_txt, soft_targets=loss.soft_targets(t_img, t_txt))
    with pytest.raises(ValueError, match="do not match the student similarities"):
        loss(img, txt, soft_targets=loss.soft_targets(t_img[:4], t_txt[:4]))
