"""Network factory for the agents: plain MLPs and BRO-style residual nets, any activation, LayerNorm on or off.

Every hidden layer is an ``nn.Linear`` followed (optionally) by ``nn.LayerNorm`` and an activation module, so
that ``ReGraMa``/``ReDo`` can trace, score and reset each neuron. The variants cover the paper's studies:

* ``residual=False``: ``depth`` blocks of ``Linear -> [LayerNorm] -> act``, then a Linear head.
* ``residual=True`` (BRO-net, Nauman et al. 2024): ``Linear -> [LayerNorm] -> act``, then ``depth`` blocks
  ``x + [LN](Linear(act([LN](Linear(x)))))``, then a Linear head. The second Linear of each block writes into the
  residual stream: the callbacks score it but, by default, do not reset it (its outgoing weights are shared).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

ActivationName = Literal["relu", "tanh", "sigmoid", "leaky_relu", "gelu", "swish", "mish"]
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
}


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of one network (LightningCLI/jsonargparse reads it as a nested group of arguments).

    Args:
        width: Neurons per hidden layer.
        depth: Hidden blocks (``residual=True``: residual blocks after the input layer).
        activation: Non-linearity of every hidden layer.
        layer_norm: LayerNorm after each hidden Linear (before the activation).
        residual: BRO-net residual blocks.

    Raises:
        ValueError: On a non-positive width or depth, or an unknown activation.
    """

    width: int = 256
    depth: int = 2
    activation: ActivationName = "relu"
    layer_norm: bool = False
    residual: bool = False

    @classmethod
    def of(cls, value: NetworkConfig | Mapping[str, Any] | None) -> NetworkConfig:
        """A config from itself, from a dict of its fields (checkpoint hyperparameters) or the default (None)."""
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            return cls(**value)
        if not isinstance(value, cls):
            raise ValueError(f"Expected a NetworkConfig, a dict of its fields or None, got {type(value).__name__}.")
        return value

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"`width` must be a positive integer, got {self.width!r}.")
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"`depth` must be a positive integer, got {self.depth!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}.")


def _hidden(in_dim: int, config: NetworkConfig) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_dim, config.width)]
    if config.layer_norm:
        layers.append(nn.LayerNorm(config.width))
    layers.append(ACTIVATIONS[config.activation]())
    return layers


class ResidualBlock(nn.Module):
    """``x + [LN](Linear(act([LN](Linear(x)))))``: BRO-net's block."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.inner = nn.Sequential(*_hidden(config.width, config))
        self.out = nn.Linear(config.width, config.width)
        self.norm = nn.LayerNorm(config.width) if config.layer_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """The stream plus the block's update."""
        return x + self.norm(self.out(self.inner(x)))


def make_network(in_dim: int, out_dim: int, config: NetworkConfig) -> nn.Sequential:
    """Build a network from ``in_dim`` inputs to ``out_dim`` outputs.

    Args:
        in_dim: Input features.
        out_dim: Outputs of the Linear head.
        config: Hidden layers.

    Returns:
        An ``nn.Sequential`` whose last module is the Linear head.

    Example:
        >>> net = make_network(4, 2, NetworkConfig(width=8, depth=2, layer_norm=True, residual=True))
        >>> net(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """
    if config.residual:
        layers = _hidden(in_dim, config) + [ResidualBlock(config) for _ in range(config.depth)]
    else:
        layers = []
        for i in range(config.depth):
            layers += _hidden(in_dim if i == 0 else config.width, config)
    return nn.Sequential(*layers, nn.Linear(config.width, out_dim))


class QNetwork(nn.Module):
    """``Q(s, a)``: the network reads the concatenated observation and action.

    Args:
        obs_dim: Observation features.
        act_dim: Action dimensions.
        config: Hidden layers.
        outputs: Values per state-action pair: 1 (a scalar Q, returned as ``(batch,)``) or more (quantiles, a
            mean and a standard deviation...: ``(batch, outputs)``).
    """

    def __init__(self, obs_dim: int, act_dim: int, config: NetworkConfig, outputs: int = 1) -> None:
        super().__init__()
        self.outputs = outputs
        self.net = make_network(obs_dim + act_dim, outputs, config)

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        """Q values, shape ``(batch,)`` (``(batch, outputs)`` with several outputs)."""
        out = self.net(torch.cat([obs, action], -1))
        return out.squeeze(-1) if self.outputs == 1 else out


class TwinQ(nn.Module):
    """Two independent Q networks (clipped double Q-learning).

    They stay two sets of ``nn.Linear`` modules, not one batched (vmapped) ensemble: the reset callbacks trace,
    score and reset ``nn.Linear``/``Conv`` neurons.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: NetworkConfig, outputs: int = 1) -> None:
        super().__init__()
        self.q1 = QNetwork(obs_dim, act_dim, config, outputs)
        self.q2 = QNetwork(obs_dim, act_dim, config, outputs)

    def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Both critics' Q values."""
        return self.q1(obs, action), self.q2(obs, action)


class SquashedGaussianActor(nn.Module):
    """A tanh-squashed Gaussian policy over actions in ``[-1, 1]`` (CleanRL's SAC actor).

    One Linear head gives the mean and the pre-activation log-std; the log-std is squashed into
    ``[log_std_min, log_std_max]`` with a tanh, as CleanRL does.

    Args:
        obs_dim: Observation features.
        act_dim: Action dimensions.
        config: Hidden layers.
        log_std_min: Lower bound of the log standard deviation.
        log_std_max: Upper bound of the log standard deviation.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, config: NetworkConfig, log_std_min: float = -5.0, log_std_max: float = 2.0
    ) -> None:
        super().__init__()
        self.net = make_network(obs_dim, 2 * act_dim, config)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-std of the Gaussian before the squash."""
        mean, pre = self.net(obs).chunk(2, -1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(pre) + 1)
        return mean, log_std

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """A reparameterised action and its log-probability under the squashed distribution."""
        mean, log_std = self(obs)
        noise = torch.randn_like(mean)
        pre = mean + log_std.exp() * noise
        # log N(pre; mean, std) - log|d tanh/d pre|, with log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x))
        log_prob = -0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)
        log_prob = log_prob - 2 * (math.log(2) - pre - F.softplus(-2 * pre))
        return torch.tanh(pre), log_prob.sum(-1)

    def deterministic(self, obs: Tensor) -> Tensor:
        """The squashed mean: the evaluation action."""
        return torch.tanh(self(obs)[0])
