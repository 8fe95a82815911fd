"""BRO-net and DACER on the open agent interface: shapes, losses against hand computations, runs with each method,
checkpoint resume, determinism, the registry and the command line."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import pytest
import torch
from helpers import trainer
from rl_helpers import make
from torch import nn

from benchmarks.rl import cli, perf
from benchmarks.rl.bro import BRO, BroNetBlock, bro_net, quantile_huber_loss
from benchmarks.rl.dacer import DACER, cosine_schedule
from benchmarks.rl.gmm import gmm_entropy
from benchmarks.rl.methods import method_callbacks, monitors, resetting
from benchmarks.rl.networks import NetworkConfig
from benchmarks.rl.registry import AGENTS, agent_class, register

SMALL = NetworkConfig(width=32, depth=2)


def tiny_bro(**kwargs) -> BRO:
    defaults = dict(env_id="Pendulum-v1", total_steps=200, learning_starts=100, batch_size=16, n_quantiles=8)
    defaults |= dict(actor_net=bro_net(1, 32), critic_net=bro_net(1, 32), replay_ratio=1.0)
    return make(BRO, **(defaults | kwargs))


def tiny_dacer(**kwargs) -> DACER:
    defaults = dict(env_id="Pendulum-v1", total_steps=200, learning_starts=100, batch_size=16, diffusion_steps=5)
    defaults |= dict(actor_net=SMALL, critic_net=SMALL, entropy_samples=16, entropy_states=4, alpha_every=25)
    return make(DACER, **(defaults | kwargs))


MAKERS = {"bro": tiny_bro, "dacer": tiny_dacer}


def fit(agent, callbacks=(), **kwargs) -> pl.Trainer:
    kwargs.setdefault("log_every_n_steps", 10)
    t = trainer(list(callbacks), max_steps=-1, **kwargs)
    t.fit(agent)
    return t


# -- BRO-net ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("blocks", [1, 2, 3, 4])
def test_bro_networks_follow_tables_1_and_2(blocks):
    agent = BRO("Pendulum-v1", actor_net=bro_net(blocks), critic_net=bro_net(blocks), n_quantiles=5)
    for net in (agent.actor.net, agent.critic.q1.net, agent.critic.q2.net):
        assert isinstance(net[0], nn.Linear) and isinstance(net[1], nn.LayerNorm) and isinstance(net[2], nn.ReLU)
        assert net[0].out_features == 256
        block_types = [type(m) for m in net[3:-1]]
        assert block_types == [BroNetBlock] * blocks
        block = net[3]  # Linear, LayerNorm, ReLU, Linear, LayerNorm, residual add
        assert [type(m) for m in block.inner] == [nn.Linear, nn.LayerNorm, nn.ReLU]
        assert isinstance(block.out, nn.Linear) and isinstance(block.norm, nn.LayerNorm)
        x = torch.randn(4, 256)
        torch.testing.assert_close(block(x), x + block.norm(block.out(block.inner(x))))
    assert agent.actor.net[-1].out_features == 2 * agent.act_dim
    obs, action = torch.randn(7, agent.obs_dim), torch.rand(7, agent.act_dim) * 2 - 1
    q1, q2 = agent.critic(obs, action)
    assert q1.shape == q2.shape == (7, 5)
    assert agent.act(obs).shape == agent.act_deterministic(obs).shape == (7, agent.act_dim)
    assert (agent.batch_size, agent.replay_ratio, agent.actor_lr, agent.critic_lr) == (128, 2.0, 1e-4, 1e-3)


def test_bro_default_networks_are_one_actor_block_and_two_critic_blocks():
    agent = BRO("Pendulum-v1")
    assert sum(isinstance(m, BroNetBlock) for m in agent.actor.modules()) == 1
    assert sum(isinstance(m, BroNetBlock) for m in agent.critic.q1.modules()) == 2


def test_quantile_huber_loss_matches_a_hand_loop():
    torch.manual_seed(0)
    pred, target = torch.randn(3, 4), torch.randn(3, 5) * 2
    taus = (torch.arange(4) + 0.5) / 4
    total = 0.0
    for b in range(3):
        for i in range(4):
            for j in range(5):
                u = float(target[b, j] - pred[b, i])
                huber = 0.5 * u * u if abs(u) <= 1 else abs(u) - 0.5
                total += abs(float(taus[i]) - (1.0 if u < 0 else 0.0)) * huber
    expected = total / (3 * 5)  # summed over predicted quantiles, mean over batch and target samples
    assert quantile_huber_loss(pred, target, taus).item() == pytest.approx(expected, rel=1e-5)


def test_bro_pessimistic_value_and_critic_loss_against_hand_formulas():
    torch.manual_seed(0)
    agent = tiny_bro(pessimism=0.5)
    q1, q2 = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, -1.0]])
    value, uncertainty = agent._value(q1, q2, -0.5)
    torch.testing.assert_close(uncertainty, torch.tensor([[0.5, 2.0]]))
    torch.testing.assert_close(value, torch.tensor([[1.5 - 0.25, 1.0 - 1.0]]))
    scalar = tiny_bro(n_quantiles=1)  # a scalar critic: the squared TD error towards the pessimistic soft target
    batch = _batch(scalar, 6)
    torch.manual_seed(1)
    loss, _, _ = scalar.critic_loss(batch)
    torch.manual_seed(1)
    with torch.no_grad():
        next_action, log_prob = scalar.actor.sample(batch.next_obs)
        t1, t2 = scalar.critic_target(batch.next_obs, next_action)
        soft = (t1 + t2) / 2 - (t1 - t2).abs() / 2 - log_prob  # pessimism 1, alpha 1
        target = batch.reward + 0.99 * (1 - batch.terminated) * soft
        q1, q2 = scalar.critic(batch.obs, batch.action)
    torch.testing.assert_close(loss, ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean())


def _batch(agent, n):
    from benchmarks.rl.replay import Transition

    g = torch.Generator().manual_seed(5)
    return Transition(
        torch.randn(n, agent.obs_dim, generator=g),
        torch.rand(n, agent.act_dim, generator=g) * 2 - 1,
        torch.randn(n, generator=g),
        torch.randn(n, agent.obs_dim, generator=g),
        (torch.rand(n, generator=g) < 0.3).float(),
    )


def test_bro_full_reset_redraws_in_place_and_clears_optimizer_state():
    torch.manual_seed(0)
    agent = tiny_bro(total_steps=200, full_reset_steps=(150,))
    t = fit(agent)
    assert agent.full_resets_done == 1
    params = {id(p) for p in agent.parameters()}
    before = [p.detach().clone() for p in agent.critic.parameters()]
    agent.full_reset(t.optimizers)
    assert {id(p) for p in agent.parameters()} == params  # the callbacks' references still hold
    assert all(not o.state for o in t.optimizers)
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic.parameters(), strict=True))
    for target, online in zip(agent.critic_target.parameters(), agent.critic.parameters(), strict=True):
        assert torch.equal(target, online)
    assert agent.log_alpha.item() == 0.0


def test_bro_optimistic_exploration_trains_a_third_network():
    torch.manual_seed(0)
    agent = tiny_bro(optimism=1.0, kl_weight=0.5)
    callbacks = method_callbacks("regrama", networks=("critic", "actor", "actor_optimistic"), reset_every=50)
    t = fit(agent, callbacks)
    assert len(t.optimizers) == 3 and set(agent.networks()) == {"critic", "actor", "actor_optimistic"}
    grama, _ = monitors(callbacks)
    assert any(n.startswith("actor_optimistic.") for n in grama.scored)
    assert grama.resets == 3 * 2  # resets requested before updates 50 and 100 (101 updates), three optimizers
    assert "train/optimistic_loss" in t.callback_metrics


# -- DACER ----------------------------------------------------------------------------------------------------
def test_dacer_shapes_and_the_reverse_chain_is_differentiable():
    torch.manual_seed(0)
    agent = DACER("Pendulum-v1", diffusion_steps=20)
    assert agent.actor.net[0].in_features == agent.obs_dim + agent.act_dim + 16  # (obs, noisy action, time)
    assert agent.critic.q1.net[-1].out_features == 2  # mean and std (Table 4)
    assert (agent.batch_size, agent.actor_lr, agent.critic_lr, agent.alpha_lr) == (256, 3e-4, 3e-4, 3e-2)
    obs = torch.randn(9, agent.obs_dim)
    action = agent.act(obs)
    assert action.shape == (9, agent.act_dim) and action.abs().max() <= 1
    torch.testing.assert_close(agent.act_deterministic(obs), agent.act_deterministic(obs))  # reproducible
    agent.actor_loss(obs).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())
    assert all(p.grad is None for p in agent.critic.parameters())  # critics frozen in the policy loss


def test_dacer_chain_recovers_the_data_when_the_noise_prediction_is_exact():
    # With the true noise eps = (x_t - sqrt(ac) x0) / sqrt(1 - ac) of a fixed target x0 predicted at every step,
    # x0's reconstruction is exact, so the chain's last step (no noise at t = 0) must land on x0.
    agent = DACER("Pendulum-v1", diffusion_steps=10)
    betas = torch.tensor(cosine_schedule(10), dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    x0 = torch.full((4, 1), 0.3)

    def oracle(obs, x, t):
        return (x - ac[t].sqrt().float() * x0) / (1 - ac[t]).sqrt().float()

    agent.actor.forward = oracle
    torch.testing.assert_close(agent.actor.sample(torch.zeros(4, 3)), x0, atol=1e-5, rtol=0)


def test_gmm_entropy_is_exact_for_one_gaussian_and_for_well_separated_components():
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[0.09, 0.03], [0.03, 0.04]])
    x = torch.randn(2, 4000, 2, generator=g) @ torch.linalg.cholesky(cov).T
    exact = 0.5 * 2 * (1 + math.log(2 * math.pi)) + 0.5 * math.log(torch.linalg.det(cov).item())
    assert gmm_entropy(x, components=1).item() == pytest.approx(exact, abs=0.03)
    centres = torch.tensor([[-0.6, 0.0], [0.0, 0.6], [0.6, 0.0]])
    y = centres[torch.arange(3000) % 3] + 0.05 * torch.randn(3000, 2, generator=g)
    y = y[torch.randperm(3000, generator=g)]
    assert gmm_entropy(y[None]).item() == pytest.approx(math.log(3) + exact_iso(0.05, 2), abs=0.03)


def exact_iso(std, d):
    return 0.5 * d * (1 + math.log(2 * math.pi)) + d * math.log(std)


def test_dacer_temperature_follows_the_entropy_estimate():
    torch.manual_seed(0)
    agent = tiny_dacer(total_steps=160, alpha_every=20)
    start = agent.log_alpha.item()
    fit(agent)
    assert agent.entropy.item() != 0.0
    # One Adam step of lr 3e-2 per entropy estimate (updates 1, 21, 41): towards the target entropy -0.9.
    steps = math.ceil(agent.updates / 20)
    direction = 1.0 if agent.entropy.item() < agent.target_entropy else -1.0
    assert (agent.log_alpha.item() - start) * direction > 0
    assert abs(agent.log_alpha.item() - start) <= steps * 3e-2 + 1e-6


# -- both agents through the callbacks, checkpoints, seeds ---------------------------------------------------------
@pytest.mark.parametrize("name", ["bro", "dacer"])
@pytest.mark.parametrize("method", ["vanilla", "regrama", "redo"])
def test_agents_train_a_few_hundred_steps_with_each_method(name, method):
    torch.manual_seed(0)
    agent = MAKERS[name](total_steps=300, learning_starts=100)
    callbacks = method_callbacks(method, networks=("critic", "actor"), reset_every=50, grama_tau=0.05, redo_tau=0.05)
    fit(agent, callbacks)
    assert agent.env_steps == 300 and agent.updates == 201
    for callback in monitors(callbacks):
        assert {n.split(".")[0] for n in callback.scored} == {"critic", "actor"}
        assert 0.0 <= callback.last_metrics[f"{callback.prefix}/ratio"] <= 1.0
        # Requested before updates 50, 100, 150, 200: the critic resets in those updates; BRO's actor too, DACER's
        # (stepping in odd updates) in the next one. 4 + 4 either way.
        assert callback.resets == (8 if callback is resetting(callbacks) else 0)
    assert all(torch.isfinite(p).all() for p in agent.parameters())


@pytest.mark.parametrize("name", ["bro", "dacer"])
def test_resume_from_a_checkpoint_continues_counters_buffer_and_state(tmp_path, name):
    torch.manual_seed(0)
    full = MAKERS[name](total_steps=300)
    fit(full)
    torch.manual_seed(0)
    first = MAKERS[name](total_steps=200)
    t = fit(first)
    path = tmp_path / "mid.ckpt"
    t.save_checkpoint(path)
    resumed = MAKERS[name](total_steps=300)
    seen = []

    class Spy(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            state = {k: v.clone() for k, v in pl_module.state_dict().items()}
            seen.append((pl_module.env_steps, len(pl_module.collector.buffer), state))

    trainer([Spy()], max_steps=-1).fit(resumed, ckpt_path=path)
    steps, rows, state = seen[0]
    # The first fit spent its credit: the resumed loop steps once before its first batch, which Lightning
    # fetches before on_train_start, so the restored 200 rows have grown by one.
    assert (steps, rows) == (201, 201)
    for key, value in first.state_dict().items():  # DACER's running std and entropy are buffers: restored too
        assert torch.equal(state[key], value), key
    assert resumed.env_steps == 300 and resumed.updates == full.updates == 201


@pytest.mark.parametrize("name", ["bro", "dacer"])
def test_same_seed_same_run_on_cpu(name):
    def run():
        pl.seed_everything(3, verbose=False)
        agent = MAKERS[name](total_steps=220, seed=3)
        callbacks = method_callbacks("regrama", networks=("critic", "actor"), reset_every=40, grama_tau=0.1)
        fit(agent, callbacks)
        grama, _ = monitors(callbacks)
        return agent.state_dict(), grama.resets, grama.last_metrics

    (a, resets_a, logs_a), (b, resets_b, logs_b) = run(), run()
    assert resets_a == resets_b > 0 and logs_a == logs_b
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- registry, runner, command line, perf ---------------------------------------------------------------------
def test_registry_knows_the_agents_and_refuses_bad_entries():
    assert {"sac", "bro", "dacer"} <= set(AGENTS) and agent_class("bro") is BRO
    with pytest.raises(ValueError, match="`agent` must be one of"):
        agent_class("td3")
    with pytest.raises(ValueError, match="OffPolicyAgent subclass"):
        register("mlp", nn.Linear)
    with pytest.raises(ValueError, match="is taken by BRO"):
        register("bro", DACER)


def test_every_agent_hyperparameter_is_a_command_line_option_with_its_default(capsys):
    config, *_ = cli.parse(["--agent", "bro", "--critic-net-depth", "4", "--n-quantiles", "50", "--optimism", "1"])
    assert config.agent_args["critic_net"] == bro_net(4) and config.agent_args["actor_net"] == bro_net(1)
    assert config.agent_args["n_quantiles"] == 50 and config.agent_args["loop"].batch_size == 128
    config, *_ = cli.parse(["--agent", "dacer", "--diffusion-steps", "8", "--width", "64"])
    assert config.agent_args["diffusion_steps"] == 8 and config.agent_args["actor_net"].width == 64
    with pytest.raises(SystemExit):
        cli.parse(["--agent", "dacer", "--help"])
    text = capsys.readouterr().out
    for option in ("--alpha-lr FLOAT", "(default: 0.03)", "--policy-delay", "--actor-net-activation"):
        assert option in text


def test_a_short_run_names_learning_starts_when_it_exceeds_the_steps(capsys):
    with pytest.raises(SystemExit):
        cli.parse(["--steps", "300"])
    assert "--learning-starts 5000 leaves no update in --steps 300" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--learning-starts"):
        tiny_bro(total_steps=100, learning_starts=100)


@pytest.mark.parametrize("name", ["bro", "dacer"])
def test_runner_trains_each_agent_and_resets_critic_and_actor(tmp_path, name, capsys):
    args = ["--agent", name, "--env", "Pendulum-v1", "--methods", "regrama", "--steps", "200"]
    args += ["--learning-starts", "100", "--batch-size", "16", "--width", "16", "--eval-every", "200"]
    args += ["--eval-episodes", "1", "--log-every", "50", "--reset-every", "50", "--replay-ratio", "1"]
    args += ["--out", str(tmp_path), "--no-progress", "--accelerator", "cpu"]
    args += ["--n-quantiles", "4"] if name == "bro" else ["--diffusion-steps", "3", "--entropy-samples", "8"]
    (summary,) = cli.main(args)
    saved = json.loads((tmp_path / "Pendulum-v1" / name / "regrama" / "seed0" / "summary.json").read_text())
    assert saved["agent"] == name and saved["networks"] == ["critic", "actor"]
    assert saved["updates"] == 101 and saved["reset_events"] == 4  # before updates 50 and 100, two networks
    assert summary["final_eval_return"] == saved["final_eval_return"]
    with pytest.raises(SystemExit) as refused:  # a usage error, before the run folder is made
        cli.main([*args, "--networks", "critic", "policy", "--out", str(tmp_path / "other")])
    assert refused.value.code == 2 and not (tmp_path / "other").exists()
    assert "--networks ['policy'] are not networks of" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["bro", "dacer"])
def test_perf_script_reports_both_rates_for_each_agent(name):
    args = ["--agent", name, "--env", "Pendulum-v1", "--updates", "10", "--warmup", "2", "--blocks", "1"]
    result = perf.main(args)
    assert result["agent"] == name and result["lightning_updates_per_s"] > 0 and result["plain_updates_per_s"] > 0
