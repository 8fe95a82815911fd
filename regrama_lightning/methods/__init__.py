"""The field's other plasticity interventions, as Lightning callbacks on any model the tracer maps."""

from regrama_lightning.methods.continual_backprop import ContinualBackprop
from regrama_lightning.methods.l2_init import L2Init
from regrama_lightning.methods.pruning import NeuronPruning, PruneAction, prune_entries
from regrama_lightning.methods.reborn import ReBorn, plan_transfer, transfer_
from regrama_lightning.methods.shrink_perturb import ShrinkPerturb, shrink_perturb_

__all__ = [
    "ContinualBackprop",
    "L2Init",
    "NeuronPruning",
    "PruneAction",
    "ReBorn",
    "ShrinkPerturb",
    "plan_transfer",
    "prune_entries",
    "shrink_perturb_",
    "transfer_",
]
