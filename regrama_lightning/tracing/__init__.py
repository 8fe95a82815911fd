"""Tracing a model's neurons: the layer data model, layer selection, the op table, the tracer and the probe.

- :mod:`~regrama_lightning.tracing.layers`: ``NeuronLayer``, ``Consumer``, ``ActivationSite``.
- :mod:`~regrama_lightning.tracing.selection`: which modules are neuron layers, name patterns, readers by hand.
- :mod:`~regrama_lightning.tracing.ops`: the op table (``register_op``) and the op-dispatch helpers.
- :mod:`~regrama_lightning.tracing.readers`: which columns of each reading weight read which neuron.
- :mod:`~regrama_lightning.tracing.sites`: ReDo's value of a layer call (the ops followed from its output).
- :mod:`~regrama_lightning.tracing.tracer`: ``TopologyTracer``, ``trace_topology``.
- :mod:`~regrama_lightning.tracing.probe`: ``ActivationProbe`` (ReDo's value on later passes).
"""

from regrama_lightning.tracing.layers import ActivationSite, Consumer, NeuronLayer
from regrama_lightning.tracing.ops import OpCall, TracingError, register_op, unregister_op
from regrama_lightning.tracing.probe import ActivationProbe
from regrama_lightning.tracing.tracer import TopologyTracer, trace_topology

__all__ = [
    "ActivationProbe",
    "ActivationSite",
    "Consumer",
    "NeuronLayer",
    "OpCall",
    "TopologyTracer",
    "TracingError",
    "register_op",
    "trace_topology",
    "unregister_op",
]
