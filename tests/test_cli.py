"""The callbacks' type hints are precise enough for LightningCLI (jsonargparse)."""

import pytest
from jsonargparse import ArgumentParser

from regrama_lightning import ReDo, ReGraMa, orthogonal_init


def test_regrama_from_command_line():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ReGraMa, "regrama")
    cfg = parser.parse_args(
        [
            "--regrama.tau=0.05",
            "--regrama.score=output",
            "--regrama.include=[critic.*]",
            "--regrama.consumers={critic.0: [critic.2]}",
            "--regrama.max_reset_fraction=0.05",
            "--regrama.reset_every_n_steps=null",
            "--regrama.init_fn=regrama_lightning.orthogonal_init",
        ]
    )
    callback = parser.instantiate(cfg).regrama
    assert isinstance(callback, ReGraMa)
    assert (callback.tau, callback.score, callback.reset_every_n_steps) == (0.05, "output", None)
    assert callback.include == ["critic.*"] and callback.consumers == {"critic.0": ["critic.2"]}
    assert callback.init_fn is orthogonal_init


@pytest.mark.parametrize("arg", ["--redo.residual=skip", "--redo.reset_every_n_steps=often", "--redo.tau=[1]"])
def test_bad_values_are_rejected_by_the_parser(arg):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ReDo, "redo")
    with pytest.raises(Exception, match="redo"):
        parser.parse_args([arg])
