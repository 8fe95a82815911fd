"""Scores against independent computations on a hand-built network with a planted dead neuron."""

import pytest
import torch
from helpers import mlp, plant_dead_neuron
from torch import nn
from torch.nn import functional as F  # noqa: N812

from regrama_lightning import (
    DormantRatio,
    GraMaRatio,
    activation_magnitude_sum,
    grama_scores,
    normalize,
    output_grad_magnitude_sum,
    trace_topology,
    weight_grad_magnitude,
    weight_grad_magnitude_sum,
)
from regrama_lightning.buffer import MeasurementBuffer
from regrama_lightning.gather import GradientWindow
from regrama_lightning.signals import WeightGradient
from regrama_lightning.tracing.probe import ActivationProbe
from regrama_lightning.track import OptimizerTrack


def _planted():
    torch.manual_seed(0)
    net = mlp((6, 8, 8, 3))
    plant_dead_neuron(net[0], 5)
    x = torch.randn(32, 6)
    y = torch.randint(0, 3, (32,))
    return net, x, y


def test_weight_score_matches_explicit_loop():
    net, x, y = _planted()
    F.cross_entropy(net(x), y).backward()
    grad = net[2].weight.grad
    by_hand = torch.tensor([sum(abs(float(g)) for g in row) / len(row) for row in grad])
    assert torch.allclose(weight_grad_magnitude(net[2]), by_hand, atol=1e-7)


def test_planted_dead_neuron_scores_zero_under_all_three_definitions():
    net, x, y = _planted()
    layers = trace_topology(net, lambda: net(x))
    gradients, activations = GradientWindow({"0": net[0]}), GradientWindow({"0": net[0]})
    for window in (gradients, activations):
        window.start(["0"])
    net[0].register_forward_hook(lambda module, args, out: gradients.add_output_gradients("0", out, channel_dim=-1))
    with ActivationProbe({"0": layers["0"]}, activations.add_on_backward):
        loss = F.cross_entropy(net(x), y)
    loss.backward()
    weight = normalize(weight_grad_magnitude(net[0]))
    out_sum, out_n = gradients.collect(["0"])
    act_sum, act_n = activations.collect(["0"])
    output = normalize(out_sum["0"] / out_n["0"])
    dormant = normalize(act_sum["0"] / act_n["0"])
    # Theorem 1: a ReLU neuron that is never active has exactly zero gradient, under both GraMa definitions.
    for scores in (weight, output, dormant):
        assert scores[5] == 0.0
        assert (scores[torch.arange(8) != 5] > 0).all()


def test_output_score_is_per_sample_abs_of_output_gradient():
    torch.manual_seed(1)
    net = mlp((6, 8, 8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    window = GradientWindow({"2": net[2]})
    net[2].register_forward_hook(lambda module, args, out: window.add_output_gradients("2", out, channel_dim=-1))
    window.start(["2"])
    F.cross_entropy(net(x), y).backward()
    sums, counts = window.collect(["2"])
    # Independent: per-sample gradients of the loss w.r.t. the layer output, one sample at a time.
    rows = []
    for i in range(16):
        hi = net[2](net[1](net[0](x[i : i + 1]))).detach().requires_grad_(True)
        li = F.cross_entropy(net[4](net[3](hi)), y[i : i + 1]) / 16
        (gi,) = torch.autograd.grad(li, hi)
        rows.append(gi.abs()[0])
    expected = torch.stack(rows).mean(0)
    assert counts["2"] == 16
    assert torch.allclose(sums["2"] / counts["2"], expected, rtol=1e-5, atol=1e-9)
    # The authors' |W.grad| differs from Eq. 2: signs cancel across samples before the abs.
    assert not torch.allclose(normalize(sums["2"]), normalize(weight_grad_magnitude(net[2])))


def test_activation_score_uses_the_traced_nonlinearity_not_relu():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 2))
    x = torch.randn(10, 4)
    layers = trace_topology(net, lambda: net(x))
    assert layers["0"].activation_name == "layer_norm+tanh"
    seen = {}
    with ActivationProbe(layers, lambda name, out, total, n: seen.update({name: (total, n)})):
        net(x)
    total, n = seen["0"]
    assert n == 10
    h = net[0](x)
    # Independently: tanh of the layer norm of the layer's output, by hand.
    normed = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(total, torch.tanh(normed * net[1].weight + net[1].bias).abs().sum(0), atol=1e-5)
    assert torch.allclose(activation_magnitude_sum(torch.tanh(net[1](h)))[0], total, atol=1e-6)


