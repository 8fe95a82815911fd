"""The toolkit's type hints are precise enough for LightningCLI (jsonargparse)."""

import pytest
from jsonargparse import ArgumentParser

import regrama_lightning


@pytest.mark.parametrize(
    ("cls", "args", "expected"),
    [
        ("ContinualBackprop", ["replacement_rate=0.001", "maturity_threshold=50"], {"replacement_rate": 0.001}),
        ("ReBorn", ["tau=0.2", "beta=4"], {"beta": 4.0}),
        ("NeuronPruning", ["score=activation", "tau=0.02"], {"score": "activation"}),
        ("ShrinkPerturb", ["toward=init", "every_n_steps=10"], {"shrink": 0.999999, "every_n_steps": 10}),
        ("L2Init", ["strength=0.05"], {"strength": 0.05}),
        (
            "PlasticityMetrics",
            ["every_n_steps=5", "metrics=[srank, feature_norm]"],
            {"metrics": ["srank", "feature_norm"]},
        ),
    ],
)
def test_the_toolkit_from_the_command_line(cls, args, expected):

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(getattr(regrama_lightning, cls), "cb")
    callback = parser.instantiate(parser.parse_args([f"--cb.{a}" for a in args])).cb
    assert {k: getattr(callback, k) for k in expected} == expected
    with pytest.raises(Exception):  # noqa: B017  (jsonargparse's own error type)
        parser.parse_args(["--cb.not_an_argument=1"])


def test_arguments_a_method_does_not_use_are_refused():
    with pytest.raises(ValueError, match="zero_outgoing"):
        regrama_lightning.NeuronPruning(zero_outgoing=False)
    with pytest.raises(ValueError, match="init_fn"):
        regrama_lightning.ReBorn(init_fn=regrama_lightning.orthogonal_init)
    with pytest.raises(ValueError, match="max_reset_fraction"):
        regrama_lightning.ContinualBackprop(max_reset_fraction=0.1)


@pytest.mark.parametrize("cls", ["ContinualBackprop", "ReBorn", "NeuronPruning"])
def test_lightning_cli_shows_the_shared_arguments(cls):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(getattr(regrama_lightning, cls), "cb")
    callback = parser.instantiate(parser.parse_args(["--cb.include=[net.*]", "--cb.name=mine"])).cb
    assert callback.include == ["net.*"] and callback.name == "mine"
