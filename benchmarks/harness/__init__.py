"""What every benchmark shares: command-line helpers, run folders, checkpoints, methods, statistics, plot style.

Light modules (no torch; the command lines import them to build ``--help``): ``cli``, ``runs``, ``methods``,
``config``. Heavy modules (torch, Lightning): ``process``, ``monitors``, ``checkpointing``, ``hparams``.
"""