def test_tau_zero_flags_exactly_zero_and_ratio_metric():
    metric = GraMaRatio({"a": 4, "b": 2}, tau=0.0)
    metric.update({"a": torch.tensor([0.0, 1e-12, 2.0, 3.0]), "b": torch.tensor([1.0, 1.0])})
    assert metric.compute_layer_ratios()["a"] == 0.25
    assert torch.isclose(metric.compute(), torch.tensor(1 / 6))


def test_metric_states_sum_like_one_big_batch():
    # Two "ranks" each see half of the samples; summing their states must equal one metric fed everything.
    torch.manual_seed(3)
    parts = [torch.rand(5, 4) for _ in range(2)]
    whole = DormantRatio({"l": 4}, tau=0.5)
    whole.update({"l": torch.cat(parts).sum(0)}, {"l": 10})
    ranks = [DormantRatio({"l": 4}, tau=0.5) for _ in range(2)]
    for metric, part in zip(ranks, parts, strict=True):
        metric.update({"l": part.sum(0)}, {"l": 5})
    merged = DormantRatio({"l": 4}, tau=0.5)
    for metric in ranks:
        merged.merge_state(metric)
    assert torch.allclose(merged.compute_scores()["l"], whole.compute_scores()["l"])
    expected = normalize(torch.cat(parts).mean(0))
    assert torch.allclose(whole.compute_scores()["l"], expected)


def test_nonfinite_measurement_is_skipped_and_counted():
    metric = GraMaRatio({"l": 3}, tau=0.1)
    metric.update({"l": torch.tensor([1.0, float("inf"), 0.0])})
    metric.update({"l": torch.tensor([1.0, 2.0, 0.0])})
    scores = metric.compute_scores()
    assert metric.last_skipped == 1
    assert torch.allclose(scores["l"], normalize(torch.tensor([1.0, 2.0, 0.0])))
    empty = GraMaRatio({"l": 3}, tau=0.1)
    empty.update({"l": torch.tensor([float("nan"), 1.0, 0.0])})
    assert empty.compute_scores()["l"].isnan().all()  # nothing finite: no score, so never a reset


def test_grama_scores_plain_function():
    net, x, y = _planted()
    F.cross_entropy(net(x), y).backward()
    scores = grama_scores(net)
    assert set(scores) == {"0", "2", "4"}
    assert torch.isclose(scores["0"].mean(), torch.tensor(1.0))
    assert scores["0"][5] == 0


def test_conv_output_gradient_sums_per_channel_over_samples_and_positions():
    torch.manual_seed(4)
    grad = torch.randn(3, 5, 4, 6)  # (N, C, H, W)
    total, count = output_grad_magnitude_sum(grad, channel_dim=1)
    expected = torch.stack([grad[:, c].abs().sum() for c in range(5)])
    assert count == 3 * 4 * 6
    assert torch.allclose(total, expected, rtol=1e-6)
    total, count = output_grad_magnitude_sum(grad[0, :, 0, 0], channel_dim=-1)  # one unbatched Linear output
    assert count == 1 and torch.equal(total, grad[0, :, 0, 0].abs())


