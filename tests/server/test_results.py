"""Tests for server.results (run folder, checkpoints, resume) and server.report (summary, plots)."""

import json

import numpy as np
import pytest

from maestro_common.app.config import RunConfig
from server.report import plot_accuracy, tier_table, write_summary
from server.results import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    MetricsError,
    ResumeError,
    RunRecorder,
    check_resumable,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _config(**changes):
    return RunConfig(model="lenet5", tier_fractions="0.25,0.5,1.0", **changes).to_run_config()


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {
        "fc.u": np.full((4, 2), value, dtype=np.float32),
        "fc.bias": np.arange(4, dtype=np.float32) + value,
        "steps": np.array([int(value)], dtype=np.int64),
    }


def _row(rnd: int, **extra):
    return {"round": rnd, "clients": [], "wall-seconds": 1.0, **extra}


def _run_rounds(folder, config, rounds):
    rec = RunRecorder(folder, config, resume=False)
    for rnd in rounds:
        rec.record_round(rnd, _arrays(float(rnd)), _row(rnd))
    return rec


# ----- RunRecorder ------------------------------------------------------------------------


def test_fresh_start_writes_config_json(tmp_path):
    folder = tmp_path / "runs" / "a"  # parents are created
    config = _config()
    rec = RunRecorder(folder, config, resume=False)
    assert rec.start_round == 0 and rec.initial_arrays is None
    assert json.loads((folder / CONFIG).read_text()) == config
    assert not (folder / METRICS).exists() and not (folder / CHECKPOINT).exists()
    assert rec.rows() == []


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    rec = RunRecorder(tmp_path / "a", _config(resume=True), resume=True)
    assert rec.start_round == 0 and rec.initial_arrays is None
    assert (tmp_path / "a" / CONFIG).exists()


def test_record_round_writes_checkpoint_and_metrics(tmp_path):
    folder = tmp_path / "a"
    rec = _run_rounds(folder, _config(), [1, 2])
    assert [r["round"] for r in rec.rows()] == [1, 2]
    state = load_checkpoint(folder)
    assert state.round == 2
    assert state.config == _config()
    for key, arr in _arrays(2.0).items():
        np.testing.assert_array_equal(state.arrays[key], arr)
        assert state.arrays[key].dtype == arr.dtype
    assert not list(folder.glob("*.tmp"))  # write-then-rename left no temp file


@pytest.mark.parametrize("existing", [CHECKPOINT, METRICS])
def test_refuses_to_overwrite_an_existing_run(tmp_path, existing):
    folder = tmp_path / "a"
    _run_rounds(folder, _config(), [1])
    if existing == METRICS:
        (folder / CHECKPOINT).unlink()
    before = (folder / METRICS).read_text() if (folder / METRICS).exists() else None
    with pytest.raises(ResumeError, match="resume=true") as err:
        RunRecorder(folder, _config(), resume=False)
    assert "already holds a run" in str(err.value)
    assert str(folder) in str(err.value)
    # Nothing was touched.
    assert ((folder / METRICS).read_text() if before is not None else None) == before


def test_resume_loads_arrays_and_start_round(tmp_path):
    folder = tmp_path / "a"
    _run_rounds(folder, _config(num_rounds=5), [1, 2, 3])
    rec = RunRecorder(folder, _config(num_rounds=5, resume=True), resume=True)
    assert rec.start_round == 3
    assert rec.initial_arrays is not None
    for key, arr in _arrays(3.0).items():
        np.testing.assert_array_equal(rec.initial_arrays[key], arr)
    assert [r["round"] for r in rec.rows()] == [1, 2, 3]
    # config.json now holds the resumed config.
    assert json.loads((folder / CONFIG).read_text())["resume"] is True
    # Recording goes on after the checkpoint.
    rec.record_round(4, _arrays(4.0), _row(4))
    assert [r["round"] for r in rec.rows()] == [1, 2, 3, 4]
    assert load_checkpoint(folder).round == 4


