"""The tracer's paths that used to end silently: tuple outputs, parameter slices, weights read twice or shared,
RMSNorm, padding, and the tracer under ``torch.compile``.

Each case is checked against an independent computation: activation magnitudes computed by hand from the same
weights, the columns a reset must zero listed by hand, or the same function written so the tracer's sum rule
(a residual stream) already classifies it.
"""

from __future__ import annotations

import pytest
import torch
from helpers import Classifier, plant_dead_neuron, trainer
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, TensorDataset

from regrama_lightning import ReDo, reset_neurons, trace_topology
from regrama_lightning.tracing import ActivationProbe, TopologyTracer


class Frozen(Classifier):
    """SGD with lr 0: parameters never move, so a score can be recomputed by hand from the same weights."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def traced_and_probed(net: nn.Module, x: torch.Tensor) -> tuple[dict, dict, dict]:
    """Layers, and per layer ReDo's (sums, count) as the tracer's pass and a later probed pass measure them."""
    traced, probed = {}, {}
    tracer = TopologyTracer(net, on_activation=lambda n, out, sums, count: traced.update({n: (sums, count)}))
    with tracer:
        net(x)
    layers = tracer.topology()
    with ActivationProbe(layers, lambda n, out, sums, count: probed.update({n: (sums, count)})):
        net(x)
    return layers, traced, probed


def assert_measures(measured: tuple[torch.Tensor, int], by_hand: torch.Tensor) -> None:
    """ReDo's mean |activation| per neuron (sums / count) equals the one computed by hand."""
    sums, count = measured
    torch.testing.assert_close(sums / count, by_hand, rtol=1e-5, atol=1e-6)


# -- Outputs split into pieces before their nonlinearity ------------------------------------------------------
class SplitThenRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        u, v = self.a(x).split(4, -1)
        return self.b(torch.cat([F.relu(u), F.relu(v)], -1))

    def by_hand(self, x):
        return F.relu(self.a(x)).abs().mean(0)


class ChunkGate(nn.Module):
    """GLU-style: neurons 0-3 pass a ReLU, neurons 4-7 a sigmoid gate; their product is read."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(4, 2)

    def forward(self, x):
        u, v = self.a(x).chunk(2, -1)
        return self.b(F.relu(u) * torch.sigmoid(v))

    def by_hand(self, x):
        u, v = self.a(x).chunk(2, -1)
        return torch.cat([F.relu(u).abs().mean(0), torch.sigmoid(v).abs().mean(0)])


class SliceThenActivations(nn.Module):
    """Slices of one output through different nonlinearities, each read by its own head."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 6), nn.Linear(2, 2), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(F.relu(h[:, :2])) + self.c(torch.tanh(h[:, 2:]))

    def by_hand(self, x):
        h = self.a(x)
        return torch.cat([F.relu(h[:, :2]).abs().mean(0), torch.tanh(h[:, 2:]).abs().mean(0)])


@pytest.mark.parametrize("make", [SplitThenRelu, ChunkGate, SliceThenActivations])
def test_activation_after_a_split_is_measured_per_piece(make):
    torch.manual_seed(0)
    net = make()
    plant_dead_neuron(net.a, 1)  # ReLU-dead: its mean activation is exactly 0 (it was ~5.7x the mean)
    x = torch.randn(16, 3)
    layers, traced, probed = traced_and_probed(net, x)
    assert layers["a"].activation.error is None
    with torch.no_grad():
        want = net.by_hand(x)
    assert_measures(traced["a"], want)
    assert_measures(probed["a"], want)
    assert probed["a"][0][1] == 0


def test_redo_scores_a_dead_neuron_behind_a_chunk_as_dead():
    torch.manual_seed(0)
    net = ChunkGate()
    plant_dead_neuron(net.a, 1)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    callback = ReDo(tau=0.1, reset_every_n_steps=None, log_every_n_steps=1)
    twice = DataLoader(TensorDataset(torch.cat([x, x]), torch.cat([y, y])), batch_size=16)
    trainer([callback], max_steps=2).fit(Frozen(net), twice)  # step 2 is measured by the probe
    with torch.no_grad():
        magnitude = net.by_hand(x)
    torch.testing.assert_close(callback.latest_scores["net.a"], magnitude / magnitude.mean(), rtol=1e-5, atol=1e-6)
    assert callback.latest_scores["net.a"][1] == 0  # was ~5.7x the mean: the raw output's magnitude


def test_a_gate_of_two_chunks_is_a_shared_reader():
    net = ChunkGate()
    layers = trace_topology(net, lambda: net(torch.randn(4, 3)))
    # relu(u) * sigmoid(v) multiplies neuron j by neuron j + 4: b's columns are shared, as for a GLU.
    assert layers["a"].residual_readers == {"b"} and not layers["a"].consumers
    assert layers["a"].activation_name == "relu+sigmoid"


