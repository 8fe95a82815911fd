"""The field's other plasticity interventions, as Lightning callbacks on any model the tracer maps."""

from regrama_lightning.methods.l2_init import L2Init
from regrama_lightning.methods.pruning import NeuronPruning, PruneAction, prune_entries
from regrama_lightning.methods.shrink_perturb import ShrinkPerturb, shrink_perturb_

__all__ = ["L2Init", "NeuronPruning", "PruneAction", "ShrinkPerturb", "prune_entries", "shrink_perturb_"]
