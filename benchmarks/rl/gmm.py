"""DACER's entropy estimate of a sampled policy: a Gaussian mixture fitted per state, on the device.

DACER (Wang et al. 2024) fits a 3-component, full-covariance Gaussian mixture to 200 actions sampled for each
state of a batch (scikit-learn, on the host) and takes ``-sum_k w_k log w_k + sum_k w_k H(N_k)`` as the entropy,
averaged over states (an upper bound of the mixture's entropy, exact for well-separated components).
Here the same mixture is fitted by a fixed number of batched EM iterations in torch, for all states at once,
without host synchronisation (Cholesky via ``cholesky_ex``, no convergence test). Initialisation differs from
scikit-learn's k-means: the means start at ``components`` of the samples, spread through the sample order, with the
data's diagonal variance as covariance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gmm_entropy(samples: Tensor, components: int = 3, iterations: int = 30, reg: float = 1e-6) -> Tensor:
    """DACER's mixture entropy, averaged over states.

    Args:
        samples: ``(states, n, d)`` actions sampled for each state.
        components: Mixture components (DACER: 3).
        iterations: EM iterations.
        reg: Added to each covariance's diagonal (scikit-learn's ``reg_covar``).

    Returns:
        A scalar tensor on the samples' device.

    Raises:
        ValueError: If there are fewer samples per state than components.

    Example:
        >>> x = torch.randn(4, 2000, 2, generator=torch.Generator().manual_seed(0)) * 0.5
        >>> exact = 0.5 * 2 * (1 + math.log(2 * math.pi)) + 2 * math.log(0.5)  # one Gaussian, std 0.5
        >>> abs(gmm_entropy(x, components=1).item() - exact) < 0.01
        True
    """
    states, n, d = samples.shape
    if n < components:
        raise ValueError(f"`samples` needs at least `components={components}` samples per state, got {n}.")
    x = samples.double()  # EM in float32 loses the small covariances of a nearly deterministic policy
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    pick = torch.linspace(0, n - 1, components, device=x.device).long()
    means = x[:, pick]  # (S, K, d)
    var = x.var(1, unbiased=False) + reg  # (S, d)
    cov = torch.diag_embed(var)[:, None].expand(states, components, d, d)
    log_w = torch.full((states, components), -math.log(components), dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        # E step: log N(x | mu_k, Sigma_k) through the Cholesky factor.
        chol, _ = torch.linalg.cholesky_ex(cov)
        diff = x[:, None] - means[:, :, None]  # (S, K, n, d)
        y = torch.linalg.solve_triangular(chol, diff.transpose(-1, -2), upper=False)  # (S, K, d, n)
        log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (S, K)
        log_p = -0.5 * (d * math.log(2 * math.pi) + log_det[..., None] + y.square().sum(-2)) + log_w[..., None]
        resp = torch.softmax(log_p, 1)  # (S, K, n)
        # M step.
        nk = resp.sum(-1) + 10 * torch.finfo(x.dtype).eps  # (S, K)
        log_w = (nk / n).log()
        means = resp @ x / nk[..., None]
        diff = x[:, None] - means[:, :, None]
        cov = (resp[..., None] * diff).transpose(-1, -2) @ diff / nk[..., None, None] + reg * eye
    chol, _ = torch.linalg.cholesky_ex(cov)
    log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    component_entropy = 0.5 * d * (1 + math.log(2 * math.pi)) + 0.5 * log_det  # (S, K)
    w = log_w.exp()
    entropy = -(w * log_w).sum(-1) + (w * component_entropy).sum(-1)
    return entropy.mean().to(samples.dtype)
