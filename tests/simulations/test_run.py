"""The harness's command line (``python -m simulations.run``): its arguments and help, refusals
before anything starts, the writer lock, the report over the folder, provenance's CPU model.
The harness's parts are tested beside them in tests/simulations/harness/."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from simulations import provenance
from simulations.run import parse_args, write_comparison
from tests.simulations.harness.runs import harness_request, recorded_run
from tests.simulations.report_runs import FINAL, fake_run


def test_the_demo_target_takes_the_files_node_count():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    demo = makefile[makefile.index("\ndemo:") :].split("\n\n")[0]
    assert "--conf simulations/conf/demo.toml" in demo
    # --supernodes only when DEMO_NODES is given, and by default it is not: demo.toml says 20.
    assert "$(if $(DEMO_NODES),--supernodes $(DEMO_NODES))" in demo
    assert re.search(r"^DEMO_NODES \?=\s*$", makefile, re.MULTILINE)


def test_main_refuses_before_starting_anything(tmp_path, capsys):
    from simulations.run import main

    conf = tmp_path / "x.toml"
    conf.write_text("min-nodes = 5\n")
    with pytest.raises(SystemExit, match="below min-nodes=5"):
        main(["--conf", str(conf), "--supernodes", "2", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_bad_harness_arguments_are_refused(tmp_path, capsys):
    conf = tmp_path / "x.toml"
    conf.write_text('model = "cnn"\n')
    with pytest.raises(SystemExit):
        parse_args(["--conf", str(conf), "--methods", "maestro,fedprox"])
    assert "unknown method(s) ['fedprox']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--conf", str(conf), "--select-only"])
    assert "--select-only runs the lr sweep only: give --lrs too" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--conf", str(conf), "--retries", "-1"])
    assert "--retries must be ≥ 0, got -1" in capsys.readouterr().err
    args = parse_args(["--conf", str(conf), "--set", "lr=0.1", "--set", "sampler=uniform"])
    assert args.retries == 2
    assert args.sets == {"lr": 0.1, "sampler": "uniform"}


def test_help_shows_every_flag_with_help_and_default(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--supernodes", "--cpus-per-client", "--malloc", "--last-evals", "--out"):
        assert flag in text
    assert "(default: 3)" in text and "(default: fast)" in text
    assert re.search(r"num-\s*supernodes, else 100", text)


def test_every_invocation_names_the_cpu_model(tmp_path):
    folder = tmp_path / "maestro-seed0"
    recorded_run(folder, range(1, 2), harness_request())
    record = provenance.read_record(folder)
    assert record["invocations"][0]["cpu"] == provenance.cpu_model() != ""


def test_cpu_model_reads_the_model_name_or_falls_back(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t: avx\n")
    assert provenance.cpu_model(info) == "Some CPU 9000"
    assert provenance.cpu_model(tmp_path / "missing") not in ("", "Some CPU 9000")


def test_the_harness_report_pairs_methods_when_asked(tmp_path):
    (tmp_path / "runs").mkdir()
    for method, seed in FINAL:
        fake_run(tmp_path / "runs", method, seed)
    args = SimpleNamespace(
        title="t",
        conf=Path("tiny.toml"),
        methods=["maestro", "fedavg-fit"],
        cpus_per_client=1,
        gpus_per_client=0,
        target_accuracy=0.8,
        last_evals=1,
        bench=None,
        paired_against=["fedavg-fit"],
    )
    text = write_comparison(args, tmp_path, [{}], "abc").read_text()
    assert "| maestro | fedavg-fit | 0.2 | 2 | 0,1 | +10.00 / +12.00 |" in text


def test_a_second_harness_on_a_held_out_folder_is_refused(tmp_path):
    from maestro_common.app.runlock import FolderLock
    from simulations.run import main

    conf = tmp_path / "x.toml"
    conf.write_text('model = "lenet5"\nmin-nodes = 2\n')
    out = tmp_path / "out"
    held = FolderLock(out, "harness (python -m simulations.run)")
    refused = pytest.raises(SystemExit, match=rf"refused: {out} is being written by harness")
    with held, refused:
        main(["--conf", str(conf), "--supernodes", "2", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["writer.lock"]  # nothing else touched
