"""A method is a subclass that changes one piece: here an action that records what it is given."""

from __future__ import annotations

import torch
from helpers import Classifier, loader, mlp, plant_dead_neuron, trainer
from torch.nn import functional as F  # noqa: N812

from regrama_lightning import ActionContext, NeuronAction, ReGraMa, weight_grad_magnitude


class Recording(NeuronAction):
    touches_outgoing = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, torch.Tensor, torch.Tensor]] = []
        self.steps = 0

    def apply(self, mask: torch.Tensor, context: ActionContext) -> torch.Tensor:
        self.calls.append((context.layer.name, context.step, mask.clone(), context.scores.clone()))
        return mask.sum()

    def after_step(self, optimizer_index: int) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps = state_dict.get("steps", 0)


class Recorded(ReGraMa):
    def make_action(self) -> NeuronAction:
        return Recording()


class Frozen(Classifier):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_an_action_gets_each_layer_mask_and_scores_at_reset_steps_only():
    torch.manual_seed(0)
    model = Frozen(mlp((6, 8, 8, 3)))
    plant_dead_neuron(model.net[0], 6)
    callback = Recorded(reset_every_n_steps=2, log_every_n_steps=1)
    data = loader(n=64)
    trainer([callback], max_steps=4).fit(model, data)
    action = callback.action
    assert [(name, step) for name, step, _, _ in action.calls] == [
        ("net.0", 2),
        ("net.2", 2),
        ("net.0", 4),
        ("net.2", 4),
    ]
    assert action.steps == 4 and callback.state_dict()["action"] == {"steps": 4}
    _, _, mask, scores = action.calls[2]  # net.0 at step 4
    assert mask.nonzero().flatten().tolist() == [6]  # only the planted neuron is at or below tau = 0.01
    x, y = list(data)[3]  # the batch of step 4, parameters unchanged (lr 0, the action changes nothing)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    magnitude = weight_grad_magnitude(model.net[0])
    torch.testing.assert_close(scores, magnitude / (magnitude.mean() + 1e-9))
