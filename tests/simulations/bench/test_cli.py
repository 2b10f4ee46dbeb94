"""The command line: arguments checked, a section run end to end, reports re-rendered from JSON."""

from __future__ import annotations

import json

import pytest

from simulations import bench
from simulations.bench import parse_args
from tests.simulations.bench.test_sections import CHAR_OBJECTIVES


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        parse_args(["--models", "vgg"])
    with pytest.raises(SystemExit):
        parse_args(["--objectives", "nope"])
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])
    args = parse_args(["--quick"])
    assert args.repeats == 3 and args.clock == "cpu"


def test_the_overhead_command_covers_image_and_char_models(tmp_path, capsys):
    out, js = tmp_path / "perf.md", tmp_path / "bench.json"
    argv = ["--sections", "overhead", "--models", "lenet5,char-transformer", "--batch", "2"]
    argv += ["--repeats", "1", "--warmup", "0", "--objectives", CHAR_OBJECTIVES[2]]
    bench.main([*argv, "--out", str(out), "--json", str(js)])
    printed = capsys.readouterr().out
    for name in ("lenet5", "char-transformer"):
        assert f"[bench] - {name} β=1 maestro step: {CHAR_OBJECTIVES[2]}: " in printed
        assert f"| {name} | maestro step: {CHAR_OBJECTIVES[2]} |" in out.read_text()
    groups = {r["group"] for r in json.loads(js.read_text())["overhead"]}
    assert groups == {"lenet5", "char-transformer"}


def test_the_report_names_the_cpu_of_each_run(tmp_path):
    """Figures from two CPU models are not comparable: the header says which one measured."""
    meta = {
        "started": "2026-11-25 01:50 UTC",
        "load-before": "0.9",
        "load-after": "1.0",
        "seconds": 1.0,
        "commands": [""],
        "settings": "s",
        "cpu": "Some CPU 9000",
    }
    for i, cpu in enumerate(("Some CPU 9000", "Other CPU 1")):
        (tmp_path / f"{i}.json").write_text(json.dumps({"meta": {**meta, "cpu": cpu}}))
    out = tmp_path / "perf.md"
    files = f"{tmp_path / '0.json'},{tmp_path / '1.json'}"
    bench.main(["--from-json", files, "--out", str(out), "--json", str(tmp_path / "all.json")])
    assert "- Taken: 2026-11-25 01:50 UTC, 2026-11-25 01:50 UTC; Some CPU 9000; Other CPU 1," in (
        out.read_text()
    )
