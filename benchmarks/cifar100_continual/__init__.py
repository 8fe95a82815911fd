"""Class-incremental CIFAR-100 plasticity benchmark (paper Sec. 4.2, Fig. 5 right): vanilla vs ReDo vs ReGraMa.

A ReLU MLP (or Dohare et al.'s ResNet-18) is trained on all CIFAR-100 classes seen so far while new classes are
added on a schedule; accuracy on the seen classes, the GraMa and dormant ratios and the neurons reset are
recorded per epoch. Modules: ``schedule`` (which classes when), ``data`` (files, on-device tensors, batched
augmentation, the datamodule), ``models``, ``methods`` (callbacks of each method), ``record`` (per-epoch CSV),
``config`` (presets), ``runner`` (one run, cost estimate), ``cli`` (command line), ``plot`` (Fig. 5 right),
``perf`` and ``timing`` (speed against a plain loop).
"""
