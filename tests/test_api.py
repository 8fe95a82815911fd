"""The public API: what users call is exported, internals are not, and the version is the package's."""

import importlib.metadata
import re
from pathlib import Path

import regrama_lightning


def test_exports_what_users_call_and_not_the_internals():
    exported = set(regrama_lightning.__all__)
    users_call = {
        "ReGraMa", "ReDo", "NeuronReset", "GraMaRatio", "DormantRatio", "NeuronActivityRatio", "grama_scores",
        "weight_grad_magnitude", "reset_neurons", "select_neurons", "trace_topology", "register_op", "TracingError",
        "orthogonal_init", "NeuronAction", "ActivitySignal", "__version__",
    }  # fmt: skip
    assert users_call <= exported
    internals = {"MeasurementBuffer", "MagnitudeGatherer", "TopologyTracer", "ActivationProbe", "OptimizerTrack"}
    assert not internals & exported and not any(hasattr(regrama_lightning, name) for name in internals)
    assert all(hasattr(regrama_lightning, name) for name in exported)


def test_version_is_the_installed_package_version():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert regrama_lightning.__version__ == importlib.metadata.version("regrama-lightning")
    assert regrama_lightning.__version__ == re.search(r'^version = "(.+)"$', pyproject, re.MULTILINE).group(1)
