"""The callbacks' type hints are precise enough for LightningCLI (jsonargparse)."""

import inspect

import lightning.pytorch as pl
import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningCLI

import regrama_lightning
from regrama_lightning import NeuronReset, ReDo, ReGraMa, orthogonal_init


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


class TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


@pytest.mark.parametrize("callback", ["ReGraMa", "ReDo"])
def test_lightning_cli_shows_and_checks_every_argument_of_the_subclasses(callback, capsys):
    inherited = inspect.signature(NeuronReset.__init__).parameters
    with pytest.raises(SystemExit):
        LightningCLI(TinyModule, run=False, args=["--trainer.callbacks.help", f"regrama_lightning.{callback}"])
    shown = capsys.readouterr().out
    for name in inherited:
        if name != "self":
            assert f"--trainer.callbacks.{name} " in shown, name
    args = [
        f"--trainer.callbacks+=regrama_lightning.{callback}",
        "--trainer.callbacks.residual=reset",
        "--trainer.callbacks.max_reset_fraction=0.1",
        "--trainer.callbacks.name=mine",
    ]
    cli = LightningCLI(TinyModule, run=False, args=args)
    made = cli.trainer.callbacks[[type(c).__name__ for c in cli.trainer.callbacks].index(callback)]
    assert (made.residual, made.max_reset_fraction, made.state_key) == ("reset", 0.1, f"{callback}[name=mine]")
    with pytest.raises(SystemExit):
        LightningCLI(TinyModule, run=False, args=[*args[:1], "--trainer.callbacks.residual=skip"])
    assert "residual" in capsys.readouterr().err


CALLBACKS = [name for name, value in vars(regrama_lightning).items() if name in regrama_lightning.__all__
             and inspect.isclass(value) and issubclass(value, pl.Callback)]  # fmt: skip


@pytest.mark.parametrize("callback", CALLBACKS)
def test_lightning_cli_help_is_plain_text(callback, capsys):
    with pytest.raises(SystemExit):
        LightningCLI(TinyModule, run=False, args=["--trainer.callbacks.help", f"regrama_lightning.{callback}"])
    shown = capsys.readouterr().out
    assert "--trainer.callbacks." in shown
    for markup in ("``", ":class:", ":func:", ":meth:", ":data:", ":attr:"):  # reStructuredText, shown raw
        assert markup not in shown, [line for line in shown.splitlines() if markup in line]