def test_resume_drops_metric_lines_past_the_checkpoint(tmp_path):
    folder = tmp_path / "a"
    rec = _run_rounds(folder, _config(), [1, 2])
    # A crash after the metrics line of round 3 was written but with the checkpoint at round 2.
    with open(folder / METRICS, "a") as f:
        f.write(json.dumps(_row(3)) + "\n")
    assert [r["round"] for r in rec.rows()] == [1, 2, 3]
    assert load_checkpoint(folder).round == 2
    resumed = RunRecorder(folder, _config(), resume=True)
    assert resumed.start_round == 2
    assert [r["round"] for r in resumed.rows()] == [1, 2]
    np.testing.assert_array_equal(resumed.initial_arrays["fc.u"], _arrays(2.0)["fc.u"])
    resumed.record_round(3, _arrays(3.5), _row(3, note="redone"))
    rows = resumed.rows()
    assert [r["round"] for r in rows] == [1, 2, 3] and rows[-1]["note"] == "redone"


def test_resume_tolerates_blank_lines_in_metrics(tmp_path):
    folder = tmp_path / "a"
    _run_rounds(folder, _config(), [1, 2])
    with open(folder / METRICS, "a") as f:
        f.write("\n")
    assert [r["round"] for r in RunRecorder(folder, _config(), resume=True).rows()] == [1, 2]


def test_resume_rejects_a_changed_model(tmp_path):
    folder = tmp_path / "a"
    _run_rounds(folder, _config(), [1])
    now = RunConfig(model="cnn", tier_fractions="0.25,0.5,1.0").to_run_config()
    config_before = (folder / CONFIG).read_text()
    with pytest.raises(ResumeError, match="model"):
        RunRecorder(folder, now, resume=True)
    # The refused resume left the run's metrics alone.
    assert [json.loads(x)["round"] for x in (folder / METRICS).read_text().splitlines()] == [1]
    assert (folder / CONFIG).read_text() == config_before


def test_check_resumable_rejects_changed_model_or_tiers():
    saved = _config()
    with pytest.raises(ResumeError, match=r"model: 'lenet5' -> 'cnn'"):
        check_resumable(saved, {**saved, "model": "cnn"})
    with pytest.raises(ResumeError, match="tier-fractions"):
        check_resumable(saved, {**saved, "tier-fractions": "0.5,1.0"})
    with pytest.raises(ResumeError, match="tier-shares"):
        check_resumable(saved, {**saved, "tier-shares": "1,1,2"})
    with pytest.raises(ResumeError, match="seed"):
        check_resumable(saved, {**saved, "seed": 1})
    missing = dict(saved)
    del missing["lr"]
    with pytest.raises(ResumeError, match="lr"):
        check_resumable(saved, missing)


def test_check_resumable_accepts_allowed_changes():
    saved = _config()
    check_resumable(saved, saved)
    check_resumable(
        saved,
        {
            **saved,
            "num-rounds": 50,
            "resume": True,
            "round-timeout": 10.0,
            "device": "cpu",
            "eval-every": 5,
        },
    )


def test_check_resumable_ignores_a_removed_key_at_its_old_default():
    # A checkpoint written before `alternate-period` was removed holds it at its default 2.
    now = _config()
    check_resumable({**now, "alternate-period": 2}, now)
    with pytest.raises(ResumeError, match=r"alternate-period: 3 -> None"):
        check_resumable({**now, "alternate-period": 3}, now)


def test_resume_with_more_rounds(tmp_path):
    folder = tmp_path / "a"
    _run_rounds(folder, _config(num_rounds=2), [1, 2])
    rec = RunRecorder(folder, _config(num_rounds=10, resume=True), resume=True)
    assert rec.start_round == 2


def test_save_and_load_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 7, _arrays(1.5), {"a": 1})
    state = load_checkpoint(tmp_path)
    assert state.round == 7 and state.config == {"a": 1}
    np.testing.assert_array_equal(state.arrays["fc.bias"], _arrays(1.5)["fc.bias"])
    save_checkpoint(tmp_path, 8, _arrays(2.5), {"a": 1})  # overwrite in place
    assert load_checkpoint(tmp_path).round == 8


# ----- report -----------------------------------------------------------------------------


def _tier(acc, loss=1.0, params=1000, macs=20000, nbytes=4000):
    return {
        "accuracy": acc,
        "loss": loss,
        "params": params,
        "macs": macs,
        "bytes-down": nbytes,
        "bytes-up": nbytes,
    }


