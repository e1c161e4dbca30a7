"""README's Python examples run as written on the current layout (with short settings)."""
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def shorten(code: str) -> str:
    """The same calls with one epoch and few importance samples."""
    code = re.sub(r"epochs=\d+", "epochs=1", code)
    code = re.sub(r"\bk=\d+", "k=5", code)
    return code.replace("device=\"auto\"", "device=\"cpu\"")


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code):
    exec(compile(shorten(code).replace("progress=True", "progress=False"), "README.md", "exec"), {})
