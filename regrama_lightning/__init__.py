"""regrama-lightning: GraMa / ReDo neuron-activity metrics and neuron resets for PyTorch Lightning."""

from importlib.metadata import PackageNotFoundError, version

from regrama_lightning.actions import ActionContext, NeuronAction, Reinitialize
from regrama_lightning.callbacks import NeuronReset, ReDo, ReGraMa
from regrama_lightning.methods import ContinualBackprop, L2Init, NeuronPruning, ReBorn, ShrinkPerturb, shrink_perturb_
from regrama_lightning.metrics import ActivitySummary, DormantRatio, GraMaRatio, NeuronActivityRatio
from regrama_lightning.plasticity import (
    ActiveUnitFraction,
    ApproximateRank,
    DeadUnitFraction,
    EffectiveRank,
    FeatureNorm,
    PlasticityMetrics,
    SRank,
    active_unit_fraction,
    approximate_rank,
    dead_unit_fraction,
    distance_from_init,
    effective_rank,
    feature_matrix,
    feature_norm,
    gradient_norm,
    srank,
    weight_magnitude,
)
from regrama_lightning.reset import clear_optimizer_state, orthogonal_init, reset_neurons, select_neurons
from regrama_lightning.scores import (
    activation_magnitude_sum,
    grama_scores,
    inactive_mask,
    normalize,
    output_grad_magnitude_sum,
    weight_grad_magnitude,
    weight_grad_magnitude_sum,
)
from regrama_lightning.signals import Activation, ActivitySignal, OutputGradient, WeightGradient
from regrama_lightning.tracing import NeuronLayer, OpCall, TracingError, register_op, trace_topology, unregister_op

try:
    __version__ = version("regrama-lightning")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ActionContext",
    "Activation",
    "ActiveUnitFraction",
    "ActivitySignal",
    "ActivitySummary",
    "ApproximateRank",
    "ContinualBackprop",
    "DeadUnitFraction",
    "DormantRatio",
    "EffectiveRank",
    "FeatureNorm",
    "GraMaRatio",
    "L2Init",
    "NeuronAction",
    "NeuronActivityRatio",
    "NeuronLayer",
    "NeuronPruning",
    "NeuronReset",
    "OpCall",
    "OutputGradient",
    "PlasticityMetrics",
    "ReBorn",
    "ReDo",
    "ReGraMa",
    "Reinitialize",
    "SRank",
    "ShrinkPerturb",
    "TracingError",
    "WeightGradient",
    "__version__",
    "activation_magnitude_sum",
    "active_unit_fraction",
    "approximate_rank",
    "clear_optimizer_state",
    "dead_unit_fraction",
    "distance_from_init",
    "effective_rank",
    "feature_matrix",
    "feature_norm",
    "gradient_norm",
    "grama_scores",
    "inactive_mask",
    "normalize",
    "orthogonal_init",
    "output_grad_magnitude_sum",
    "register_op",
    "reset_neurons",
    "select_neurons",
    "shrink_perturb_",
    "srank",
    "trace_topology",
    "unregister_op",
    "weight_grad_magnitude",
    "weight_grad_magnitude_sum",
    "weight_magnitude",
]
