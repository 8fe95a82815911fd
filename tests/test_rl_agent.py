"""The SAC LightningModule and its environment-driven loop: counters, replay ratio, network variants with the
callbacks, critic scores free of actor gradients, evaluation, checkpoint and resume, runner, plot and perf."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from helpers import trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from rl_helpers import make

from benchmarks.rl import cli, perf, plot
from benchmarks.rl.envs import make_env
from benchmarks.rl.evaluation import Evaluation, evaluate
from benchmarks.rl.methods import method_callbacks, monitors, resetting
from benchmarks.rl.networks import NetworkConfig
from benchmarks.rl.plot import read_series
from benchmarks.rl.sac import SAC
from regrama_lightning import ReGraMa

TINY = NetworkConfig(width=32, depth=2)


def tiny_sac(**kwargs) -> SAC:
    defaults = dict(
        env_id="Pendulum-v1", total_steps=300, learning_starts=100, batch_size=32, actor_net=TINY, critic_net=TINY
    )
    defaults.update(kwargs)
    return make(SAC, **defaults)


def fit(agent, callbacks=(), **kwargs) -> pl.Trainer:
    """Fit with a default Trainer otherwise: no step or epoch limit, the agent's step budget ends the fit."""
    kwargs.setdefault("log_every_n_steps", 10)
    t = trainer(list(callbacks), max_steps=-1, **kwargs)
    t.fit(agent)
    return t


class CountActs(SAC):
    """Counts calls of the exploration policy (the loop's random phase must not call it)."""

    acts = 0

    def act(self, obs):
        self.acts += 1
        return super().act(obs)


@pytest.mark.parametrize(
    ("replay_ratio", "num_envs", "learning_starts"), [(1.0, 1, 100), (0.5, 1, 100), (2.0, 1, 100), (1.0, 2, 100)]
)
def test_counters_follow_the_replay_ratio_and_global_step_counts_every_optimizer_step(
    replay_ratio, num_envs, learning_starts
):
    torch.manual_seed(0)
    agent = make(
        CountActs,
        total_steps=300,
        learning_starts=learning_starts,
        replay_ratio=replay_ratio,
        num_envs=num_envs,
        batch_size=32,
        actor_net=TINY,
        critic_net=TINY,
    )
    t = fit(agent)
    # Hand count: vector steps k = 1..300/num_envs; updates are credited from the step whose buffer holds
    # learning_starts transitions on.
    vector_steps = 300 // num_envs
    credited = sum(1 for k in range(1, vector_steps + 1) if k * num_envs >= learning_starts)
    updates = math.floor(credited * num_envs * replay_ratio)
    assert agent.env_steps == 300
    assert agent.updates == updates
    assert agent.acts == sum(1 for k in range(vector_steps) if k * num_envs >= learning_starts)
    actor_steps = agent.policy_frequency * math.ceil(updates / agent.policy_frequency)
    assert t.global_step == updates + actor_steps  # Lightning counts critic and actor steps alike
    assert agent.episodes == vector_steps // 200 * num_envs  # Pendulum's episodes last 200 steps


VARIANTS = [
    NetworkConfig(32, 2, "relu"),
    NetworkConfig(32, 2, "tanh", layer_norm=True),
    NetworkConfig(32, 1, "sigmoid", residual=True),
    NetworkConfig(32, 2, "leaky_relu", layer_norm=True, residual=True),
    NetworkConfig(32, 2, "gelu"),
    NetworkConfig(32, 2, "swish", layer_norm=True),
    NetworkConfig(32, 1, "mish", layer_norm=True, residual=True),
]


@pytest.mark.parametrize(
    "network", VARIANTS, ids=lambda n: f"{n.activation}-ln{int(n.layer_norm)}-res{int(n.residual)}"
)
@pytest.mark.parametrize("method", ["vanilla", "regrama", "redo"])
def test_every_network_variant_trains_with_each_method(network, method):
    torch.manual_seed(0)
    agent = tiny_sac(total_steps=250, learning_starts=50, actor_net=network, critic_net=network)
    callbacks = method_callbacks(method, networks=("critic", "actor"), reset_every=50, grama_tau=0.05, redo_tau=0.05)
    fit(agent, callbacks)
    assert agent.updates == 201
    for callback in monitors(callbacks):
        assert callback.scored, "no layer was scored"
        assert all(name.startswith(("critic.", "actor.")) for name in callback.scored)
        assert 0.0 <= callback.last_metrics[f"{callback.prefix}/ratio"] <= 1.0
        # Requested before updates 50, 100, 150, 200: the critic resets in those updates, the actor (stepping in
        # odd updates 1, 3, ...) in the next one: 4 + 4.
        assert callback.resets == (8 if callback is resetting(callbacks) else 0)
    assert all(torch.isfinite(p).all() for p in agent.parameters())