class GaussianPolicy(nn.Module):
    """One head gives a mean and a squashed log-std; two calls take them on through different ops."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(3, 8), nn.Linear(8, 4)

    def policy(self, x):
        mean, pre = self.head(F.relu(self.a(x))).chunk(2, -1)
        return mean, 2.0 * torch.tanh(pre)

    def forward(self, x):
        mean, log_std = self.policy(x)
        action = mean + log_std.exp() * torch.randn_like(mean)  # a sample: data joins in
        mean_c, log_std_c = self.policy(x)
        kl = (log_std_c + 0.5).exp() * torch.randn_like(mean_c) + (mean - mean_c).square()  # other ops on the call
        _ = torch.tanh(self.policy(x)[0])  # an evaluation call: only the mean, returned
        return action.sum() + kl.sum()

    def by_hand(self, x):
        mean, pre = self.head(F.relu(self.a(x))).chunk(2, -1)
        return torch.cat([mean.abs().mean(0), (2.0 * torch.tanh(pre)).abs().mean(0)])


def test_calls_taking_a_head_on_through_different_ops_measure_where_they_agree():
    torch.manual_seed(0)
    net = GaussianPolicy()
    x = torch.randn(16, 3)
    layers, _, _ = traced_and_probed(net, x)
    # The mean where the calls part (raw), the log-std after its squash: what every call computes.
    assert layers["head"].activation.error is None and layers["head"].activation_name == "tanh+mul"
    calls = []
    with ActivationProbe(layers, lambda n, out, sums, count: calls.append((n, sums, count))):
        net(x)
    assert [n for n, _, _ in calls].count("head") == 3  # each call reaches the measured values
    with torch.no_grad():
        want = net.by_hand(x)
    for name, sums, count in calls:
        if name == "head":
            assert_measures((sums, count), want)


# -- A slice of a parameter is still the model's own --------------------------------------------------------
class SlicedPositions(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)
        self.pos = nn.Parameter(torch.randn(16, 4) * 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x) + self.pos[: x.shape[1]]).mean(1))

    def by_hand(self, x):
        return F.relu(self.a(x) + self.pos[: x.shape[1]]).abs().mean((0, 1))


def test_activation_behind_a_sliced_parameter_is_measured():
    torch.manual_seed(0)
    net = SlicedPositions()
    x = torch.randn(8, 5, 3)
    layers, traced, probed = traced_and_probed(net, x)
    assert layers["a"].activation_name == "add+relu"  # was "identity": the slice looked like data
    with torch.no_grad():
        want = net.by_hand(x)
    assert_measures(traced["a"], want)
    assert_measures(probed["a"], want)


def test_data_joined_in_still_ends_the_activation():
    class AddsData(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            noise = torch.randn(x.shape[0], 4)  # not the model's own
            return self.b(F.relu(self.a(x) + noise[:, :4]))

    net = AddsData()
    assert trace_topology(net, lambda: net(torch.randn(5, 3)))["a"].activation_name == "identity"


# -- One weight reading a layer twice -------------------------------------------------------------------------
class HeadReadsTwoSlices(nn.Module):
    """One head reads neurons 0-1 at columns 0-1 and, in a second call, neurons 2-3 at columns 2-3."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h, data = F.relu(self.a(x)), x[:, :2]
        return self.head(torch.cat([h[:, :2], data], 1)) + self.head(torch.cat([data, h[:, 2:]], 1))


def test_both_reads_of_one_weight_are_recorded_and_zeroed():
    torch.manual_seed(0)
    net = HeadReadsTwoSlices()
    layers = trace_topology(net, lambda: net(torch.randn(5, 3)))
    (head,) = layers["a"].consumers
    assert (head.name, head.columns.tolist(), head.neurons.tolist()) == ("head", [0, 1, 2, 3], [0, 1, 2, 3])
    before = net.head.weight.detach().clone()
    reset_neurons(layers["a"], torch.tensor([False, False, False, True]), seed=0)
    assert (net.head.weight[:, 3] == 0).all()  # the second call's column: was left live
    assert torch.equal(net.head.weight[:, :3], before[:, :3])


class TwoSlicesOneColumn(nn.Module):
    def __init__(self, summed: bool):
        super().__init__()
        self.summed = summed
        self.a, self.head = nn.Linear(3, 8), nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.a(x))
        if self.summed:
            return self.head(h[:, :4] + h[:, 4:])
        return self.head(h[:, :4]) + self.head(h[:, 4:])  # the same function: linear in its input


class SharedHead(nn.Module):
    def __init__(self, summed: bool):
        super().__init__()
        self.summed = summed
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        if self.summed:
            return self.head(F.relu(self.a(x)) + F.relu(self.b(x)))
        return self.head(F.relu(self.a(x))) + self.head(F.relu(self.b(x)))


