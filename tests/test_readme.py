"""The README's Python examples run as they stand."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # anything an example writes lands here
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if "print(" in BLOCKS[index]:
        assert out.strip()
    if "regrama.last_metrics" in BLOCKS[index]:  # the quickstart: both callbacks measured and logged
        assert "'grama/ratio'" in out and "'dormant/ratio'" in out and "'reset/neurons'" in out
    if "register_op(" in BLOCKS[index]:  # the op table example: unmapped before, mapped after registering
        assert "('1', 'cummax')" in out and "[[0, 1, 2, 3]]" in out
