"""Manual optimisation with two optimizers sharing a graph (SAC): scores per loss, reset periods per optimizer."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from helpers import plant_dead_neuron, trainer
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, TensorDataset

from regrama_lightning import ReDo, ReGraMa

OBS, ACT, HIDDEN = 5, 2, 16
EPS = 1e-9  # the callbacks' default ``eps``


def actor_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(OBS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, ACT)
    )


def critic_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(OBS + ACT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1)
    )


class SAC(pl.LightningModule):
    """A SAC-shaped update as CleanRL writes it: critic step, then (every ``policy_delay`` steps) actor step.

    The actor loss backpropagates through the critic, adding to the critic's ``.grad`` after the critic's step;
    the critic's next ``zero_grad`` drops those gradients. The actor steps at training steps (counted from 1)
    ``first_actor_step + k * policy_delay``.
    """

    def __init__(self, policy_delay: int = 1, first_actor_step: int | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy_delay = policy_delay
        self.first_actor_step = policy_delay if first_actor_step is None else first_actor_step
        torch.manual_seed(0)
        self.actor = actor_net()
        self.critic = critic_net()

    def training_step(self, batch, batch_idx):
        obs, act, target = batch
        critic_opt, actor_opt = self.optimizers()
        critic_opt.zero_grad()
        self.manual_backward(critic_loss(self.critic, obs, act, target))
        critic_opt.step()
        if (batch_idx + 1 - self.first_actor_step) % self.policy_delay == 0:
            actor_opt.zero_grad()
            self.manual_backward(actor_loss(self.actor, self.critic, obs))
            actor_opt.step()

    def configure_optimizers(self):
        return [torch.optim.Adam(self.critic.parameters(), lr=1e-2), torch.optim.Adam(self.actor.parameters(), lr=1e-2)]


def critic_loss(critic, obs, act, target):
    return F.mse_loss(critic(torch.cat([obs, act], dim=-1)), target)


def actor_loss(actor, critic, obs):
    return -critic(torch.cat([obs, actor(obs)], dim=-1)).mean()


def replay(n_batches: int, batch: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    n = n_batches * batch
    data = TensorDataset(
        torch.randn(n, OBS, generator=g), torch.rand(n, ACT, generator=g) * 2 - 1, torch.randn(n, 1, generator=g)
    )
    return DataLoader(data, batch_size=batch, shuffle=False)


def _raw(optimizer):
    return getattr(optimizer, "optimizer", optimizer)


class BeforeCallback(pl.Callback):
    """Placed before the reset callback: the batch and the parameters each loss of each training step used."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append(
            {
                "batch": [b.clone() for b in batch],
                "actor": copy.deepcopy(pl_module.actor.state_dict()),
                "critic": copy.deepcopy(pl_module.critic.state_dict()),  # used by the critic loss
            }
        )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if _raw(optimizer) is _raw(trainer.optimizers[1]):  # the actor's step: the critic has already stepped
            self.steps[-1]["critic_for_actor"] = copy.deepcopy(pl_module.critic.state_dict())


class AfterCallback(pl.Callback):
    """Placed after the reset callback: its normalised per-layer scores after each training step."""

    def __init__(self, reset_callback) -> None:
        self.reset_callback = reset_callback
        self.scores: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.scores.append({k: v.detach().clone() for k, v in self.reset_callback.latest_scores.items()})


def _loaded(make, state):
    net = make()
    net.load_state_dict(state)
    return net