class GradientProbe(pl.Callback):
    """Placed after ReGraMa: the critic gradients its optimizer stepped on, and what is left after the update."""

    def __init__(self, grama):
        self.grama = grama
        self.stepped, self.after, self.scores = [], [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if optimizer is trainer.optimizers[0]:
            self.stepped.append({n: m.weight.grad.clone() for n, m in self._critic_layers(pl_module)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append({n: m.weight.grad.clone() for n, m in self._critic_layers(pl_module)})
        self.scores.append({n: s.clone() for n, s in self.grama.latest_scores.items() if n.startswith("critic.")})

    @staticmethod
    def _critic_layers(pl_module):
        return [(f"critic.{n}", m) for n, m in pl_module.critic.named_modules() if isinstance(m, torch.nn.Linear)]


def test_actor_loss_adds_nothing_to_critic_gradients_or_scores():
    torch.manual_seed(0)
    agent = tiny_sac(total_steps=130, learning_starts=100)
    grama = ReGraMa(tau=0.0, reset_every_n_steps=None, include=["critic.*"], log_every_n_steps=1)
    probe = GradientProbe(grama)
    fit(agent, [grama, probe], log_every_n_steps=1)
    assert len(probe.stepped) == agent.updates == 31
    for stepped, after, scores in zip(probe.stepped, probe.after, probe.scores, strict=True):
        for name, grad in stepped.items():
            assert torch.equal(after[name], grad)  # the actor's backward (every other update) added nothing
            if name in scores:  # hidden layers: mean |dL/dW| per neuron over the critic loss, layer-normalised
                raw = grad.abs().mean(1)
                torch.testing.assert_close(scores[name], raw / (raw.mean() + 1e-9))
    assert set(probe.scores[-1]) == {"critic.q1.net.0", "critic.q1.net.2", "critic.q2.net.0", "critic.q2.net.2"}
    assert agent.actor.net[0].weight.grad is not None and agent.actor.net[0].weight.grad.abs().sum() > 0


def test_evaluate_sums_each_episode_once_like_a_hand_rollout():
    env = make_env("Pendulum-v1", seed=3, num_envs=2)
    returns = evaluate(lambda obs: torch.zeros(len(obs), 1), env, torch.device("cpu"))
    env.close()
    for i in range(2):  # the same episodes by hand, with gymnasium's own env and the same seeds
        single = gym.make("Pendulum-v1")
        single.reset(seed=3 + i)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = single.step(np.zeros(1, np.float32))
            total, done = total + reward, terminated or truncated
        assert returns[i] == pytest.approx(total)


def test_logs_are_written_against_environment_steps(tmp_path):
    torch.manual_seed(0)
    agent = tiny_sac(total_steps=400)
    evaluation = Evaluation(every_n_env_steps=150, episodes=2)
    callbacks = [*method_callbacks("regrama", reset_every=100), evaluation]
    fit(agent, callbacks, logger=CSVLogger(tmp_path, name="run"), log_every_n_steps=50)
    csv_path = tmp_path / "run" / "version_0" / "metrics.csv"
    eval_steps, _ = read_series(csv_path, "eval/return")
    assert eval_steps.tolist() == [150, 300, 400]  # scheduled, then the final policy
    assert [s for s, _, _ in evaluation.history] == [150, 300, 400]
    episode_steps, episode_returns = read_series(csv_path, "train/episode_return")
    assert episode_steps.tolist() == [200, 400] and (episode_returns < 0).all()
    loss_steps, _ = read_series(csv_path, "train/critic_loss")
    # Updates 50, 100, ... log. Update k runs at environment step 100 + k: one update per step from step 100,
    # and Lightning has fetched the next batch (one more environment step, none after the last) before it runs.
    assert loss_steps.tolist() == [min(100 + k, 400) for k in range(50, 301, 50)]
    grama_steps, grama = read_series(csv_path, "grama/ratio")
    # The callbacks measure the same updates (the critic's 50th, 100th, ... step): losses and ratios share steps.
    assert grama_steps.tolist() == loss_steps.tolist() and ((grama >= 0) & (grama <= 1)).all()
    reset_steps, _ = read_series(csv_path, "reset/neurons")
    assert reset_steps.tolist() == [200, 300, 400]  # after critic updates 100, 200 and 300


@pytest.mark.parametrize("checkpoint_buffer", [True, False])
def test_resume_from_a_mid_run_checkpoint_continues_counters_buffer_and_schedule(tmp_path, checkpoint_buffer):
    def make():
        return tiny_sac(total_steps=400, checkpoint_buffer=checkpoint_buffer)

    torch.manual_seed(0)
    full = make()
    # After update U Lightning has counted U critic and 2 * ceil(U / 2) actor steps: 200 at U = 100.
    saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=200, save_top_k=-1, filename="{step}")
    grama = ReGraMa(reset_every_n_steps=100, include=["critic.*"])
    fit(full, [grama, saver], enable_checkpointing=True)
    path = sorted(tmp_path.glob("step=200*.ckpt"))[0]
    saved = torch.load(path, weights_only=True)["off_policy_agent"]
    # Update 100 ran at step 200, with its successor's batch fetched ahead: that batch's credit is saved.
    assert (saved["updates"], saved["env_steps"], saved["update_credit"]) == (100, 200, 1.0)
    assert ("buffer" in saved) == checkpoint_buffer
    resumed = make()
    resumed_grama = ReGraMa(reset_every_n_steps=100, include=["critic.*"])
    restored = []

    class Spy(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            restored.append((pl_module.env_steps, len(pl_module.collector.buffer)))

    trainer([resumed_grama, Spy()], max_steps=-1).fit(resumed, ckpt_path=path)
    # Lightning fetches the first batch before on_train_start: with the buffer restored that batch spends the saved
    # credit at once; without it, 100 steps of the restored policy refill the buffer first.
    assert restored == [(200, 200) if checkpoint_buffer else (300, 100)]
    assert resumed.env_steps == 400
    if checkpoint_buffer:  # the same data and credit: the same number of updates as the uninterrupted run
        assert resumed.updates == full.updates == 301
        assert resumed_grama.resets == grama.resets == 3
    else:  # the buffer refills with learning_starts=100 transitions of the current policy before updating again
        assert resumed.updates == 100 + 1 + (400 - 200 - 100 + 1)


def test_runner_writes_logs_summary_checkpoint_and_the_plot(tmp_path):
    args = ["--env", "Pendulum-v1", "--methods", "vanilla", "regrama", "--steps", "300", "--learning-starts", "100"]
    args += ["--batch-size", "32", "--width", "32", "--eval-every", "150", "--eval-episodes", "2", "--log-every", "50"]
    args += ["--reset-every", "100", "--out", str(tmp_path), "--no-progress", "--accelerator", "cpu"]
    summaries = cli.main(args)
    assert [s["method"] for s in summaries] == ["vanilla", "regrama"]
    for method in ("vanilla", "regrama"):
        folder = tmp_path / "Pendulum-v1" / "sac" / method / "seed0"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["env_steps"] == 300 and summary["updates"] == 201
        assert summary["reset_events"] == (2 if method == "regrama" else 0)
        header = (folder / "metrics.csv").read_text().splitlines()[0].split(",")
        expected = {"step", "eval/return", "grama/ratio", "dormant/ratio", "train/critic_loss", "train/alpha"}
        expected |= {"train/episode_return", "perf/env_steps_per_s", "perf/updates_per_s", "reset/neurons"}
        assert expected <= set(header) if method == "regrama" else expected - {"reset/neurons"} <= set(header)
        assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
        assert "off_policy_agent" in torch.load(folder / "last.ckpt", weights_only=True)
    png = plot.main([str(tmp_path / "Pendulum-v1")])
    assert png.stat().st_size > 10_000


def test_perf_script_reports_both_rates():
    result = perf.main(["--env", "Pendulum-v1", "--updates", "20", "--warmup", "5", "--blocks", "1"])
    assert result["lightning_updates_per_s"] > 0 and result["plain_updates_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["lightning_updates_per_s"] / result["plain_updates_per_s"])


def test_sac_runs_on_a_dm_control_task():
    torch.manual_seed(0)
    agent = tiny_sac(env_id="dmc:cartpole-balance", total_steps=150, learning_starts=50)
    fit(agent, method_callbacks("regrama", reset_every=50))
    assert (agent.obs_dim, agent.act_dim) == (5, 1) and agent.updates == 101


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="`replay_ratio` must be a positive number"):
        tiny_sac(replay_ratio=0)
    with pytest.raises(ValueError, match="`buffer_size=50` must hold at least"):
        tiny_sac(buffer_size=50)
    with pytest.raises(ValueError, match="`target_tau` must be in"):
        tiny_sac(target_tau=0)
    with pytest.raises(ValueError, match="`activation` must be one of"):
        NetworkConfig(activation="elu")
    with pytest.raises(ValueError, match="dmc"):
        tiny_sac(env_id="dmc:cheetah-fly")
    with pytest.raises(ValueError, match="`method` must be one of"):
        method_callbacks("shrink")


def test_sac_and_its_callbacks_from_a_lightning_cli_command_line(monkeypatch):
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.setattr("sys.argv", ["train.py"])  # the arguments below stand for the command line
    args = ["--model.env_id=Pendulum-v1", "--model.loop.total_steps=150", "--model.loop.learning_starts=50"]
    args += ["--model.loop.batch_size=16", "--model.critic_net.width=24", "--model.critic_net.activation=mish"]
    args += ["--model.critic_net.layer_norm=true", "--model.actor_net.residual=true", "--trainer.logger=false"]
    args += ["--trainer.callbacks+=regrama_lightning.ReGraMa", "--trainer.callbacks.include=[critic.*]"]
    args += ["--trainer.callbacks.step_attribute=env_steps", "--trainer.callbacks.reset_every_n_steps=50"]
    args += ["--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false"]
    cli = LightningCLI(SAC, args=["fit", *args], save_config_callback=None)
    agent = cli.model
    assert agent.critic.q1.net[1].normalized_shape == (24,) and isinstance(agent.critic.q1.net[2], torch.nn.Mish)
    assert agent.env_steps == 150 and agent.updates == 101
    assert cli.trainer.callbacks[0].resets == 2


def test_same_seed_same_run_on_cpu():
    def run():
        pl.seed_everything(3, verbose=False)
        agent = tiny_sac(total_steps=250, seed=3)
        callbacks = method_callbacks("regrama", reset_every=50, grama_tau=0.1)
        fit(agent, callbacks)
        grama, _ = monitors(callbacks)
        return agent.state_dict(), grama.resets, grama.last_metrics

    (a, resets_a, logs_a), (b, resets_b, logs_b) = run(), run()
    assert resets_a == resets_b == 3 and logs_a == logs_b
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runner_can_keep_outgoing_weights_in_a_run_of_its_own(tmp_path):
    args = ["--env", "Pendulum-v1", "--methods", "regrama", "--steps", "200", "--learning-starts", "50"]
    args += ["--batch-size", "16", "--width", "16", "--eval-every", "200", "--eval-episodes", "1", "--log-every", "50"]
    args += ["--reset-every", "50", "--keep-outgoing", "--out", str(tmp_path), "--no-progress", "--accelerator", "cpu"]
    (summary,) = cli.main(args)
    saved = json.loads((tmp_path / "Pendulum-v1" / "sac" / "regrama-keep" / "seed0" / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary)) and saved["config"]["zero_outgoing"] is False
    assert saved["reset_events"] == 3  # after critic updates 50, 100 and 150 (151 updates)


def test_target_critics_follow_by_polyak_averaging():
    torch.manual_seed(0)
    agent = tiny_sac(target_tau=0.25)
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.add_(1.0)  # critics and targets now differ
    before = [t.clone() for t in agent.critic_target.parameters()]
    for _ in range(2):
        agent.update_targets()
    for old, target, online in zip(before, agent.critic_target.parameters(), agent.critic.parameters(), strict=True):
        once = 0.75 * old + 0.25 * online
        torch.testing.assert_close(target, 0.75 * once + 0.25 * online)
    assert all(not p.requires_grad for p in agent.critic_target.parameters())
