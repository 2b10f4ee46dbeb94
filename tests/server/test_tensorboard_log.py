"""TensorBoard events of the per-tier metrics: off by default, a clear error without tensorboard."""

from __future__ import annotations

import sys
from typing import ClassVar

import pytest

from server import server_app
from server import tensorboard_log as tb
from server.results import METRICS
from server.tensorboard_log import TensorBoardMissingError, TierBoard, tier_scalars
from tests.idx_data import write_random_idx
from tests.server.test_server_app import _cfg, _main, _rows

ROW = {
    "round": 4,
    "tiers": {"0.5": {"accuracy": 0.25, "loss": 2.0}, "1": {"accuracy": 0.5, "loss": 1.5}},
    "val-tiers": {"0.5": {"accuracy": 0.125, "loss": 2.5}},
}


class FakeWriter:
    """Records what a SummaryWriter would be asked to write."""

    made: ClassVar[list[FakeWriter]] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = 0
        self.closed = False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    write_random_idx(folder, 200, 60)
    return folder


@pytest.fixture
def fake_writer(monkeypatch):
    FakeWriter.made = []
    monkeypatch.setattr(tb, "summary_writer", lambda: FakeWriter)
    return FakeWriter


@pytest.fixture
def no_tensorboard(monkeypatch):
    """``from torch.utils.tensorboard import ...`` fails as it does without tensorboard."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)


def test_a_rows_scalars_are_per_tier_accuracy_in_percent_and_loss():
    assert tier_scalars(ROW) == {
        "test-accuracy-pct/beta-0.5": 25.0,
        "test-loss/beta-0.5": 2.0,
        "test-accuracy-pct/beta-1": 50.0,
        "test-loss/beta-1": 1.5,
        "validation-accuracy-pct/beta-0.5": 12.5,
        "validation-loss/beta-0.5": 2.5,
    }
    assert tier_scalars({"round": 3, "clients": 2}) == {}  # a round that was not evaluated


def test_the_board_writes_each_evaluated_row_at_its_round(tmp_path, fake_writer):
    with TierBoard(tmp_path, enabled=True) as board:
        board.add_row({"round": 3})  # not evaluated: no writer yet
        assert fake_writer.made == []
        board.add_row(ROW)
        board.add_row({**ROW, "round": 5})
    (writer,) = fake_writer.made
    assert writer.log_dir == str(tmp_path / "tensorboard")
    assert len(writer.scalars) == 12 and writer.flushes == 2 and writer.closed
    assert ("test-accuracy-pct/beta-1", 50.0, 4) in writer.scalars
    assert ("validation-loss/beta-0.5", 2.5, 5) in writer.scalars


def test_off_by_default_writes_nothing_and_needs_no_tensorboard(tmp_path, no_tensorboard):
    board = TierBoard(tmp_path, enabled=False)
    board.add_row(ROW)
    board.close()
    assert board.writer is None and not (tmp_path / "tensorboard").exists()


def test_asked_for_without_tensorboard_is_a_clear_error(tmp_path, no_tensorboard):
    with pytest.raises(TensorBoardMissingError, match="pip install tensorboard"):
        TierBoard(tmp_path, enabled=True)


def test_the_server_logs_every_evaluated_round(data_dir, tmp_path, fake_writer, task_identity):
    cfg = _cfg(data_dir, tmp_path, tensorboard=True, num_rounds=3, eval_every=2)
    _main(cfg)
    rows = _rows(cfg)
    (writer,) = fake_writer.made
    assert writer.log_dir == str(server_app.run_folder(cfg) / "tensorboard") and writer.closed
    expected = [
        (f"test-accuracy-pct/beta-{b}", 100 * m["accuracy"], r["round"])
        for r in rows
        for b, m in r.get("tiers", {}).items()
    ]
    assert {s[2] for s in expected} == {2, 3}  # eval-every 2 and the last round
    assert [s for s in writer.scalars if "accuracy" in s[0]] == expected
    losses = [s for s in writer.scalars if s[0].startswith("test-loss/")]
    assert len(losses) == len(expected)


def test_the_server_stops_before_round_1_without_tensorboard(
    data_dir, tmp_path, no_tensorboard, task_identity
):
    cfg = _cfg(data_dir, tmp_path, tensorboard=True)
    with pytest.raises(TensorBoardMissingError, match="pip install tensorboard"):
        _main(cfg)
    assert not (server_app.run_folder(cfg) / METRICS).exists()


def test_real_events_hold_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TierBoard(tmp_path, enabled=True) as board:
        board.add_row(ROW)
        board.add_row({**ROW, "round": 6})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert len(events.Tags()["scalars"]) == 6
    accuracy = events.Scalars("test-accuracy-pct/beta-1")
    assert [(e.step, e.value) for e in accuracy] == [(4, 50.0), (6, 50.0)]
    assert events.Scalars("validation-loss/beta-0.5")[0].value == pytest.approx(2.5)