@pytest.mark.parametrize(("make", "producers"), [(TwoSlicesOneColumn, ["a"]), (SharedHead, ["a", "b"])])
def test_columns_read_for_several_neurons_are_shared_like_a_residual_stream(make, producers):
    x = torch.randn(5, 3)
    split, summed = make(summed=False), make(summed=True)
    layers = trace_topology(split, lambda: split(x))
    reference = trace_topology(summed, lambda: summed(x))  # the sum: a residual stream by the tracer's own rule
    for name in producers:
        assert reference[name].residual_readers == {"head"} and not reference[name].consumers
        assert layers[name].residual_readers == {"head"} and not layers[name].consumers
        assert not layers[name].is_output
    before = split.head.weight.detach().clone()
    reset_neurons(layers[producers[0]], torch.ones(layers[producers[0]].size, dtype=torch.bool), seed=0)
    assert torch.equal(split.head.weight, before)  # the other neurons' outgoing weights are not cut


def test_a_weight_reused_on_the_same_neurons_is_an_ordinary_reader():
    class Siamese(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(F.relu(self.a(x))) - self.head(F.relu(self.a(-x)))

    net = Siamese()
    (head,) = trace_topology(net, lambda: net(torch.randn(5, 3)))["a"].consumers
    assert head.columns.tolist() == [0, 1, 2, 3] and head.neurons.tolist() == [0, 1, 2, 3]


# -- Per-feature norms: RMSNorm -----------------------------------------------------------------------------
def test_rmsnorm_entries_of_a_reset_neuron_are_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.RMSNorm(4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.5, 2.0, 3.0, 4.0]))
    layers = trace_topology(net, lambda: net(torch.randn(5, 3)))
    assert [name for name, _ in layers["0"].norms] == ["1"]
    reset_neurons(layers["0"], torch.tensor([False, False, True, False]), seed=0)
    assert net[1].weight.tolist() == [0.5, 2.0, 1.0, 4.0]  # a fresh RMSNorm's weight is 1


# -- Padding -------------------------------------------------------------------------------------------------
class PaddedReader(nn.Module):
    def __init__(self, padding: str):
        super().__init__()
        self.padding = padding
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        mode = padding if padding in ("circular", "reflect", "replicate", "zeros") else "zeros"
        self.b = nn.Conv2d(4, 3, 3, padding=1 if padding != "by hand" else 0, padding_mode=mode)

    def forward(self, x):
        h = F.relu(self.a(x))
        if self.padding == "by hand":
            h = F.pad(h, (1, 1, 1, 1), value=0.5)  # the fill value is data, of no neuron
        return self.b(h)


@pytest.mark.parametrize("padding", ["circular", "reflect", "replicate", "by hand"])
def test_padded_readers_are_mapped(padding):
    torch.manual_seed(0)
    net = PaddedReader(padding)
    layers = trace_topology(net, lambda: net(torch.randn(2, 2, 5, 5)))
    # The same reader as with the zero padding that conv2d does itself, which was already mapped.
    reference = trace_topology(zeros := PaddedReader("zeros"), lambda: zeros(torch.randn(2, 2, 5, 5)))
    (b,) = layers["a"].consumers
    (want,) = reference["a"].consumers
    assert not layers["a"].unmapped_readers and b.name == want.name == "b"
    assert torch.equal(b.columns, want.columns) and torch.equal(b.neurons, want.neurons)
    assert layers["a"].activation_name == "relu"
    before = net.b.weight.detach().clone()
    reset_neurons(layers["a"], torch.tensor([False, False, True, False]), seed=0)
    assert (net.b.weight[:, 2] == 0).all()
    assert torch.equal(net.b.weight[:, [0, 1, 3]], before[:, [0, 1, 3]])


# -- torch.compile ---------------------------------------------------------------------------------------------
def test_tracer_and_probe_stay_out_of_compiled_graphs():
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(4, 6)
    eager = trace_topology(net, lambda: net(x))
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(net, backend="eager")  # Dynamo's capture without a compiler: what matters here
    compiled(x)
    layers, traced, probed = traced_and_probed(compiled, x)
    # Dynamo does not step into the tracer's or the probe's bookkeeping: one skipped call each, no breaks inside.
    reasons = list(counters["graph_break"])
    assert reasons and all("torch.compiler.disable" in r for r in reasons), reasons
    assert [c.name for c in layers["0"].consumers] == [c.name for c in eager["0"].consumers] == ["2"]
    with torch.no_grad():
        want = F.relu(net[0](x)).abs().mean(0)
    assert_measures(traced["0"], want)
    assert_measures(probed["0"], want)
    torch._dynamo.reset()
