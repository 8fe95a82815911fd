"""Lightning callbacks that measure neuron activity and reset inactive neurons."""

from regrama_lightning.callbacks.base import NeuronReset
from regrama_lightning.callbacks.redo import ReDo
from regrama_lightning.callbacks.regrama import ReGraMa

__all__ = ["NeuronReset", "ReDo", "ReGraMa"]
