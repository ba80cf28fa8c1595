"""The four training objectives of OTTER's comparison: InfoNCE, label smoothing, KD and OTTER.

Every objective is a small ``nn.Module`` holding its learnable logit scale(s) (optimise
``model.parameters()`` together with ``loss.parameters()``). Inputs are L2-normalised embeddings:
the student's ``img``/``txt`` (B, D) and, for KD and OTTER, the teacher's (B, D_t). As in the official
code, logits are the B local rows against the N = W·B columns all-gathered from the W ranks; the
positive of local row ``i`` is column ``rank·B + i``; gathered columns carry no gradient (see
:mod:`otterlib.distributed`).

All objectives train toward a row-stochastic target matrix (``targets``), in the unified form
``α·I + (1 − α)·M̃``:

===============  ===========================================  ====================================
objective        M̃ (B×N rows, of the local samples)           α
===============  ===========================================  ====================================
InfoNCE          (none)                                        1
label smoothing  1/(N−1) off the positive                      1 − ε (ε = 0.5 by default)
KD               softmax(T_t · S_T) of the EMA teacher         0.5
OTTER            row-normalised Sinkhorn plan of the teacher   0.5
===============  ===========================================  ====================================

KD and OTTER keep the official two-term loss
``α·L_NCE + (1 − α)·[KL(M̃^v ‖ softmax(s_d S^{vt})) + KL(M̃^t ‖ softmax(s_d S^{tv}))]`` with a second
learnable scale ``s_d``; it equals the soft cross-entropy to ``targets`` minus ``(1 − α)·H(M̃)`` when
``s_d = s``. See ``docs/losses.md`` for every constant and choice.
"""
from __future__ import annotations

import abc
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from otterlib.distributed import all_gather_local_grad, all_gather_no_grad, get_rank, get_world_size

LOGIT_SCALE_INIT: float = 3.9
"""Initial θ of every learnable scale ``s = clamp(exp(θ), 1, 100)``; exp(3.9) ≈ 49.4 (official)."""
SCALE_CLAMP: tuple[float, float] = (1.0, 100.0)
"""Clamp of ``exp(θ)`` for both learnable scales (released code)."""
DIAG_PENALTY: float = 100.0
"""Official diagonal removal (``bug_compatible``): subtracted from each of the vv and tt teacher similarities on
the positive pair (``c_vv·(S^{vv} − 100·D) + c_tt·(S^{tt} − 100·D)``), i.e. +200 cost for c_vv = c_tt = 1, so
``exp(−200/λ)`` is exactly 0. Scaled by the coefficients, it vanishes for c_vv = c_tt = 0; the default removal
is an infinite cost instead (see :func:`teacher_costs`)."""
KD_VARIANTS: tuple[str, ...] = ("vt", "vv+tt+vt")
"""KD teacher similarity: ``vt`` = S^{vt} (initial commit ``0d3c6a0``, the default), ``vv+tt+vt`` =
S^{vv} + S^{tt} + S^{vt} (released code ``31ba0a5``, a near one-hot target at T_t = 100)."""


def sinkhorn(cost: torch.Tensor, eps: float, n_iter: int) -> torch.Tensor:
    """Entropic OT plan of the official Sinkhorn–Knopp with uniform marginals (no gradient).

    ``cost``: (M, N), any float dtype. Computes ``Q = exp(−C/eps)``, ``Q /= ΣQ`` and then ``n_iter`` times
    "rows to sum 1/M, then columns to sum 1/N", so the column marginals are exact after every iteration.
    Returns the (M, N) plan (total mass 1, NOT row-normalised) in float32 (float64 for float64 input),
    whatever the autocast state. Implemented with vector scalings ``diag(u)·K·diag(v)`` on
    ``K = exp((min C − C)/eps)``: the shift by the matrix minimum leaves the plan unchanged and keeps
    ``K ≤ 1``, so fp16/bf16 costs cannot overflow, and entries more than ~104·eps above the minimum in
    float32 (~745·eps in float64), e.g. the +200 diagonal, are exact zeros. ``+inf`` costs are allowed
    (plan 0); NaN or ``−inf`` are not. A row or column made only of such entries gives NaN (the costs of
    unit embeddings span at most 6, so only a removed diagonal can do this, see :class:`OTTER`).
    ``n_iter = 0`` returns ``K/ΣK``.
    """
    if cost.dim() != 2:
        raise ValueError(f"sinkhorn expects a 2-D (M, N) cost matrix, got shape {tuple(cost.shape)}")
    if not eps > 0:
        raise ValueError(f"sinkhorn eps (lambda) must be > 0, got {eps}")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"sinkhorn n_iter must be an int >= 0, got {n_iter!r}")
    with torch.no_grad(), torch.autocast(device_type=cost.device.type, enabled=False):
        c = _upcast(cost.detach())
        kernel = torch.exp((c.min() - c) / eps)
        if n_iter == 0:
            return kernel / kernel.sum()
        n_rows, n_cols = kernel.shape
        v = torch.ones(n_cols, dtype=kernel.dtype, device=kernel.device)
        for _ in range(n_iter):
            u = (1.0 / n_rows) / (kernel @ v)
            v = (1.0 / n_cols) / (kernel.T @ u)
        return u[:, None] * kernel * v[None, :]


