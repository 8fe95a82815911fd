"""fig3-quadrants and fig6b-irreversible: the score recorder against a direct computation, the two analyses on
planted scores, the paper-scale settings, and one smoke run through ``python -m benchmarks.paper``."""

import copy

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.paper import cli, irreversible, neuron_runs, quadrants
from benchmarks.paper.neuron_scores import NeuronScores, Recorded, load
from regrama_lightning import ReDo, ReGraMa

DEAD = 2  # the planted dead neuron of the first layer


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        with torch.no_grad():  # never active: zero incoming weights, negative bias
            self.net[0].weight[DEAD] = 0.0
            self.net[0].bias[DEAD] = -1.0

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Snapshots(pl.Callback):
    """The parameters each step starts from and its batch, by step number."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen[trainer.global_step + 1] = (copy.deepcopy(pl_module.net), [t.clone() for t in batch])


def _direct_scores(net, batch):
    """GraMa (mean |W.grad| over incoming weights) and ReDo (mean |ReLU output|), each over its layer mean."""
    x, y = batch
    hidden = torch.relu(net[0](x))
    loss = F.cross_entropy(net[2](hidden), y)
    (grad,) = torch.autograd.grad(loss, net[0].weight)
    grama = grad.abs().mean(1)
    redo = hidden.abs().mean(0)
    return (grama / grama.mean()).detach().numpy(), (redo / redo.mean()).detach().numpy()


def test_recorded_scores_match_a_direct_computation_on_a_planted_dead_neuron(tmp_path):
    torch.manual_seed(1)
    data = TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
    monitors = [ReGraMa(reset_every_n_steps=None, log_every_n_steps=2), ReDo(reset_every_n_steps=None,
                                                                             log_every_n_steps=2)]  # fmt: skip
    snapshots, path = Snapshots(), tmp_path / "scores.npz"
    flags = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = pl.Trainer(max_steps=8, callbacks=[snapshots, *monitors, NeuronScores(path, 4)], **flags)
    trainer.fit(Net(), DataLoader(data, batch_size=16, shuffle=True))
    recorded = load(path)
    assert recorded.steps.tolist() == [4, 8] and recorded.layers == ("net.0",) and recorded.sizes.tolist() == [6]
    assert recorded.taus == {"grama": 0.01, "redo": 0.02}
    for i, step in enumerate(recorded.steps):
        grama, redo = _direct_scores(*snapshots.seen[int(step)])
        # The parameters move every step (SGD at 0.5): a record of another step would not match.
        np.testing.assert_allclose(recorded.scores["grama"][i], grama, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(recorded.scores["redo"][i], redo, rtol=1e-4, atol=1e-6)
        assert recorded.scores["grama"][i, DEAD] == 0.0 and recorded.scores["redo"][i, DEAD] == 0.0
        assert np.all(np.delete(recorded.scores["grama"][i], DEAD) > 0.01)
    before = snapshots.seen[4][0][0].weight
    assert not torch.equal(before, snapshots.seen[8][0][0].weight)


def test_recorder_refuses_bad_periods_and_a_trainer_without_callbacks(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps"):
        NeuronScores(tmp_path / "s.npz", 0)
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,))), batch_size=8)
    kwargs = {"max_steps": 2, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    monitor = ReGraMa(reset_every_n_steps=None, log_every_n_steps=2)
    with pytest.raises(ValueError, match=r"`every_n_steps` \(3\) must be a multiple of the ReGraMa"):
        pl.Trainer(callbacks=[monitor, NeuronScores(tmp_path / "s.npz", 3)], **kwargs).fit(Net(), data)
    with pytest.raises(ValueError, match="needs a ReGraMa or ReDo callback"):
        pl.Trainer(callbacks=[NeuronScores(tmp_path / "s.npz", 2)], **kwargs).fit(Net(), data)
    with pytest.raises(ValueError, match="`step_attribute` 'updates' must name an int attribute"):
        pl.Trainer(callbacks=[monitor, NeuronScores(tmp_path / "s.npz", 2, "updates")], **kwargs).fit(Net(), data)


def _recorded(grama, redo, steps=None):
    grama, redo = np.asarray(grama, np.float32), np.asarray(redo, np.float32)
    steps = np.arange(1, len(grama) + 1) * 1000 if steps is None else np.asarray(steps)
    return Recorded(steps, steps // 2, ("a", "b"), np.array([grama.shape[1] - 2, 2]), {"grama": grama, "redo": redo},
                    {"grama": 0.01, "redo": 0.02})  # fmt: skip


def test_quadrants_count_each_methods_selection_by_kind():
    # 8 neurons; top 25% = 2 of each ranking: expressive high {5, 4}, learning high {0, 5}.
    redo = [0.0, 0.0, 0.01, 1.0, 2.0, 3.0, 1.5, 0.5]
    grama = [5.0, 0.0, 0.005, 1.0, 0.001, 2.0, 0.5, 0.7]
    early = [[1.0] * 8]  # outside the last quarter: not counted
    counts, totals, analysed, per_layer = quadrants.kind_counts(_recorded(early * 3 + [grama], early * 3 + [redo]))
    assert analysed == 1
    # ReDo selects 0 (low expr, high learn), 1 and 2 (low, low); ReGraMa 1, 2 (low, low) and 4 (high expr, low learn).
    kinds = [name for name, _ in quadrants.KINDS.values()]
    assert kinds == ["high expr, high learn", "low expr, high learn", "low expr, low learn", "high expr, low learn"]
    assert counts["redo"].tolist() == [0, 1, 2, 0] and counts["regrama"].tolist() == [0, 0, 2, 1]
    assert counts["all"].tolist() == [1, 1, 5, 1]  # the base rates: every neuron once
    assert totals == {"redo": 3, "regrama": 3, "all": 8}
    # layer "a" holds neurons 0-5, "b" neurons 6-7
    assert per_layer["redo"].tolist() == [3, 0] and per_layer["regrama"].tolist() == [3, 0]
    assert per_layer["all"].tolist() == [6, 2]


def test_irreversible_trace_follows_the_sampled_neurons():
    # 10 records (steps 1000..10000); the window (first third) is records 0-2; 5 neurons.
    grama = np.ones((10, 5))
    grama[:, 0] = 0.0  # inactive from the start, never recovers
    grama[:, 1] = 0.001
    grama[5, 1] = 0.5  # recovers once, in the second phase, then falls back
    grama[2, 2] = 0.002  # inactive at the window's last record only, active after it
    grama[:, 3] = 0.001
    grama[0, 3], grama[1, 3] = 0.002, 0.5  # recovers inside the window, then inactive again
    # neuron 4 never inactive: not sampled
    result = irreversible.trace(_recorded(grama, grama), seed=0)
    assert result["sampled"] == 4 and result["window_env_steps"] == 1500
    assert result["layers"] == ["a", "a", "a", "b"]  # neurons 0-2 in layer "a" (3 neurons), 3 in "b"
    # 7 later records in 5 phases ending at records 4, 6, 7, 8, 9; sampled neurons in index order 0-3.
    assert [p["env_steps"] for p in result["phases"]] == [2500, 3500, 4000, 4500, 5000]
    ever = [p["ever"].tolist() for p in result["phases"]]
    assert ever == [[False, False, True, True]] + [[False, True, True, True]] * 4
    above = [(p["scores"] > irreversible.TAU).tolist() for p in result["phases"]]
    assert above[0] == above[1] == [False, False, True, False]
    assert irreversible.trace(_recorded(np.ones((10, 4)), np.ones((10, 4))), seed=0) is None  # nothing inactive


def test_paper_scale_is_bro_net_of_table_3_on_dog_walk(tmp_path):
    from benchmarks.rl.cli import build_parser

    args = vars(build_parser("bro").parse_args(neuron_runs.argv("paper", tmp_path)))
    # Appendix A Table 3 (BRO-net), seeds 0-4, Dog Walk; 1M steps (the project's budget where the paper gives none).
    expected = {"env": "dmc:dog-walk", "methods": ["vanilla"], "seeds": [0, 1, 2, 3, 4], "steps": 1_000_000,
                "agent.actor_lr": 1e-4, "agent.critic_lr": 1e-3, "agent.gamma": 0.99, "agent.loop.replay_ratio": 2.0,
                "agent.loop.batch_size": 128, "agent.loop.buffer_size": 1_000_000, "agent.actor_net.width": 256,
                "agent.critic_net.width": 256, "agent.actor_net.depth": 1, "agent.critic_net.depth": 2,
                "agent.critic_net.layer_norm": True, "agent.critic_net.residual": True, "grama_tau": 0.01,
                "redo_tau": 0.02}  # fmt: skip
    assert {k: args[k] for k in expected} == expected
    assert neuron_runs.RECORD_EVERY["paper"] % args["log_every"] == 0


def test_smoke_runs_once_for_both_experiments_and_reports(tmp_path, capsys):
    with pytest.raises(SystemExit):  # nothing run yet: a usage error naming the missing seeds
        cli.main(["report", "fig3-quadrants", "--scale", "smoke", "--out", str(tmp_path)])
    assert "missing seeds [0]" in capsys.readouterr().err
    cli.main(["run", "fig3-quadrants", "--scale", "smoke", "--out", str(tmp_path)])
    cli.main(["run", "fig6b-irreversible", "--scale", "smoke", "--out", str(tmp_path)])
    assert "done before" in capsys.readouterr().out  # the second experiment reuses the first one's run
    (path,) = tmp_path.glob(f"neuron-scores/smoke/*/bro/vanilla/seed0/{neuron_runs.SCORES_FILE}")
    recorded = load(path)
    assert recorded.steps.tolist() == [20, 40, 60, 80, 100]  # 150 steps, 100 random, replay ratio 2
    assert recorded.scores["grama"].shape == recorded.scores["redo"].shape == (5, int(recorded.sizes.sum()))
    assert {n.split(".")[0] for n in recorded.layers} == {"critic", "actor"}
    for name in ("fig3-quadrants", "fig6b-irreversible"):
        cli.main(["report", name, "--scale", "smoke", "--out", str(tmp_path)])
        folder = tmp_path / name
        assert (folder / "figure.png").stat().st_size > 0 and "seeds [0]" in (folder / "table.md").read_text()
    table = (tmp_path / "fig3-quadrants" / "table.csv").read_text().splitlines()
    assert len(table) == 1 + 3 * 4  # two methods and all neurons x four kinds


class Counted(Net):
    """Counts its own steps from ``start``, as a resumed agent's ``updates``."""

    def __init__(self, start):
        super().__init__()
        self.count = start

    def on_train_batch_start(self, batch, batch_idx):
        self.count += 1


def test_a_resumed_run_keeps_the_records_up_to_its_restart_and_appends(tmp_path):
    path, flags = (
        tmp_path / "scores.npz",
        {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False},
    )

    def fit(start, steps, data_seed):
        torch.manual_seed(data_seed)
        data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,))), batch_size=16)
        monitors = [ReGraMa(reset_every_n_steps=None, log_every_n_steps=2), ReDo(reset_every_n_steps=None)]
        recorder = NeuronScores(path, 4, step_attribute="count")
        pl.Trainer(max_steps=steps, log_every_n_steps=2, callbacks=[*monitors, recorder], **flags).fit(
            Counted(start), data
        )
        return load(path)

    first = fit(0, 8, data_seed=1)
    assert first.steps.tolist() == [4, 8]
    resumed = fit(4, 4, data_seed=2)  # an attempt restarting at step 4, on other data
    assert resumed.steps.tolist() == [4, 8]
    np.testing.assert_array_equal(resumed.scores["grama"][0], first.scores["grama"][0])
    assert not np.allclose(resumed.scores["grama"][1], first.scores["grama"][1])
