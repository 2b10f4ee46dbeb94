"""The README's code example runs as written."""

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- readme-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its marked example (<!-- readme-example --> before ```python)"
    script = tmp_path / "example.py"
    script.write_text(match[1], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(script))
    full, small = (int(n) for n in re.findall(r"\d+", capsys.readouterr().out)[:2])
    assert small < full / 3  # the β = 0.2 tier is a fraction of the model
    assert "program" in namespace  # the tier exported with torch.export
