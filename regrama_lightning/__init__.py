"""regrama-lightning: GraMa / ReDo neuron-activity metrics and neuron resets for PyTorch Lightning."""

from importlib.metadata import PackageNotFoundError, version

from regrama_lightning.actions import ActionContext, NeuronAction, Reinitialize
from regrama_lightning.callbacks import NeuronReset, ReDo, ReGraMa
from regrama_lightning.metrics import ActivitySummary, DormantRatio, GraMaRatio, NeuronActivityRatio
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
    "ActivitySignal",
    "ActivitySummary",
    "DormantRatio",
    "GraMaRatio",
    "NeuronAction",
    "NeuronActivityRatio",
    "NeuronLayer",
    "NeuronReset",
    "OpCall",
    "OutputGradient",
    "ReDo",
    "ReGraMa",
    "Reinitialize",
    "TracingError",
    "WeightGradient",
    "__version__",
    "activation_magnitude_sum",
    "clear_optimizer_state",
    "grama_scores",
    "inactive_mask",
    "normalize",
    "orthogonal_init",
    "output_grad_magnitude_sum",
    "register_op",
    "reset_neurons",
    "select_neurons",
    "trace_topology",
    "unregister_op",
    "weight_grad_magnitude",
    "weight_grad_magnitude_sum",
]
