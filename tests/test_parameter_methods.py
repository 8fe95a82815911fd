"""L2Init and ShrinkPerturb against hand computations, in automatic and manual optimisation, and on resume."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import Classifier, loader, mlp, trainer
from plasticity_models import architectures
from test_manual_optimization import SAC, replay
from torch.nn import functional as F  # noqa: N812

from regrama_lightning import L2Init, ShrinkPerturb, shrink_perturb_


class Explicit(Classifier):
    """The same classifier, SGD, with ``strength/2 * ||theta - theta_0||^2`` written into the loss."""

    def __init__(self, net, strength):
        super().__init__(net, lr=0.1, optimizer="sgd_plain")
        self.strength = strength
        self.theta0 = [p.detach().clone() for p in net.parameters()]

    def training_step(self, batch, batch_idx):
        x, y = batch
        reg = sum((p - t).square().sum() for p, t in zip(self.net.parameters(), self.theta0, strict=True))
        return F.cross_entropy(self(x), y) + 0.5 * self.strength * reg

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Plain(Explicit):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)


def test_l2init_equals_the_regulariser_written_into_the_loss():
    torch.manual_seed(0)
    net = mlp((6, 8, 3))
    explicit, plain = Explicit(copy.deepcopy(net), 0.5), Plain(copy.deepcopy(net), 0.5)
    trainer([], max_steps=6).fit(explicit, loader())
    trainer([L2Init(strength=0.5)], max_steps=6).fit(plain, loader())
    for a, b in zip(explicit.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.equal(next(plain.parameters()), next(net.parameters()))  # it trained


def test_l2init_leaves_frozen_and_gradient_free_parameters_alone():
    torch.manual_seed(0)
    model = Plain(mlp((6, 8, 3)), 0.5)
    frozen = model.net[0].bias
    frozen.requires_grad_(False)
    with torch.no_grad():
        frozen.add_(1.0)  # away from nothing: the callback must not pull it anyway
    before = frozen.detach().clone()
    trainer([L2Init(strength=10.0)], max_steps=3).fit(model, loader())
    assert torch.equal(frozen, before) and frozen.grad is None


def _sac_reference(strength: float, steps: int) -> SAC:
    """SAC with each network's own ``strength/2 ||theta - theta_0||^2`` added to the loss of its optimizer."""

    class Regularised(SAC):
        def on_fit_start(self):
            self.c0 = [p.detach().clone() for p in self.critic.parameters()]
            self.a0 = [p.detach().clone() for p in self.actor.parameters()]

        def training_step(self, batch, batch_idx):
            from test_manual_optimization import actor_loss, critic_loss

            obs, act, target = batch
            critic_opt, actor_opt = self.optimizers()
            critic_opt.zero_grad()
            reg = sum((p - t).square().sum() for p, t in zip(self.critic.parameters(), self.c0, strict=True))
            self.manual_backward(critic_loss(self.critic, obs, act, target) + 0.5 * strength * reg)
            critic_opt.step()
            if (batch_idx + 1 - self.first_actor_step) % self.policy_delay == 0:
                actor_opt.zero_grad()
                reg = sum((p - t).square().sum() for p, t in zip(self.actor.parameters(), self.a0, strict=True))
                self.manual_backward(actor_loss(self.actor, self.critic, obs) + 0.5 * strength * reg)
                actor_opt.step()

    model = Regularised(policy_delay=2)
    trainer([], max_steps=steps).fit(model, replay(steps // 2))
    return model


def test_l2init_in_manual_optimisation_matches_sac_with_the_term_in_each_loss():
    reference = _sac_reference(0.3, steps=12)  # max_steps counts both optimizers' steps
    model = SAC(policy_delay=2)
    trainer([L2Init(strength=0.3)], max_steps=12).fit(model, replay(6))
    for a, b in zip(reference.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_l2init_resume_pulls_toward_the_first_fits_theta0(tmp_path):
    torch.manual_seed(0)
    net = mlp((6, 8, 3))
    t = trainer([L2Init(0.5)], max_steps=3)
    t.fit(Plain(copy.deepcopy(net), 0.5), loader(n=48))
    t.save_checkpoint(tmp_path / "c.ckpt")
    ends = []
    for shift in (0.0, 1.0):  # the model's own start differs; only the checkpoint says where theta_0 was
        resumed = Plain(copy.deepcopy(net), 0.5)
        with torch.no_grad():
            for p in resumed.parameters():
                p.add_(shift)
        callback = L2Init(0.5)
        trainer([callback], max_steps=5).fit(resumed, loader(n=48), ckpt_path=tmp_path / "c.ckpt")
        for theta0, p in zip(callback._stepped.initial[0], net.parameters(), strict=True):
            assert torch.equal(theta0, p)
        ends.append([p.detach().clone() for p in resumed.parameters()])
    for a, b in zip(*ends, strict=True):
        assert torch.equal(a, b)


def test_shrink_perturb_function_by_hand():
    w, t = torch.tensor([2.0, -4.0]), torch.tensor([1.0, 1.0])
    shrink_perturb_([w], 0.75, 0.0)
    assert w.tolist() == [1.5, -3.0]
    shrink_perturb_([w], 0.5, 0.0, initial=[t])
    assert w.tolist() == [1.25, -1.0]
    a, b = torch.zeros(20000), torch.zeros(20000)
    shrink_perturb_([a], 1.0, 0.1, generator_seed=3)
    shrink_perturb_([b], 1.0, 0.1, generator_seed=3)
    assert torch.equal(a, b) and a.std().item() == pytest.approx(0.1, rel=0.03) and abs(a.mean().item()) < 3e-3


class Frozen(Plain):
    """SGD at step size 0: the optimizer changes nothing, so only the callback moves the parameters."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("toward", ["zero", "init"])
def test_shrink_perturb_every_n_steps_by_hand(toward):
    torch.manual_seed(0)
    model = Frozen(mlp((6, 8, 3)), 0.0)
    start = [p.detach().clone() for p in model.parameters()]
    trainer([ShrinkPerturb(shrink=0.5, sigma=0.0, toward=toward, every_n_steps=2)], max_steps=5).fit(model, loader())
    for p, p0 in zip(model.parameters(), start, strict=True):  # steps 2 and 4 acted
        torch.testing.assert_close(p, p0 * 0.25 if toward == "zero" else p0)


def test_shrink_perturb_counts_each_optimizers_steps_in_manual_optimisation():
    class Still(SAC):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.critic.parameters(), lr=0.0), torch.optim.SGD(self.actor.parameters(), lr=0)]

    model = Still(policy_delay=2)
    critic0 = [p.detach().clone() for p in model.critic.parameters()]
    actor0 = [p.detach().clone() for p in model.actor.parameters()]
    trainer([ShrinkPerturb(shrink=0.5, sigma=0.0)], max_steps=6).fit(model, replay(4))  # 4 critic + 2 actor steps
    for p, p0 in zip(model.critic.parameters(), critic0, strict=True):
        torch.testing.assert_close(p, p0 * 0.5**4)
    for p, p0 in zip(model.actor.parameters(), actor0, strict=True):
        torch.testing.assert_close(p, p0 * 0.5**2)


def test_shrink_perturb_noise_is_seeded_and_differs_per_optimizer():
    def run():
        model = SAC(policy_delay=1)
        model.configure_optimizers = lambda: [
            torch.optim.SGD(model.critic.parameters(), lr=0.0),
            torch.optim.SGD(model.actor.parameters(), lr=0.0),
        ]
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer([ShrinkPerturb(shrink=1.0, sigma=0.1, seed=7)], max_steps=2).fit(model, replay(1))
        return {n: p.detach() - before[n] for n, p in model.named_parameters()}

    a, b = run(), run()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["critic.2.weight"], a["actor.2.weight"])  # same shape, independent noise


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="strength"):
        L2Init(strength=0.0)
    with pytest.raises(ValueError, match="shrink"):
        ShrinkPerturb(shrink=1.5)
    with pytest.raises(ValueError, match="sigma"):
        ShrinkPerturb(sigma=-1.0)
    with pytest.raises(ValueError, match="toward"):
        ShrinkPerturb(toward="origin")
    with pytest.raises(ValueError, match="every_n_steps"):
        ShrinkPerturb(every_n_steps=0)
    assert (ShrinkPerturb().shrink, ShrinkPerturb().sigma) == (0.99995, 1e-5)
    assert (ShrinkPerturb(toward="init").shrink, ShrinkPerturb(toward="init").sigma) == (0.999999, 0.0)


@pytest.mark.parametrize("name", ["cnn_bn", "bro"])
def test_parameter_methods_run_on_the_other_architectures(name):
    model, data = architectures()[name]
    before = [p.detach().clone() for p in model.parameters()]
    trainer([L2Init(), ShrinkPerturb(toward="init", shrink=0.9)], max_steps=3).fit(model, data)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
