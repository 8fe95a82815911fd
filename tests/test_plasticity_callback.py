"""PlasticityMetrics: logged values against the metrics recomputed by hand on the measured batch."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from helpers import Classifier, loader, mlp, trainer
from plasticity_models import architectures

from regrama_lightning import PlasticityMetrics
from regrama_lightning.plasticity import ALL_METRICS, approximate_rank, dead_unit_fraction, effective_rank, srank


class Recorder(pl.Callback):  # placed before the metrics callback
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((batch[0].clone(), copy.deepcopy(pl_module.net)))


def test_logged_metrics_match_a_hand_computation_on_the_measured_batch():
    torch.manual_seed(0)
    model = Classifier(mlp((6, 16, 12, 3)))
    initial = [p.detach().clone() for p in model.parameters()]
    recorder, callback = Recorder(), PlasticityMetrics(every_n_steps=3)
    trainer([recorder, callback], max_steps=3).fit(model, loader(n=96, batch=32))
    x, net = recorder.batches[2]  # the third batch is measured, with the parameters before its step
    h0 = torch.relu(net[0](x))
    h1 = torch.relu(net[2](h0))
    logged = callback.last_metrics
    assert logged["plasticity/effective_rank/net.0"] == pytest.approx(effective_rank(h0).item(), rel=1e-5)
    assert logged["plasticity/srank/net.2"] == srank(h1).item()
    assert logged["plasticity/approximate_rank/net.0"] == approximate_rank(h0).item()
    dead = (dead_unit_fraction(h0) * 16 + dead_unit_fraction(h1) * 12) / 28
    assert logged["plasticity/dead_unit_fraction"] == pytest.approx(dead.item())
    params = list(model.parameters())  # after the step: the parameter metrics are read at the batch end
    flat = torch.cat([p.detach().flatten() for p in params])
    assert logged["plasticity/weight_magnitude"] == pytest.approx(flat.abs().mean().item(), rel=1e-6)
    distance = torch.cat([(p.detach() - q).flatten() for p, q in zip(params, initial, strict=True)]).norm()
    assert logged["plasticity/distance_from_init"] == pytest.approx(distance.item(), rel=1e-5)
    grads = torch.cat([p.grad.flatten() for p in params]).norm()
    assert logged["plasticity/gradient_norm"] == pytest.approx(grads.item(), rel=1e-5)
    assert "plasticity/effective_rank/net.4" not in logged  # the head's outputs are not features


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "bro", "sac"])
def test_every_metric_is_logged_on_every_architecture(name):
    model, data = architectures()[name]
    callback = PlasticityMetrics(every_n_steps=2)
    trainer([callback], max_steps=8 if name == "sac" else 4).fit(model, data)
    for metric in ALL_METRICS:
        assert metric in {k.split("/")[1] for k in callback.last_metrics}, metric
    assert all(v == v for v in callback.last_metrics.values())  # no NaN


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="metrics"):
        PlasticityMetrics(metrics=["rank"])
    with pytest.raises(ValueError, match="every_n_steps"):
        PlasticityMetrics(every_n_steps=0)


def test_non_finite_features_log_nan_and_training_goes_on():
    torch.manual_seed(0)
    model = Classifier(mlp((6, 16, 12, 3)))
    with torch.no_grad():
        model.net[0].weight[0, 0] = float("nan")
    callback = PlasticityMetrics(every_n_steps=2, metrics=["effective_rank", "weight_magnitude"])
    with pytest.warns(UserWarning, match="non-finite activations"):
        trainer([callback], max_steps=2).fit(model, loader())
    assert (
        callback.last_metrics["plasticity/effective_rank/net.0"]
        != callback.last_metrics["plasticity/effective_rank/net.0"]
    )  # NaN


def test_a_missing_step_attribute_is_refused_at_setup():
    with pytest.raises(ValueError, match="step_attribute='env_steps'"):
        trainer([PlasticityMetrics(step_attribute="env_steps")], max_steps=1).fit(Classifier(mlp()), loader())