def _forward(net: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``net`` keeping each Linear's output (with its gradient retained) and each post-ReLU value."""
    outputs, post = {}, {}
    for i, layer in enumerate(net):
        x = layer(x)
        if isinstance(layer, nn.Linear):
            x.retain_grad()
            outputs[str(i)] = x
        else:
            post[str(i - 1)] = x.detach()
    return x, {"out": outputs, "post": post}


def per_loss_magnitudes(record: dict, signal: str) -> dict[str, dict[str, torch.Tensor]]:
    """Recompute one training step by hand, each loss on its own: ``{"critic": {layer: rows}, "actor": ...}``.

    ``rows`` are what :func:`score` averages: ``|W.grad|`` (neurons x fan_in) for "weight", per-sample ``|dL/dh|``
    (batch x neurons) for "output", per-sample ``|post-activation|`` (batch x neurons) for "activation".
    """
    obs, act, target = record["batch"]
    result = {}
    # The critic loss, with the critic as it was at the start of the step.
    critic = _loaded(critic_net, record["critic"])
    q, trace = _forward(critic, torch.cat([obs, act], dim=-1))
    F.mse_loss(q, target).backward()
    result["critic"] = _magnitudes(critic, trace, "critic", signal)
    # The actor loss, with the critic as it was after its own step (the actor has not stepped yet).
    if "critic_for_actor" in record:
        actor = _loaded(actor_net, record["actor"])
        critic = _loaded(critic_net, record["critic_for_actor"])
        a, actor_trace = _forward(actor, obs)
        q, critic_trace = _forward(critic, torch.cat([obs, a], dim=-1))
        (-q.mean()).backward()
        result["actor"] = {
            **_magnitudes(actor, actor_trace, "actor", signal),
            **_magnitudes(critic, critic_trace, "critic", signal),
        }
    return result


def _magnitudes(net, trace, prefix, signal) -> dict[str, torch.Tensor]:
    out = {}
    for i, layer in enumerate(net):
        if not isinstance(layer, nn.Linear):
            continue
        name = f"{prefix}.{i}"
        if signal == "weight":
            out[name] = layer.weight.grad.abs()  # (neurons, fan_in): the score averages each row
        elif signal == "output":
            out[name] = trace["out"][str(i)].grad.abs()  # (batch, neurons): the score averages each column
        else:  # ReDo: |post-activation| of the layer (identity for the actor head)
            out[name] = trace["post"].get(str(i), trace["out"][str(i)].detach()).abs()
    return out


def score(rows: torch.Tensor, signal: str) -> torch.Tensor:
    magnitude = rows.mean(dim=1) if signal == "weight" else rows.mean(dim=0)
    return magnitude / (magnitude.mean() + EPS)


def make_callback(signal: str, **kwargs) -> pl.Callback:
    if signal == "activation":
        return ReDo(tau=0.1, **kwargs)
    return ReGraMa(tau=0.01, score=signal, **kwargs)


@pytest.mark.parametrize("signal", ["weight", "output", "activation"])
def test_critic_scores_come_from_the_critic_loss_only(signal):
    callback = make_callback(signal, reset_every_n_steps=None, log_every_n_steps=1)
    before, after = BeforeCallback(), AfterCallback(callback)
    model = SAC(policy_delay=1)
    t = trainer([before, callback, after], max_steps=-1, max_epochs=1)
    t.fit(model, replay(n_batches=3))
    assert t.global_step == 6  # two optimizer steps per training step
    assert callback._steps == [3, 3]

    critic_layers = [n for n in callback.scored if n.startswith("critic.")]
    actor_layers = [n for n in callback.scored if n.startswith("actor.")]
    assert critic_layers == ["critic.0", "critic.2"]  # the Q head reads no layer: not scored
    # The actor head feeds the critic's action input: it is read (by weights of another optimizer), so it is a
    # hidden layer of the traced graph, scored, and its reset would zero the critic's action columns.
    assert actor_layers == ["actor.0", "actor.2", "actor.4"]
    assert [c.name for c in callback.layers["actor.4"].consumers] == ["critic.0"]
    assert callback.layers["actor.4"].consumers[0].columns.tolist() == list(range(OBS, OBS + ACT))

    for step, (record, measured) in enumerate(zip(before.steps, after.scores, strict=True)):
        parts = per_loss_magnitudes(record, signal)
        for name in critic_layers:
            expected = score(parts["critic"][name], signal)
            torch.testing.assert_close(measured[name], expected, rtol=1e-5, atol=1e-6, msg=f"step {step} {name}")
            # With the actor loss's share leaked in (``.grad`` as it is at the end of the step, or both passes'
            # samples in one window) the score moves by over 2% of its maximum, i.e. over 1000 times the tolerance
            # above: a leak would be caught.
            if signal == "weight":
                leaked = score(_both_losses_grad(record, name).abs(), signal)
            else:
                leaked = score(torch.cat([parts["critic"][name], parts["actor"][name]]), signal)
            assert (leaked - expected).abs().max() > 0.02 * expected.abs().max(), f"step {step} {name}"
        for name in actor_layers:
            expected = score(parts["actor"][name], signal)
            torch.testing.assert_close(measured[name], expected, rtol=1e-5, atol=1e-6, msg=f"step {step} {name}")


def _both_losses_grad(record: dict, name: str) -> torch.Tensor:
    """``W.grad`` of a critic layer after the critic loss and the actor loss have both been backpropagated."""
    obs, act, target = record["batch"]
    index = int(name.split(".")[1])
    critic = _loaded(critic_net, record["critic"])
    critic_loss(critic, obs, act, target).backward()
    grad = critic[index].weight.grad.clone()
    actor = _loaded(actor_net, record["actor"])
    critic = _loaded(critic_net, record["critic_for_actor"])
    actor_loss(actor, critic, obs).backward()
    return grad + critic[index].weight.grad


class DeadNeuronWatch(pl.Callback):
    """Placed after the reset callback: notes the training steps at which a planted dead neuron was re-drawn.

    Each net has neuron 0 of its first layer planted dead (zero weights, bias -10): its gradients are exactly
    zero, so it is inactive at every measurement and reset at each of its optimizer's reset steps. After a
    re-draw (fresh bias within 1/sqrt(fan_in), optimizer state of the row cleared) it is planted again.
    """

    def __init__(self) -> None:
        self.redrawn: dict[str, list[int]] = {"critic": [], "actor": []}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for net in ("critic", "actor"):
            first = getattr(pl_module, net)[0]
            if abs(float(first.bias.detach()[0])) < 1.0:
                self.redrawn[net].append(batch_idx + 1)
                plant_dead_neuron(first, 0)


# Actor steps at training steps 2, 4, 6, 8 (the delayed update of TD3/SAC): actor steps 2 and 4 are training steps
# 4 and 8. With the actor first stepping at training step 1 (steps 1, 3, 5, 7), they are training steps 3 and 7.
@pytest.mark.parametrize(("first_actor_step", "actor_resets"), [(2, [4, 8]), (1, [3, 7])])
@pytest.mark.parametrize("signal", ["weight", "output", "activation"])
def test_reset_period_counts_each_optimizers_own_steps(signal, first_actor_step, actor_resets):
    callback = make_callback(signal, reset_every_n_steps=2, log_every_n_steps=1, seed=3)
    watch = DeadNeuronWatch()
    model = SAC(policy_delay=2, first_actor_step=first_actor_step)
    plant_dead_neuron(model.critic[0], 0)
    plant_dead_neuron(model.actor[0], 0)
    t = trainer([callback, watch], max_steps=-1, max_epochs=1)
    t.fit(model, replay(n_batches=8))

    assert t.global_step == 8 + 4  # Lightning counts every optimizer's steps
    assert callback._steps == [8, 4]  # [critic optimizer, actor optimizer]
    # Every hidden layer is scored, whether or not its optimizer stepped in the first training batch.
    assert {"critic.0", "critic.2", "actor.0", "actor.2"} <= set(callback.scored)
    # Critic: every 2nd critic step = training steps 2, 4, 6, 8. Actor: every 2nd actor step.
    assert watch.redrawn == {"critic": [2, 4, 6, 8], "actor": actor_resets}
    assert callback._resets == 4 + 2