def teacher_costs(
    img_rows: torch.Tensor,
    txt_rows: torch.Tensor,
    img_cols: torch.Tensor,
    txt_cols: torch.Tensor,
    vv_coef: float,
    tt_coef: float,
    diag_cols: torch.Tensor | None,
    official_penalty: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """OTTER cost matrices of the teacher embeddings (official ``compute_dist_loss``).

    ``img_rows``/``txt_rows``: (R, D) row samples; ``img_cols``/``txt_cols``: (N, D) column samples;
    ``diag_cols``: (R,) long column of each row's removed "diagonal" (None: nothing removed). Returns
    ``C^v = −(c_vv·S^{vv} + c_tt·S^{tt} + S^{vt})`` and the same with ``S^{tv}`` for ``C^t``, both (R, N) in
    the dtype of the inputs, with ``+inf`` at ``(r, diag_cols[r])``: the plan is exactly 0 there whatever
    the coefficients. ``official_penalty`` instead subtracts ``100·(c_vv + c_tt)`` there (``S − 100·D`` on
    the vv and tt terms, :data:`DIAG_PENALTY`), which removes nothing when c_vv = c_tt = 0. When the rows
    are the columns (the same tensors: global OT), ``S^{tv} = (S^{vt})ᵀ`` saves one of the four matmuls.
    """
    shared = vv_coef * (img_rows @ img_cols.T) + tt_coef * (txt_rows @ txt_cols.T)
    if diag_cols is not None:
        rows = torch.arange(shared.shape[0], device=shared.device)
        if official_penalty:
            shared[rows, diag_cols] -= DIAG_PENALTY * (vv_coef + tt_coef)
        else:
            shared[rows, diag_cols] = -math.inf  # cost +inf in C^v and C^t (the similarities are finite)
    sim_vt = img_rows @ txt_cols.T
    sim_tv = sim_vt.T if img_rows is img_cols and txt_rows is txt_cols else txt_rows @ img_cols.T
    return -(shared + sim_vt), -(shared + sim_tv)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float64 stays float64, every other dtype becomes float32."""
    return x if x.dtype == torch.float64 else x.float()


def _kl_batchmean(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``nn.KLDivLoss(reduction="batchmean")(log_softmax(logits), target)``: Σ_ij t_ij·(log t_ij − log p_ij) / B."""
    log_prob = F.log_softmax(logits, dim=1)
    return F.kl_div(log_prob, target.to(log_prob.dtype), reduction="batchmean")


def _check_pair(img: torch.Tensor, txt: torch.Tensor, role: str) -> None:
    if img.dim() != 2 or img.shape != txt.shape:
        raise ValueError(
            f"{role} image and text embeddings must both be (B, D) with the same shape, got "
            f"{tuple(img.shape)} and {tuple(txt.shape)}"
        )
    if img.shape[0] == 0:
        raise ValueError(f"{role} embeddings are an empty batch")


def _check_probability(value: float, name: str, upper_open: bool = False) -> float:
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {value}")
    return float(value)


class ContrastiveObjective(nn.Module, abc.ABC):
    """Shared plumbing: gathered student similarities, positives and the learnable InfoNCE scale.

    ``logit_scale`` is θ with ``s = clamp(exp(θ), *scale_clamp)`` (official ``ContrastiveLoss.T``).
    ``local_column_grad=True`` lets this rank's own gathered columns keep their gradient (open_clip's
    gather); the default ``False`` is the official one, where no gathered column carries gradient.
    """

    needs_teacher: bool = False

    def __init__(
        self,
        logit_scale_init: float = LOGIT_SCALE_INIT,
        scale_clamp: tuple[float, float] = SCALE_CLAMP,
        local_column_grad: bool = False,
    ) -> None:
        super().__init__()
        low, high = (float(v) for v in scale_clamp)
        if not 0.0 <= low < high:
            raise ValueError(f"scale_clamp must be (low, high) with 0 <= low < high, got {scale_clamp}")
        self.scale_clamp: tuple[float, float] = (low, high)
        self.local_column_grad: bool = local_column_grad
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))

    def _scale(self, theta: torch.Tensor) -> torch.Tensor:
        return theta.exp().clamp(*self.scale_clamp)

    def scales(self) -> dict[str, float]:
        """Current clamped multiplicative scales (for logging), e.g. ``{"logit_scale": 49.4}``."""
        return {"logit_scale": float(self._scale(self.logit_scale.detach()))}

    def student_similarities(self, img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities ``S^{vt} = img·txt_allᵀ`` and ``S^{tv} = txt·img_allᵀ``, both (B, N), unscaled.

        Float32 (float64 stays) with autocast disabled, whatever the caller's autocast state: the embeddings
        (bf16 under autocast on GPU) are upcast before the product, so near-1 cosines are not rounded to bf16's
        2^-8 before the scale (≈ 50) multiplies them. Gradients flow back to the embeddings in their own dtype.
        """
        gather = all_gather_local_grad if self.local_column_grad else all_gather_no_grad
        with torch.autocast(device_type=img.device.type, enabled=False):
            img, txt = _upcast(img), _upcast(txt)
            return img @ gather(txt).T, txt @ gather(img).T

    @staticmethod
    def positives(batch: int, device: torch.device) -> torch.Tensor:
        """(B,) long column of each local row's positive: ``rank·B + i``."""
        offset = get_rank() * batch
        return torch.arange(offset, offset + batch, device=device)

    @classmethod
    def one_hot(cls, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, N) float matrix with 1 at each local row's positive column."""
        out = torch.zeros(batch, batch * get_world_size(), device=device, dtype=dtype)
        out[torch.arange(batch, device=device), cls.positives(batch, device)] = 1.0
        return out

    def infonce(self, sim_img: torch.Tensor, sim_txt: torch.Tensor) -> torch.Tensor:
        """Official bidirectional InfoNCE: CE(s·S^{vt}) + CE(s·S^{tv}), each averaged over the B rows, SUMMED."""
        scale = self._scale(self.logit_scale)
        labels = self.positives(sim_img.shape[0], sim_img.device)
        return F.cross_entropy(scale * sim_img, labels) + F.cross_entropy(scale * sim_txt, labels)

    @abc.abstractmethod
    def targets(self, teacher_img: torch.Tensor, teacher_txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) row-stochastic targets of the image and text rows, from the LOCAL (B, D) teacher embeddings."""

    def forward(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        teacher_img: torch.Tensor | None = None,
        teacher_txt: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms ``{"contrastive", "distill", "loss"}`` (float32 scalars; float64 for float64 input) of (B, D)
        L2-normalised embeddings.

        Similarities, scaled logits, cross-entropies and KL run in float32 with autocast disabled, whatever the
        caller's autocast state (teacher targets too, see ``targets``); only the embeddings may be bf16.
        """
        _check_pair(img, txt, "student")
        with torch.autocast(device_type=img.device.type, enabled=False):
            return self.loss_terms(*self.student_similarities(img, txt), teacher_img, teacher_txt)

    @abc.abstractmethod
    def loss_terms(
        self,
        sim_img: torch.Tensor,
        sim_txt: torch.Tensor,
        teacher_img: torch.Tensor | None,
        teacher_txt: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """:meth:`forward`'s terms from the (B, N) float32 :meth:`student_similarities` (autocast disabled)."""


class InfoNCE(ContrastiveObjective):
    """Bidirectional InfoNCE (official ``HardContrastiveLoss``, both directions summed).

    ``loss = contrastive = CE(s·S^{vt}, I) + CE(s·S^{tv}, I)``; ``distill`` is 0. Teacher inputs of
    ``forward`` are ignored; ``targets`` uses its inputs only for the batch size and device.
    """

    def __init__(
        self,
        logit_scale_init: float = LOGIT_SCALE_INIT,
        scale_clamp: tuple[float, float] = SCALE_CLAMP,
        local_column_grad: bool = False,
    ) -> None:
        super().__init__(logit_scale_init, scale_clamp, local_column_grad)

    def targets(self, teacher_img: torch.Tensor, teacher_txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-hot (B, N) rows at the positives, for both directions."""
        _check_pair(teacher_img, teacher_txt, "target")
        target = self.one_hot(teacher_img.shape[0], teacher_img.device, _upcast(teacher_img).dtype)
        return target, target.clone()

    def loss_terms(
        self,
        sim_img: torch.Tensor,
        sim_txt: torch.Tensor,
        teacher_img: torch.Tensor | None,
        teacher_txt: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """``{"contrastive", "distill" (0), "loss"}``; the teacher embeddings are ignored."""
        contrastive = self.infonce(sim_img, sim_txt)
        return {"contrastive": contrastive, "distill": contrastive.new_zeros(()), "loss": contrastive}


class LabelSmoothing(ContrastiveObjective):
    """Label-smoothed InfoNCE (official ``SmoothContrastiveLoss``): target 1−ε on the positive, ε/(N−1) elsewhere.

    ``loss = contrastive = Σ_{directions} −(1/B) Σ_ij T_ij log softmax(s·S)_ij`` (= the official KL + entropy);
    ``distill`` is 0. ``epsilon`` defaults to 0.5: the official ``train_LS.sh`` passes no ε (so it trains
    plain InfoNCE) and the README's ε is unknown; 0.5 makes LS the unified form ``α·I + (1−α)·M̃`` with
    the same α = 0.5 as KD and OTTER and a uniform off-diagonal M̃, i.e. exactly what OTTER's target
    becomes as λ → ∞. ``epsilon = 0`` is InfoNCE.
    """

    def __init__(
        self,
        epsilon: float = 0.5,
        logit_scale_init: float = LOGIT_SCALE_INIT,
        scale_clamp: tuple[float, float] = SCALE_CLAMP,
        local_column_grad: bool = False,
    ) -> None:
        super().__init__(logit_scale_init, scale_clamp, local_column_grad)
        self.epsilon: float = _check_probability(epsilon, "label smoothing epsilon", upper_open=True)

    def targets(self, teacher_img: torch.Tensor, teacher_txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Smoothed (B, N) rows for both directions; the inputs give only the batch size and device."""
        _check_pair(teacher_img, teacher_txt, "target")
        target = self._smoothed(teacher_img.shape[0], teacher_img.device, _upcast(teacher_img).dtype)
        return target, target.clone()

    def _smoothed(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(B, N) rows: 1 − ε at each local row's positive, ε/(N − 1) elsewhere."""
        n_cols = batch * get_world_size()
        if n_cols < 2 and self.epsilon > 0:
            raise ValueError("label smoothing needs a global batch of at least 2 samples")
        one_hot = self.one_hot(batch, device, dtype)
        off = self.epsilon / (n_cols - 1) if n_cols > 1 else 0.0
        return one_hot * (1.0 - self.epsilon) + (1.0 - one_hot) * off

    def loss_terms(
        self,
        sim_img: torch.Tensor,
        sim_txt: torch.Tensor,
        teacher_img: torch.Tensor | None,
        teacher_txt: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """``{"contrastive", "distill" (0), "loss"}``; the teacher embeddings are ignored."""
        target = self._smoothed(sim_img.shape[0], sim_img.device, sim_img.dtype)
        scale = self._scale(self.logit_scale)
        contrastive = (-(target * F.log_softmax(scale * sim_img, dim=1)).sum(1).mean()
                       - (target * F.log_softmax(scale * sim_txt, dim=1)).sum(1).mean())
        return {"contrastive": contrastive, "distill": contrastive.new_zeros(()), "loss": contrastive}


class DistillationObjective(ContrastiveObjective):
    """Shared two-term loss of KD and OTTER (official ``DistillationModel``).

    ``contrastive = L_NCE`` (bidirectional, summed, scale ``s``), ``distill = KL(M̃^v ‖ softmax(s_d·S^{vt}))
    + KL(M̃^t ‖ softmax(s_d·S^{tv}))`` (``KLDivLoss(reduction="batchmean")``, own learnable scale
    ``s_d = clamp(exp(θ_d), *scale_clamp)``, θ_d₀ = ``logit_scale_init``), ``loss = α·contrastive +
    (1 − α)·distill``. The reported ``contrastive`` and ``distill`` are unweighted. Subclasses define
    the teacher target ``soft_targets`` (computed under ``no_grad`` in float32, teacher detached).
    """

    needs_teacher: bool = True

    def __init__(
        self,
        alpha: float = 0.5,
        logit_scale_init: float = LOGIT_SCALE_INIT,
        scale_clamp: tuple[float, float] = SCALE_CLAMP,
        local_column_grad: bool = False,
    ) -> None:
        super().__init__(logit_scale_init, scale_clamp, local_column_grad)
        self.alpha: float = _check_probability(alpha, "alpha")
        self.distill_logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))

    def scales(self) -> dict[str, float]:
        """``{"logit_scale": s, "distill_logit_scale": s_d}``, clamped (for logging)."""
        return {**super().scales(), "distill_logit_scale": float(self._scale(self.distill_logit_scale.detach()))}

    @abc.abstractmethod
    def soft_targets(
        self, teacher_img: torch.Tensor, teacher_txt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """M̃^v, M̃^t: (B, N) row-stochastic, no gradient, from the LOCAL (B, D_t) teacher embeddings."""

    def targets(self, teacher_img: torch.Tensor, teacher_txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``α·I + (1 − α)·M̃`` for both directions, (B, N), with I one-hot at the true positives."""
        m_img, m_txt = self.soft_targets(teacher_img, teacher_txt)
        one_hot = self.one_hot(m_img.shape[0], m_img.device, m_img.dtype)
        mix = self.alpha * one_hot
        return mix + (1.0 - self.alpha) * m_img, mix + (1.0 - self.alpha) * m_txt

    def forward(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        teacher_img: torch.Tensor | None = None,
        teacher_txt: torch.Tensor | None = None,
        *,
        soft_targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """:meth:`ContrastiveObjective.forward`, or, given ``soft_targets`` = (M̃^v, M̃^t) from :meth:`soft_targets`
        computed beforehand (the trainer times them as a phase of their own), the same terms without the teacher
        embeddings. Both ways give identical values."""
        if soft_targets is None:
            return super().forward(img, txt, teacher_img, teacher_txt)
        if teacher_img is not None or teacher_txt is not None:
            raise ValueError("pass either the teacher embeddings or soft_targets, not both")
        _check_pair(img, txt, "student")
        with torch.autocast(device_type=img.device.type, enabled=False):
            return self.distillation_terms(*self.student_similarities(img, txt), *soft_targets)

    def loss_terms(
        self,
        sim_img: torch.Tensor,
        sim_txt: torch.Tensor,
        teacher_img: torch.Tensor | None,
        teacher_txt: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """``{"contrastive", "distill", "loss"}`` from the student similarities and the (B, D_t) teacher embeddings."""
        if teacher_img is None or teacher_txt is None:
            raise ValueError(f"{type(self).__name__} needs teacher_img and teacher_txt (see needs_teacher)")
        _check_pair(teacher_img, teacher_txt, "teacher")
        if teacher_img.shape[0] != sim_img.shape[0]:
            raise ValueError(
                f"teacher batch ({teacher_img.shape[0]}) differs from student batch ({sim_img.shape[0]}); "
                "embed the same samples with both"
            )
        return self.distillation_terms(sim_img, sim_txt, *self.soft_targets(teacher_img, teacher_txt))

    def distillation_terms(
        self, sim_img: torch.Tensor, sim_txt: torch.Tensor, m_img: torch.Tensor, m_txt: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"contrastive", "distill", "loss"}`` from the (B, N) float32 student similarities and the (B, N) soft
        targets M̃^v, M̃^t (autocast disabled by the caller)."""
        if m_img.shape != sim_img.shape or m_txt.shape != sim_txt.shape:
            raise ValueError(f"soft targets {tuple(m_img.shape)}, {tuple(m_txt.shape)} do not match the student "
                             f"similarities {tuple(sim_img.shape)}; compute them from the same batch")
        contrastive = self.infonce(sim_img, sim_txt)
        scale = self._scale(self.distill_logit_scale)
        distill = _kl_batchmean(scale * sim_img, m_img) + _kl_batchmean(scale * sim_txt, m_txt)
        loss = self.alpha * contrastive + (1.0 - self.alpha) * distill
        return {"contrastive": contrastive, "distill": distill, "loss": loss}


class KnowledgeDistillation(DistillationObjective):
    """EMA self-distillation (KD): ``M̃ = softmax(T_t · S_T)`` of the teacher, no OT.

    ``kd_variant`` picks the teacher similarity S_T (image rows; text rows use S^{tv}):

    - ``"vt"`` (default, initial commit ``0d3c6a0``): ``S_T = S^{vt}``. This is the variant that
      distils: the target spreads mass over captions the teacher finds similar.
    - ``"vv+tt+vt"`` (released code ``31ba0a5``, ``train_KD.sh``): ``S_T = S^{vv} + S^{tt} + S^{vt}``.
      The self-similarities put 2 extra units on the positive, so at T_t = 100 the target is
      ≈ one-hot and KD ≈ InfoNCE (reference §2.5 [SIM]); use it to reproduce the README's KD row.

    ``teacher_temperature`` is the multiplier T_t = 100 (``--distill_T_t``).
    """

    def __init__(
        self,
        alpha: float = 0.5,
        teacher_temperature: float = 100.0,
        kd_variant: str = "vt",
        logit_scale_init: float = LOGIT_SCALE_INIT,
        scale_clamp: tuple[float, float] = SCALE_CLAMP,
        local_column_grad: bool = False,
    ) -> None:
        super().__init__(alpha, logit_scale_init, scale_clamp, local_column_grad)
        if kd_variant not in KD_VARIANTS:
            raise ValueError(f"unknown kd_variant {kd_variant!r}; valid: {list(KD_VARIANTS)}")
        if not teacher_temperature > 0:
            raise ValueError(f"teacher_temperature must be > 0, got {teacher_temperature}")
        self.kd_variant: str = kd_variant
        self.teacher_temperature: float = float(teacher_temperature)

    def soft_targets(
        self, teacher_img: torch.Tensor, teacher_txt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row softmax of ``T_t · S_T`` over the N gathered columns, (B, N) each, float32 (float64 stays)."""
        _check_pair(teacher_img, teacher_txt, "teacher")
        with torch.no_grad(), torch.autocast(device_type=teacher_img.device.type, enabled=False):
            img, txt = _upcast(teacher_img.detach()), _upcast(teacher_txt.detach())
            img_all, txt_all = all_gather_no_grad(img), all_gather_no_grad(txt)
            if self.kd_variant == "vt":
                sim_img, sim_txt = img @ txt_all.T, txt @ img_all.T
            else:
                cost_img, cost_txt = teacher_costs(img, txt, img_all, txt_all, 1.0, 1.0, None)
                sim_img, sim_txt = -cost_img, -cost_txt
            return (F.softmax(self.teacher_temperature * sim_img, dim=1),
                    F.softmax(self.teacher_temperature * sim_txt, dim=1))


class OTTER(DistillationObjective):
    """OTTER: targets from entropic optimal transport over the EMA teacher's similarities.

    Cost ``C^v = −(c_vv·S^{vv} + c_tt·S^{tt} + S^{vt})`` (``C^t`` with S^{tv}) with the diagonal removed,
    Sinkhorn–Knopp (λ = ``sinkhorn_lambda`` 0.15, ``sinkhorn_iter`` 5 iterations, uniform marginals),
    plan row-normalised into M̃, all under ``no_grad`` in float32.

    - ``remove_diag`` (default True): each sample's own pair gets an infinite cost, so the plan is exactly
      0 there for any ``vv_coef``/``tt_coef`` and M̃ only models off-diagonal matches. Needs at least 2
      samples per rank.
    - ``global_ot`` (default True, ``--global_ot``): solve the N×N problem of the gathered batch on every
      rank and keep this rank's B rows; False solves the local B×N problem.
    - ``bug_compatible`` (default False): the official code's two defects. (1) D sits at columns 0..B−1 on
      every rank, as ``torch.eye(B, N)`` does; that is the true positive only on rank 0 (identical at
      W = 1). (2) The removal is the penalty ``S − 100·D`` on the vv and tt terms, scaled by their
      coefficients: +200 cost at c_vv = c_tt = 1 (plan exactly 0, as the default), nothing at
      c_vv = c_tt = 0 (the vt-only ablation keeps its diagonal). Off by default: D sits at the true
      positive ``rank·B + i`` and the removal is an infinite cost.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        sinkhorn_lambda: float = 0.15,
        sinkhorn_iter: int = 5,
        vv_coef: float = 1.0,
        tt_coef: float = 1.0,
        remove_diag: bool = True,
        global_ot: bool = True,
        bug_compatible: bool = False,
        logit_scale_init: float = LOGIT_SCALE_INIT,
        scale_clamp: tuple[float, float] = SCALE_CLAMP,
        local_column_grad: bool = False,
    ) -> None:
        super().__init__(alpha, logit_scale_init, scale_clamp, local_column_grad)
        if not sinkhorn_lambda > 0:
            raise ValueError(f"sinkhorn_lambda must be > 0, got {sinkhorn_lambda}")
        if isinstance(sinkhorn_iter, bool) or not isinstance(sinkhorn_iter, int) or sinkhorn_iter < 0:
            raise ValueError(f"sinkhorn_iter must be an int >= 0, got {sinkhorn_iter!r}")
        self.sinkhorn_lambda: float = float(sinkhorn_lambda)
        self.sinkhorn_iter: int = sinkhorn_iter
        self.vv_coef: float = float(vv_coef)
        self.tt_coef: float = float(tt_coef)
        self.remove_diag: bool = remove_diag
        self.global_ot: bool = global_ot
        self.bug_compatible: bool = bug_compatible

    def soft_targets(
        self, teacher_img: torch.Tensor, teacher_txt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row-normalised Sinkhorn plans for this rank's rows, (B, N) each, float32 (float64 stays)."""
        _check_pair(teacher_img, teacher_txt, "teacher")
        batch = teacher_img.shape[0]
        if self.remove_diag and batch < 2:
            raise ValueError(
                "OTTER with remove_diag needs at least 2 samples per rank (else a whole column is removed)"
            )
        rank = get_rank()
        with torch.no_grad(), torch.autocast(device_type=teacher_img.device.type, enabled=False):
            img, txt = _upcast(teacher_img.detach()), _upcast(teacher_txt.detach())
            img_all, txt_all = all_gather_no_grad(img), all_gather_no_grad(txt)
            img_rows, txt_rows, first_row = (img_all, txt_all, 0) if self.global_ot else (img, txt, rank * batch)
            diag_cols = None
            if self.remove_diag:
                diag_cols = torch.arange(first_row, first_row + img_rows.shape[0], device=img.device)
                if self.bug_compatible:
                    diag_cols = diag_cols % batch
            cost_img, cost_txt = teacher_costs(
                img_rows, txt_rows, img_all, txt_all, self.vv_coef, self.tt_coef, diag_cols,
                official_penalty=self.bug_compatible,
            )
            plans = []
            for cost in (cost_img, cost_txt):
                plan = sinkhorn(cost, self.sinkhorn_lambda, self.sinkhorn_iter)
                plan = plan / plan.sum(dim=1, keepdim=True)
                plans.append(plan[rank * batch:(rank + 1) * batch] if self.global_ot else plan)
            return plans[0], plans[1]


LOSSES: dict[str, type[ContrastiveObjective]] = {
    "infonce": InfoNCE,
    "label_smoothing": LabelSmoothing,
    "kd": KnowledgeDistillation,
    "otter": OTTER,
}
"""Registry of the four objectives by name."""


def create_loss(name: str, **kwargs: object) -> ContrastiveObjective:
    """Build the objective ``name`` (a key of :data:`LOSSES`) with constructor keyword arguments.

    Unknown names and keyword arguments the objective does not take raise ``ValueError``.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {sorted(LOSSES)}")
    cls = LOSSES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"loss {name!r} does not take {unknown}; it accepts {accepted}")
    return cls(**kwargs)