def _eval_rows():
    return [
        _row(1, tiers={"1": _tier(0.5), "0.25": _tier(0.3), "0.5": _tier(0.4)}),
        _row(2, **{"aggregate-seconds": 0.5}),  # not evaluated
        _row(
            3,
            tiers={
                "1": _tier(0.8123, 0.51234, 61706, 429128, 246824),
                "0.25": _tier(0.6, params=1500),
                "0.5": _tier(0.7),
            },
            federated={"0.5": {"accuracy": 0.655, "loss": 1.0, "num-examples": 10.0}},
        ),
    ]


def test_tier_table_of_the_last_evaluated_round():
    table = tier_table(_eval_rows())
    lines = table.splitlines()
    assert lines[0].startswith("Round 3:")
    body = [x for x in lines if x.startswith("| ") and not x.startswith("| tier")]
    assert [x.split("|")[1].strip() for x in body] == ["0.25", "0.5", "1"]  # sorted as numbers
    assert body[2] == "| 1 | 81.23 | 0.5123 | 61,706 | 429,128 | 246,824 | – |"
    assert body[1].endswith("| 65.50 |")  # federated accuracy where there is one
    assert tier_table([_row(1)]) == "(no evaluated round yet)"


def test_write_summary_and_plot(tmp_path):
    rows = _eval_rows()
    table = write_summary(tmp_path, rows, "my run")
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# my run\n")
    assert table in text
    assert "| tier β | accuracy % |" in text
    assert "Rounds recorded: 3; wall time 3.0 s (1.00 s per round)" in text
    assert "aggregation 0.50 s (16.67 % of round time)" in text
    path = plot_accuracy(tmp_path, rows)
    assert path == tmp_path / "accuracy.png"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000


def test_report_without_evaluated_rounds(tmp_path):
    rows = [_row(1), _row(2)]
    assert plot_accuracy(tmp_path, rows) is None
    assert not (tmp_path / "accuracy.png").exists()
    write_summary(tmp_path, [], "empty")  # no rows: no division by zero
    assert "(no evaluated round yet)" in (tmp_path / "summary.md").read_text()


def test_report_reads_rows_written_by_the_recorder(tmp_path):
    rec = RunRecorder(tmp_path / "r", _config(), resume=False)
    for row in _eval_rows():
        rec.record_round(row["round"], _arrays(1.0), row)
    rows = rec.rows()
    assert tier_table(rows) == tier_table(_eval_rows())
    assert plot_accuracy(tmp_path / "r", rows).read_bytes()[:8] == PNG_SIGNATURE


def test_resume_without_checkpoint_but_with_metrics_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"round": 1}\n')
    with pytest.raises(ResumeError, match=r"no checkpoint\.npz"):
        RunRecorder(folder, {"seed": 0}, resume=True)


# ----- crash consistency: a crash at any point leaves the last complete round ----------------


class Crash(Exception):
    """Stands for the process dying at the patched point."""


def _crash_in_round_3(folder, monkeypatch, point):
    """Record rounds 1-2, then crash while recording round 3 at ``point``."""
    import builtins

    from maestro_common.app import checkpoint as ckpt_module
    from server import results

    rec = _run_rounds(folder, _config(), [1, 2])
    if point == "before-checkpoint-rename":

        def replace(*_args):
            raise Crash

        monkeypatch.setattr(ckpt_module.os, "replace", replace)
    elif point in ("before-metrics-line", "mid-metrics-line"):
        real_open = builtins.open

        def open_metrics(file, mode="r", *args, **kwargs):
            if str(file).endswith(METRICS) and "a" in mode:
                if point == "mid-metrics-line":
                    with real_open(file, mode, *args, **kwargs) as f:
                        f.write(json.dumps(_row(3, note="x" * 50))[:30])  # cut mid-line
                raise Crash
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(results, "open", open_metrics, raising=False)
    with pytest.raises(Crash):
        rec.record_round(3, _arrays(3.0), _row(3, note="round three"))
    monkeypatch.undo()


