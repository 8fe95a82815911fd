"""NeuronPruning: a planted dead neuron is pruned, and pruned entries stay exactly zero under Adam."""

from __future__ import annotations

import pytest
import torch
from helpers import Classifier, loader, mlp, plant_dead_neuron, trainer
from plasticity_models import architectures
from torch import nn

from regrama_lightning import NeuronPruning, trace_topology
from regrama_lightning.methods import prune_entries


def test_prune_entries_by_hand_for_a_flattened_conv_reader():
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.Flatten(), nn.Linear(3 * 4, 2))
    layer = trace_topology(net, lambda: net(torch.randn(2, 1, 2, 2)))["0"]
    entries = prune_entries(layer, torch.tensor([False, True, False]))
    weight, bias, reader = (m for _, m in entries)
    assert weight[:, 0, 0, 0].tolist() == [False, True, False] and bias.tolist() == [False, True, False]
    expected = torch.zeros(2, 12, dtype=torch.bool)
    expected[:, 4:8] = True  # channel 1's four positions after Flatten
    assert torch.equal(reader, expected)


def test_planted_dead_neuron_is_pruned_and_stays_zero():
    torch.manual_seed(0)
    model = Classifier(mlp((6, 16, 16, 3)))
    plant_dead_neuron(model.net[0], 5)
    callback = NeuronPruning(score="activation", tau=0.0, reset_every_n_steps=2)
    trainer([callback], max_steps=8).fit(model, loader(n=128))
    assert callback.pruned["net.0"].nonzero().flatten().tolist() == [5]
    assert model.net[0].weight[5].abs().sum() == 0 and model.net[0].bias[5] == 0
    assert model.net[2].weight[:, 5].abs().sum() == 0
    pruned = sum(int(m.sum()) for m in callback.pruned.values())
    assert callback.last_metrics["prune/fraction"] == pytest.approx(pruned / 32)


def _check_pruned_entries_zero(model, callback):
    params = dict(model.named_parameters())
    assert callback.action.masks, "nothing was pruned"
    for name, mask in callback.action.masks.items():
        assert torch.equal(params[name][mask], torch.zeros_like(params[name][mask])), name


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "bro", "sac"])
def test_pruned_weights_stay_exactly_zero_after_more_adam_steps(name):
    model, data = architectures()[name]
    # Pruned at steps 4 and 8; Adam steps follow each (through norms, gradients reach the pruned entries).
    callback = NeuronPruning(tau=0.6, max_reset_fraction=0.25, reset_every_n_steps=4)
    trainer([callback], max_steps=10).fit(model, data)
    _check_pruned_entries_zero(model, callback)
    assert 0 < callback.last_metrics["prune/fraction"] < 1


def test_the_mask_is_what_keeps_entries_at_zero_when_gradients_reach_them():
    """Behind a LayerNorm with a non-zero shift, a pruned neuron still outputs a value, so its readers' columns
    get gradients: without the mask re-applied after each step, Adam would move them."""

    def run(keep_mask: bool):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))
        nn.init.constant_(net[1].bias, 1.0)
        model = Classifier(net)
        callback = NeuronPruning(tau=0.6, max_reset_fraction=0.25, reset_every_n_steps=3)
        if not keep_mask:
            callback.action.after_step = lambda index: None
        trainer([callback], max_steps=8).fit(model, loader(n=128))  # pruned at 3 and 6
        mask = callback.action.masks["net.3.weight"]
        return model.net[3].weight[mask].abs().max().item()

    assert run(keep_mask=True) == 0.0
    assert run(keep_mask=False) > 0.0


def test_resumed_run_keeps_the_checkpointed_masks(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))
    nn.init.constant_(net[1].bias, 1.0)
    model = Classifier(net)
    first = NeuronPruning(tau=0.6, max_reset_fraction=0.25, reset_every_n_steps=3, name="prune")
    t = trainer([first], max_steps=3)
    t.fit(model, loader(n=48))
    t.save_checkpoint(tmp_path / "c.ckpt")
    resumed = NeuronPruning(tau=0.6, max_reset_fraction=0.25, reset_every_n_steps=100, name="prune")
    trainer([resumed], max_steps=6).fit(model, loader(n=48), ckpt_path=tmp_path / "c.ckpt")
    assert resumed.action.masks.keys() == first.action.masks.keys()
    assert torch.equal(resumed.pruned["net.0"].cpu(), first.pruned["net.0"].cpu())
    _check_pruned_entries_zero(model, resumed)