def test_batched_summary_of_buffered_rows_matches_a_loop_over_them():
    # The callbacks evaluate many packed measurements at once; check against the definition row by row.
    torch.manual_seed(5)
    sizes = {"a": 4, "b": 3, "c": 2}
    tau, eps = 0.6, 1e-9
    metric = GraMaRatio(sizes, tau=tau, eps=eps)
    buffer = MeasurementBuffer(metric, capacity=4)
    measurements = [
        ({"a": torch.rand(4) * 5, "b": torch.rand(3)}, {"a": 7, "b": 3}),  # "c" not measured in this window
        ({"a": torch.tensor([0.0, 1.0, 2.0, 3.0]), "b": torch.rand(3), "c": torch.rand(2)}, {"a": 2, "b": 2, "c": 9}),
        ({"a": torch.tensor([1.0, float("inf"), 0.0, 0.0]), "b": torch.rand(3)}, {"a": 1, "b": 1}),  # skipped
    ]
    for step, (sums, counts) in enumerate(measurements):
        buffer.record(sums, counts, step=step)
    buffer.record(*measurements[0], step=3)
    with pytest.raises(RuntimeError, match="call take"):
        buffer.record(*measurements[0], step=4)
    rows, steps = buffer.take()
    rows = rows[:3]
    summary = metric.summary(rows)
    assert steps == [0, 1, 2, 3] and len(buffer) == 0
    for i, (sums, counts) in enumerate(measurements):
        finite = all(torch.isfinite(v).all() for v in sums.values())
        assert summary.skipped[i] == (0 if finite else 1)
        for j, name in enumerate(sizes):
            if not finite or name not in sums:
                assert summary.neurons[i, j] == 0 and summary.inactive[i, j] == 0
                continue
            mean = sums[name] / counts[name]
            inactive = int((mean / (mean.mean() + eps) <= tau).sum())
            assert summary.neurons[i, j] == sizes[name]
            assert summary.inactive[i, j] == inactive
        if finite:
            scores = metric.scores(rows[i])
            for name in sizes:
                if name in sums:
                    mean = sums[name] / counts[name]
                    assert torch.allclose(scores[name], mean / (mean.mean() + eps))
                else:
                    assert scores[name].isnan().all()


def test_weight_grads_recorded_in_buffer_match_the_plain_function_and_skip_layers_without_grad():
    torch.manual_seed(6)
    a, b = nn.Linear(5, 4), nn.Linear(5, 3)
    metric = GraMaRatio({"a": 4, "b": 3}, tau=0.2)
    buffer = MeasurementBuffer(metric, capacity=2)
    track = OptimizerTrack(0, torch.optim.SGD([*a.parameters(), *b.parameters()]), metric, buffer)
    track.refresh(["a", "b"], ["a", "b"])
    signal = WeightGradient()
    signal.bind(nn.Sequential(), {"a": a, "b": b})
    a(torch.randn(8, 5)).pow(2).sum().backward()  # b gets no gradient in this window
    signal.write(track)
    buffer.commit(step=0)
    b(torch.randn(8, 5)).sum().backward()
    signal.write(track)
    buffer.commit(step=1)
    rows, _ = buffer.take()
    first, second = metric.scores(rows[0]), metric.scores(rows[1])
    assert torch.allclose(first["a"], normalize(weight_grad_magnitude(a)))
    assert first["b"].isnan().all()  # no data, so never reset
    assert torch.allclose(second["b"], normalize(weight_grad_magnitude(b)))
    assert metric.summary(rows).neurons.tolist() == [[4.0, 0.0], [4.0, 3.0]]
    total, count = weight_grad_magnitude_sum(b)  # the unbuffered way
    assert torch.allclose(total / count, weight_grad_magnitude(b)) and count == 5


def test_metric_means_are_the_raw_per_neuron_means_of_a_state():
    metric = GraMaRatio({"a": 2, "b": 3}, tau=0.1)
    state = metric.pack({"a": torch.tensor([2.0, 6.0])}, {"a": 4})
    means = metric.means(state)
    assert means["a"].tolist() == [0.5, 1.5] and means["b"].isnan().all()  # b: no data
    rows = torch.stack([state, metric.pack({"b": torch.tensor([3.0, 0.0, 9.0])}, {"b": 3})])
    assert metric.means(rows)["b"][1].tolist() == [1.0, 0.0, 3.0]  # a batch of rows: one row of means each