@pytest.mark.parametrize(
    ("point", "kept"),
    [
        ("before-checkpoint-rename", [1, 2]),  # round 3 never committed: resume redoes it
        ("before-metrics-line", [1, 2, 3]),  # round 3's row comes back from the checkpoint
        ("mid-metrics-line", [1, 2, 3]),  # the cut line is dropped, the row restored
    ],
)
def test_a_crash_at_each_point_resumes_with_every_committed_round(
    tmp_path, monkeypatch, point, kept
):
    folder = tmp_path / "a"
    _crash_in_round_3(folder, monkeypatch, point)
    rec = RunRecorder(folder, _config(resume=True), resume=True)
    assert rec.start_round == kept[-1]
    rows = rec.rows()
    assert [r["round"] for r in rows] == kept
    if kept[-1] == 3:
        assert rows[-1]["note"] == "round three" and rec.repairs
        np.testing.assert_array_equal(rec.initial_arrays["fc.u"], _arrays(3.0)["fc.u"])
    # The run goes on: every round once, in order, and the file parses line by line.
    for rnd in range(kept[-1] + 1, 5):
        rec.record_round(rnd, _arrays(float(rnd)), _row(rnd))
    lines = (folder / METRICS).read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3, 4]


def test_the_checkpoint_holds_its_rounds_row_under_the_checksum(tmp_path):
    folder = tmp_path / "a"
    _run_rounds(folder, _config(), [1, 2])
    assert load_checkpoint(folder).row == _row(2)


def test_a_cut_last_line_is_repaired_on_resume_and_named(tmp_path):
    folder = tmp_path / "a"
    _run_rounds(folder, _config(), [1, 2])
    with open(folder / METRICS, "a") as f:
        f.write('{"round": 3, "clie')  # a later round's line, cut: past the checkpoint anyway
    rec = RunRecorder(folder, _config(), resume=True)
    assert [r["round"] for r in rec.rows()] == [1, 2]
    assert any("cut (partial) last line" in r and str(folder) in r for r in rec.repairs)
    assert (folder / METRICS).read_text().endswith("}\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"round": 1}\n{"rou\n{"round": 2}\n', r"line 2 is not JSON"),
        ('{"round": 1}\n{"round": 2}\n{"round": 2}\n', r"line 3 records round 2 after round 2"),
        ('{"round": 1}\n[1, 2]\n{"round": 2}\n', r"line 2 is not a metrics row"),
    ],
)
def test_damaged_metrics_are_refused_with_the_file_named(tmp_path, text, message):
    folder = tmp_path / "a"
    _run_rounds(folder, _config(), [1, 2])
    (folder / METRICS).write_text(text)
    with pytest.raises(MetricsError, match=message) as err:
        RunRecorder(folder, _config(), resume=True)
    assert str(folder / METRICS) in str(err.value)
    assert (folder / METRICS).read_text() == text  # left as found


def test_read_metrics_reports_a_cut_line(tmp_path):
    path = tmp_path / METRICS
    assert read_metrics(path) == ([], False)
    path.write_bytes(b'{"round": 1}\n{"round": 2}\n{"round": 3, "x": "\xc3')
    rows, cut = read_metrics(path)
    assert [r["round"] for r in rows] == [1, 2] and cut


def test_check_resumable_reads_a_key_added_since_as_its_default():
    # A checkpoint written before `lr-schedule` existed lacks it: it ran at a constant lr.
    now = _config()
    old = {k: v for k, v in now.items() if k != "lr-schedule"}
    check_resumable(old, now)
    with pytest.raises(ResumeError, match=r"lr-schedule: 'constant' -> 'cosine'"):
        check_resumable(old, {**now, "lr-schedule": "cosine"})


def test_a_key_whose_default_changed_since_reads_as_what_the_run_did_then():
    # A checkpoint written before `transmission` existed ran with prefixes (and before
    # `sub-models` existed, the sandwich); today's defaults (auto) would run otherwise, so the
    # resume is refused until the run sets them.
    now = _config()
    old = {k: v for k, v in now.items() if k not in ("transmission", "sub-models")}
    with pytest.raises(ResumeError, match=r"sub-models: 'sandwich' -> 'auto'.*transmission"):
        check_resumable(old, now)
    check_resumable(old, {**now, "transmission": "prefix", "sub-models": "sandwich"})
