"""otterlib.losses.sinkhorn against POT (the oracle) and the official matrix-normalising loop."""
from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from otterlib.losses import sinkhorn


def _cost(n_rows: int, n_cols: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Costs uniform in [-3, 3], the range of -(S_vv + S_tt + S_vt) for unit embeddings."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n_rows, n_cols, generator=generator, dtype=torch.float64) * 6.0 - 3.0).to(dtype)


def _pot_official_order(cost: torch.Tensor, lam: float, n_iter: int) -> torch.Tensor:
    """POT updates columns then rows; on the transposed problem it follows the official rows-then-columns order."""
    n_rows, n_cols = cost.shape
    a = torch.full((n_rows,), 1.0 / n_rows, dtype=torch.float64)
    b = torch.full((n_cols,), 1.0 / n_cols, dtype=torch.float64)
    return ot.sinkhorn(b, a, cost.T, lam, numItermax=n_iter, stopThr=0.0, warn=False).T


def _official_numpy(cost: np.ndarray, lam: float, n_iter: int) -> np.ndarray:
    """The official algorithm written out: Q = exp(-C/λ), Q /= ΣQ, then rows to 1/M and columns to 1/N."""
    q = np.exp(-cost / lam)
    q = q / q.sum()
    n_rows, n_cols = q.shape
    for _ in range(n_iter):
        q = q / q.sum(axis=1, keepdims=True) / n_rows
        q = q / q.sum(axis=0, keepdims=True) / n_cols
    return q


@pytest.mark.parametrize("n_iter", [1, 2, 5])
@pytest.mark.parametrize("shape", [(6, 6), (4, 10), (9, 3)])
def test_plan_equals_pot_for_a_fixed_number_of_iterations(n_iter: int, shape: tuple[int, int]) -> None:
    cost = _cost(*shape, seed=n_iter)
    plan = sinkhorn(cost, 0.15, n_iter)
    assert plan.dtype == torch.float64
    expected = _pot_official_order(cost, 0.15, n_iter)
    torch.testing.assert_close(plan, expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(plan.numpy(), _official_numpy(cost.numpy(), 0.15, n_iter), rtol=1e-10, atol=1e-14)


def test_one_iteration_differs_from_pots_own_order() -> None:
    """The oracle is order-sensitive: POT's column-then-row order gives another plan after 1 iteration."""
    cost = _cost(5, 5, seed=3)
    a = torch.full((5,), 0.2, dtype=torch.float64)
    pot_plain = ot.sinkhorn(a, a, cost, 0.15, numItermax=1, stopThr=0.0, warn=False)
    assert (sinkhorn(cost, 0.15, 1) - pot_plain).abs().max() > 1e-4


@pytest.mark.parametrize("shape", [(7, 7), (5, 8)])
def test_converged_plan_equals_pot_log_domain(shape: tuple[int, int]) -> None:
    cost = _cost(*shape, seed=11)
    n_rows, n_cols = shape
    a = torch.full((n_rows,), 1.0 / n_rows, dtype=torch.float64)
    b = torch.full((n_cols,), 1.0 / n_cols, dtype=torch.float64)
    expected = ot.sinkhorn(a, b, cost, 0.5, method="sinkhorn_log", numItermax=100_000, stopThr=1e-15, warn=False)
    torch.testing.assert_close(sinkhorn(cost, 0.5, 2000), expected, rtol=1e-8, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_column_marginals_are_exact_after_every_iteration(dtype: torch.dtype) -> None:
    cost = _cost(6, 9, seed=5, dtype=dtype)
    tol = 1e-15 if dtype == torch.float64 else 5e-8  # a few ulps of 1/9
    for n_iter in range(1, 7):
        plan = sinkhorn(cost, 0.15, n_iter)
        assert plan.dtype == dtype
        torch.testing.assert_close(plan.sum(0), torch.full((9,), 1 / 9, dtype=dtype), rtol=0, atol=tol)


def test_zero_iterations_return_the_normalised_gibbs_kernel() -> None:
    cost = _cost(3, 4, seed=2)
    kernel = torch.exp(-cost / 0.15)
    torch.testing.assert_close(sinkhorn(cost, 0.15, 0), kernel / kernel.sum(), rtol=1e-12, atol=0)


def test_plan_is_invariant_to_a_constant_shift_of_the_cost() -> None:
    cost = _cost(5, 5, seed=7)
    torch.testing.assert_close(sinkhorn(cost + 40.0, 0.15, 5), sinkhorn(cost, 0.15, 5), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("penalty", [200.0, float("inf")])
def test_huge_diagonal_cost_gives_exact_zeros(penalty: float) -> None:
    diag = torch.eye(6, dtype=torch.bool)
    cost = _cost(6, 6, seed=4, dtype=torch.float32)
    cost = torch.where(diag, cost + penalty, cost)
    plan = sinkhorn(cost, 0.15, 5)
    assert torch.isfinite(plan).all()
    assert torch.equal(plan.diagonal(), torch.zeros(6))
    assert plan[~diag].min() > 0


def test_large_lambda_tends_to_uniform_off_the_diagonal() -> None:
    n = 5
    cost = _cost(n, n, seed=8) + torch.eye(n, dtype=torch.float64) * 1e9
    plan = sinkhorn(cost, 1e6, 50)
    off = ~torch.eye(n, dtype=torch.bool)
    assert torch.equal(plan.diagonal(), torch.zeros(n, dtype=torch.float64))
    torch.testing.assert_close(plan[off], torch.full((n * (n - 1),), 1 / (n * (n - 1)), dtype=torch.float64),
                               rtol=1e-4, atol=0)


def test_half_precision_costs_are_safe() -> None:
    """fp16/bf16 costs are solved in float32: the plan is the float64 (POT) plan of the same rounded costs to
    float32 accuracy."""
    cost32 = _cost(64, 64, seed=9, dtype=torch.float32) + torch.eye(64) * 200.0
    assert not torch.isfinite(torch.exp(-cost32.half() / 0.15)).all()  # the naive official kernel overflows fp16
    for dtype in (torch.float16, torch.bfloat16):
        low = cost32.to(dtype)
        plan = sinkhorn(low, 0.15, 5)
        assert plan.dtype == torch.float32 and torch.isfinite(plan).all()
        expected = _pot_official_order(low.double(), 0.15, 5)
        assert torch.equal(expected.diagonal(), torch.zeros(64, dtype=torch.float64))
        torch.testing.assert_close(plan.double(), expected, rtol=1e-5, atol=1e-12)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        plan = sinkhorn(cost32.bfloat16(), 0.15, 5)
    assert plan.dtype == torch.float32 and torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(0), torch.full((64,), 1 / 64), rtol=0, atol=1e-8)


def test_no_gradient_flows() -> None:
    cost = _cost(3, 3, seed=1).requires_grad_(True)
    assert not sinkhorn(cost, 0.15, 5).requires_grad


@pytest.mark.parametrize(
    ("cost", "eps", "n_iter"),
    [(torch.zeros(2, 3, 3), 0.15, 5), (torch.zeros(3, 3), 0.0, 5), (torch.zeros(3, 3), 0.15, -1),
     (torch.zeros(3, 3), 0.15, 2.5)],
)
def test_bad_arguments_raise(cost: torch.Tensor, eps: float, n_iter: int) -> None:
    with pytest.raises(ValueError):
        sinkhorn(cost, eps, n_iter)
