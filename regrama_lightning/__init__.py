"""regrama-lightning: GraMa / ReDo neuron-activity metrics and neuron resets for PyTorch Lightning."""

from regrama_lightning.buffer import MeasurementBuffer
from regrama_lightning.callbacks import NeuronReset, ReDo, ReGraMa
from regrama_lightning.gather import MagnitudeGatherer
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
from regrama_lightning.tracing import (
    ActivationProbe,
    ActivationSite,
    Consumer,
    NeuronLayer,
    OpCall,
    TopologyTracer,
    TracingError,
    register_op,
    trace_topology,
    unregister_op,
)

__all__ = [
    "ActivationProbe",
    "ActivationSite",
    "ActivitySummary",
    "Consumer",
    "DormantRatio",
    "GraMaRatio",
    "MagnitudeGatherer",
    "MeasurementBuffer",
    "NeuronActivityRatio",
    "NeuronLayer",
    "NeuronReset",
    "OpCall",
    "ReDo",
    "ReGraMa",
    "TopologyTracer",
    "TracingError",
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
