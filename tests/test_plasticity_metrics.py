"""Plasticity metrics against numpy on matrices with known singular values and planted units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regrama_lightning.plasticity import (
    ActiveUnitFraction,
    ApproximateRank,
    DeadUnitFraction,
    EffectiveRank,
    FeatureNorm,
    SRank,
    active_unit_fraction,
    approximate_rank,
    dead_unit_fraction,
    distance_from_init,
    effective_rank,
    feature_matrix,
    feature_norm,
    gradient_norm,
    srank,
    weight_magnitude,
)


def with_singular_values(values, n=40, d=12, seed=0) -> torch.Tensor:
    """An n x d matrix U diag(values) V^T with random orthonormal U, V: its singular values are ``values``."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.zeros(d)
    s[: len(values)] = values
    return torch.tensor(u @ np.diag(s) @ v.T)


def numpy_effective_rank(s: np.ndarray) -> float:
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def numpy_cumulative_rank(s: np.ndarray, delta: float) -> int:
    for k in range(1, len(s) + 1):
        if s[:k].sum() >= (1 - delta) * s.sum() - 1e-12:
            return k
    raise AssertionError


VALUES = [8.0, 4.0, 2.0, 1.0, 0.5, 0.05]  # a rank-6 matrix


def test_ranks_match_numpy_on_chosen_singular_values():
    m = with_singular_values(VALUES)
    s = np.linalg.svd(m.numpy(), compute_uv=False)
    assert effective_rank(m).item() == pytest.approx(numpy_effective_rank(np.array(VALUES)), rel=1e-9)
    assert effective_rank(m).item() == pytest.approx(numpy_effective_rank(s), rel=1e-9)
    for delta in (0.01, 0.1, 0.3):
        assert srank(m, delta).item() == numpy_cumulative_rank(np.array(VALUES), delta)
        assert approximate_rank(m, delta).item() == numpy_cumulative_rank(np.array(VALUES) ** 2, delta)
    # Hand values: sum 15.55, 99% = 15.3945 needs 8+4+2+1+0.5 = 15.5 -> 5; squares: 85.25*0.99 = 84.4 -> 4.
    assert srank(m).item() == 5
    assert approximate_rank(m).item() == 4


def test_rank_k_matrix_of_equal_values_has_every_rank_k():
    m = with_singular_values([3.0] * 5).float()
    assert effective_rank(m).item() == pytest.approx(5.0, rel=1e-5)
    assert srank(m).item() == 5 and approximate_rank(m).item() == 5


def test_zero_matrix_has_rank_zero_and_bad_input_is_refused():
    z = torch.zeros(4, 3)
    assert effective_rank(z).item() == 0 and srank(z).item() == 0 and approximate_rank(z).item() == 0
    with pytest.raises(ValueError, match="feature_matrix"):
        effective_rank(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="delta"):
        srank(z, delta=1.0)
    with pytest.raises(ValueError, match="delta"):
        SRank(delta=-0.1)


def test_feature_matrix_flattens_conv_positions_into_samples():
    x = torch.randn(2, 3, 4, 5)
    m = feature_matrix(x, channel_dim=1)
    assert m.shape == (40, 3)
    assert torch.equal(m[:, 1].sort().values, x[:, 1].flatten().sort().values)


def test_unit_metrics_on_planted_units():
    rng = np.random.default_rng(1)
    h = np.maximum(rng.standard_normal((500, 6)), 0)
    h[:, 2] = 0.0  # never fires
    h[:, 4] = 0.0
    h[:3, 4] = 1.0  # fires on 3 of 500 samples: 0.6% < 1%, dead
    h[:10, 5] = np.where(h[:10, 5] == 0, 1.0, h[:10, 5])
    h[10:, 5] = 0.0  # fires on 10 of 500: 2%, alive
    t = torch.tensor(h)
    firing = (h != 0).mean(0)
    assert dead_unit_fraction(t).item() == pytest.approx(float((firing < 0.01).mean()))
    assert dead_unit_fraction(t).item() == pytest.approx(2 / 6)
    assert active_unit_fraction(t).item() == pytest.approx(float((h != 0).mean()))
    assert feature_norm(t).item() == pytest.approx(float(np.linalg.norm(h, axis=1).mean()))
    with pytest.raises(ValueError, match="min_active"):
        dead_unit_fraction(t, min_active=0.0)


def test_parameter_metrics_against_numpy():
    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    a0, b0 = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    flat = np.concatenate([a.numpy().ravel(), b.numpy().ravel()])
    flat0 = np.concatenate([a0.numpy().ravel(), b0.numpy().ravel()])
    assert weight_magnitude([a, b]).item() == pytest.approx(float(np.abs(flat).mean()), rel=1e-6)
    assert distance_from_init([a, b], [a0, b0]).item() == pytest.approx(float(np.linalg.norm(flat - flat0)), rel=1e-6)
    w = torch.nn.Parameter(torch.randn(4))
    v = torch.nn.Parameter(torch.randn(3))  # no gradient: counts as zero
    (w * torch.arange(4.0)).sum().backward()
    assert gradient_norm([w, v]).item() == pytest.approx(float(np.linalg.norm(np.arange(4.0))))
    with pytest.raises(ValueError, match="same tensors"):
        distance_from_init([a], [b0])
    with pytest.raises(ValueError, match="empty"):
        weight_magnitude([])


def test_torchmetrics_accumulate_batches_like_the_whole_matrix():
    m = with_singular_values(VALUES).float()
    h = torch.relu(torch.randn(64, 6))
    h[:, 1] = 0
    for metric, fn, data in [
        (EffectiveRank(), effective_rank, m),
        (SRank(), srank, m),
        (ApproximateRank(delta=0.1), lambda x: approximate_rank(x, 0.1), m),
        (DeadUnitFraction(num_units=6), dead_unit_fraction, h),
        (ActiveUnitFraction(), active_unit_fraction, h),
        (FeatureNorm(), feature_norm, h),
    ]:
        for part in data.split(16):
            metric.update(part)
        assert metric.compute().item() == pytest.approx(fn(data).item(), rel=1e-5), type(metric).__name__
    conv = torch.relu(torch.randn(2, 3, 4, 4))
    metric = DeadUnitFraction(num_units=3)
    metric.update(conv, channel_dim=1)
    assert metric.compute().item() == pytest.approx(dead_unit_fraction(feature_matrix(conv, 1)).item())
    with pytest.raises(ValueError, match="built for 3"):
        metric.update(torch.ones(2, 4))
    with pytest.raises(RuntimeError, match="before any update"):
        EffectiveRank().compute()
