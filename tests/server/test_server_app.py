"""Tests for server.server_app: fail before round 1, bounded wait, empty rounds flagged, resume."""

import json

import numpy as np
import pytest
from flwr.app import Context, Message, MessageType, RecordDict

from maestro_common.app import protocol as P
from maestro_common.app.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.protocol import ARRAYS as ARRAYS_KEY
from server import server_app
from server.model_ops import ModelOps
from server.results import CHECKPOINT, METRICS, OLD_CHECKPOINT, SUMMARY, ResumeError
from tests.fakegrid import FakeGrid
from tests.idx_data import write_random_idx
from tests.server.strategy_setup import echo, nan_entry

pytestmark = pytest.mark.usefixtures("task_identity")

NODES = {11: {"partition-id": 0, "num-partitions": 2}, 22: {"partition-id": 1, "num-partitions": 2}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    write_random_idx(folder, 200, 60)
    return folder


def _cfg(data, tmp_path, **changes) -> RunConfig:
    base = {
        "model": "lenet5",
        "data_dir": str(data),
        "tier_fractions": "0.5,1.0",
        "clients_per_round": 2,
        "num_rounds": 2,
        "max_test_examples": 30,
        "device": "cpu",
        "output_dir": str(tmp_path / "runs"),
        "run_name": "r",
        "node_wait": 5.0,
    }
    return RunConfig(**{**base, **changes})


def _main(cfg: RunConfig, train=None, nodes=None) -> FakeGrid:
    grid = FakeGrid(nodes or NODES, cfg.to_run_config(), train=train)
    server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
    return grid


def _rows(cfg: RunConfig) -> list[dict]:
    path = server_app.run_folder(cfg) / METRICS
    return [json.loads(x) for x in path.read_text().splitlines()]


# ----- fail fast --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "a\\\\b"])
def test_run_name_that_leaves_output_dir_is_refused(name):
    with pytest.raises(ConfigError, match="run-name must be a plain folder name"):
        RunConfig(run_name=name)


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"data_dir": "/no/such/folder"}, "data-dir '/no/such/folder' is not a folder"),
        ({"tier_speeds": "1e9,2e9,3e9"}, "bad tier profile: tier-speeds must have 2 values"),
        ({"tier_availability": "0"}, "bad tier profile: TierProfile availability"),
    ],
)
def test_bad_setting_fails_before_anything_is_sent_or_written(data_dir, tmp_path, changes, match):
    cfg = _cfg(data_dir, tmp_path, **changes)
    grid = FakeGrid(NODES, cfg.to_run_config())
    with pytest.raises(ConfigError, match=match):
        server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
    assert grid.sent == [] and not (tmp_path / "runs").exists()


def test_corrupt_test_split_fails_before_anything_is_sent_or_written(data_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in data_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    cfg = _cfg(broken, tmp_path)
    grid = FakeGrid(NODES, cfg.to_run_config())
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
    assert grid.sent == [] and not (tmp_path / "runs").exists()


def test_fewer_nodes_than_min_nodes_stops_after_node_wait(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, min_nodes=3, node_wait=0.2)
    with pytest.raises(TimeoutError, match="only 2 of min-nodes=3 nodes connected"):
        _main(cfg)


# ----- rounds without a valid reply -------------------------------------------------------


def test_rounds_without_a_valid_reply_are_flagged(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path)
    _main(cfg, train=echo(nan_entry))
    rows = _rows(cfg)
    assert [r["valid-replies"] for r in rows] == [0, 0]
    assert all(r["no-valid-reply"] is True for r in rows)
    assert all(len(r["rejected"]) == 2 for r in rows)
    summary = (server_app.run_folder(cfg) / SUMMARY).read_text()
    assert "Rounds with no valid reply" in summary and "1, 2 of 2" in summary
    assert "never trained" in summary


def test_trained_rounds_count_their_valid_replies(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, num_rounds=1)
    _main(cfg, train=echo())
    (row,) = _rows(cfg)
    assert row["valid-replies"] == 2 and "no-valid-reply" not in row
    # The echo replies carry neither rank-fraction nor bytes-up: the virtual clock prices each
    # node from what the server itself sent and received.
    for client in row["clients"]:
        assert client["virtual-seconds"] > 0
        assert client["bytes-up"] == client["bytes-down"] > 0
    assert "no valid reply" not in (server_app.run_folder(cfg) / SUMMARY).read_text()


# ----- resume -----------------------------------------------------------------------------


def _finished_round(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, num_rounds=1)
    _main(cfg, train=echo())
    return cfg, server_app.run_folder(cfg) / CHECKPOINT


@pytest.mark.parametrize("damage", ["nan", "shape", "key"])
def test_resume_from_a_bad_checkpoint_fails_before_any_round(data_dir, tmp_path, damage):
    cfg, path = _finished_round(data_dir, tmp_path)
    ckpt = read_checkpoint(path)
    arrays = dict(ckpt.arrays)
    if damage == "nan":
        arrays["fc1.u"] = np.full_like(arrays["fc1.u"], np.nan)
    elif damage == "shape":
        arrays["fc3.weight"] = np.zeros((10, 85), np.float32)
    else:
        arrays["extra"] = np.zeros(2, np.float32)
    write_checkpoint(path, ckpt.round, arrays, ckpt.config)  # well formed, checksum right
    rows_before = _rows(cfg)
    resumed = cfg.replace(num_rounds=2, resume=True)
    grid = FakeGrid(NODES, resumed.to_run_config(), train=echo())
    with pytest.raises(CheckpointError, match=str(path)):
        server_app.main(grid, Context(1, 0, {}, RecordDict(), resumed.to_run_config()))
    assert grid.sent == [] and _rows(cfg) == rows_before


def test_resume_with_a_good_checkpoint_continues(data_dir, tmp_path):
    cfg, path = _finished_round(data_dir, tmp_path)
    _main(cfg.replace(num_rounds=2, resume=True), train=echo())
    assert [r["round"] for r in _rows(cfg)] == [1, 2]
    assert read_checkpoint(path).round == 2


def test_an_old_pickle_checkpoint_is_never_loaded(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, resume=True)
    folder = server_app.run_folder(cfg)
    folder.mkdir(parents=True)
    (folder / OLD_CHECKPOINT).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ResumeError, match="old pickle format"):
        _main(cfg)


# ----- server-side validation --------------------------------------------------------------


def test_rows_carry_validation_accuracy_per_tier(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, val_size=40)
    _main(cfg, train=echo())
    for row in _rows(cfg):
        assert set(row["val-tiers"]) == set(row["tiers"]) == {"0.5", "1"}
        for m in row["val-tiers"].values():
            assert m["accuracy"] * 40 == pytest.approx(round(m["accuracy"] * 40))  # of 40
            assert np.isfinite(m["loss"])
    assert "server-side validation split" in (server_app.run_folder(cfg) / SUMMARY).read_text()


def test_without_test_eval_the_test_set_is_never_read(data_dir, tmp_path, monkeypatch):
    def refuse(self):
        raise AssertionError("the test set was read")

    monkeypatch.setattr(server_app.ModelOps, "test_set", refuse)
    cfg = _cfg(data_dir, tmp_path, val_size=40, test_eval=False)
    _main(cfg, train=echo())
    rows = _rows(cfg)
    assert all("tiers" not in r and set(r["val-tiers"]) == {"0.5", "1"} for r in rows)


def test_a_validation_split_as_large_as_the_training_set_fails_before_round_1(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, val_size=200)
    grid = FakeGrid(NODES, cfg.to_run_config())
    with pytest.raises(ConfigError, match=r"val-size must be in 0\.\.199"):
        server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
    assert grid.sent == [] and not (tmp_path / "runs").exists()


# ----- the dense warm-up -------------------------------------------------------------------

# Node 11 is a β = 0.5 tier, node 22 a β = 1 tier: only 22 can train the dense LeNet-5.
TIERED = {
    11: {"partition-id": 0, "num-partitions": 2, "rank-fraction": 0.5},
    22: {"partition-id": 1, "num-partitions": 2, "rank-fraction": 1.0},
}


def test_a_federated_dense_warmup_is_refused_before_anything_is_sent(data_dir, tmp_path):
    # Its federated forms lost and were removed; the centralized trainer keeps the option.
    cfg = _cfg(data_dir, tmp_path, num_rounds=3, dense_warmup=0.5)
    grid = FakeGrid(TIERED, cfg.to_run_config())
    with pytest.raises(ConfigError, match=r"dense-warmup=0\.5: .*centralized trainer"):
        server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
    assert grid.sent == [] and not (tmp_path / "runs").exists()


def test_a_branched_tucker_run_trains_and_aggregates_each_tiers_branch_prefixes(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, num_rounds=1, conv_factorization="tucker-b2")
    grid = _main(cfg, nodes=TIERED)
    sent = {m.metadata.dst_node_id: m.content for m in grid.sent_of(MessageType.TRAIN, 1)}
    # LeNet-5's conv2 (6→16, 5x5) in 2 branches of 8: β = 0.5 gets 4 channels of each branch.
    cores = {n: sent[n][ARRAYS_KEY]["conv2.core"].shape for n in (11, 22)}
    assert cores == {11: (2, 4, 4, 5, 5), 22: (2, 8, 8, 5, 5)}
    (row,) = _rows(cfg)
    assert row["valid-replies"] == 2
    assert all(0 <= m["accuracy"] <= 1 for m in row["tiers"].values())
    ckpt = read_checkpoint(server_app.run_folder(cfg) / CHECKPOINT)
    assert ckpt.arrays["conv2.core"].shape == (2, 8, 8, 5, 5)


# ----- one writer per run folder ---------------------------------------------------------


def test_a_second_writer_on_a_held_run_folder_is_refused(data_dir, tmp_path):
    import os

    from maestro_common.app.runlock import LOCK, FolderLock, FolderLockedError

    cfg = _cfg(data_dir, tmp_path)
    folder = server_app.run_folder(cfg)
    grid = FakeGrid(NODES, cfg.to_run_config())
    with FolderLock(folder, "another ServerApp"):  # a second open file: flock refuses it too
        with pytest.raises(FolderLockedError, match=rf"another ServerApp \(pid {os.getpid()} on"):
            server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
        assert grid.sent == [] and sorted(p.name for p in folder.iterdir()) == [LOCK]
    # Released: the run goes ahead, and gives its folder up when it ends.
    _main(cfg)
    assert [r["round"] for r in _rows(cfg)] == [1, 2]
    with FolderLock(folder, "next"):
        pass


# ----- issue 30: what a client can make the server report ------------------------------------


def test_a_client_cannot_name_a_tier_row_inflate_the_records_or_its_tiers_accuracy(
    data_dir, tmp_path, monkeypatch
):
    liar = 33
    nodes = {
        11: {"rank-fraction": 0.5, "partition-id": 0, "num-partitions": 3},
        22: {"rank-fraction": 1.0, "partition-id": 1, "num-partitions": 3},
        liar: {"rank-fraction": 0.5000001, "partition-id": 2, "num-partitions": 3},
    }
    cfg = _cfg(data_dir, tmp_path, clients_per_round=3, clients_per_eval=3, num_rounds=1)

    def many_metrics(arrays, metrics):
        metrics.update({f"m{i:05d}": 1.0 for i in range(30_000)})  # 815 kB a round before

    grid = FakeGrid(nodes, cfg.to_run_config(), train=echo(many_metrics))
    honest_eval = grid.handlers[MessageType.EVALUATE]

    def eval_liar(msg, context):
        if context.node_id != liar:
            return honest_eval(msg, context)
        return Message(P.encode_eval_reply(1e9, 0.0, 1.0), reply_to=msg)

    grid.handlers[MessageType.EVALUATE] = eval_liar
    evaluated: list[list[float]] = []
    real = ModelOps.evaluate_tiers

    def spy(self, arrays, betas):
        evaluated.append(list(betas))
        return real(self, arrays, betas)

    monkeypatch.setattr(ModelOps, "evaluate_tiers", spy)
    server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
    row = _rows(cfg)[-1]
    # Centralized evaluation at the run's own tiers only: the claimed β costs no evaluation.
    assert evaluated == [[0.5, 1.0]] and set(row["tiers"]) == {"0.5", "1"}
    # The claimed β = 0.5000001 is not tier "0.5": its federated result has a row of its own.
    fed = row["federated"]
    assert set(fed) == {"0.5", "1", "off-tier"}
    assert fed["off-tier"]["accuracy"] == 1.0
    assert fed["0.5"]["accuracy"] < 1.0  # the honest node's own figure, untouched
    # Its claimed 1e9 examples weigh at most 2 × the round's low median.
    median = sorted(m["num-examples"] for m in fed.values())[1]
    assert fed["off-tier"]["num-examples"] <= 2 * median
    # Each client row keeps the contract's metrics and at most 16 others.
    for client in row["clients"]:
        assert len([k for k in client if k.startswith("m")]) == 16
    assert len(json.dumps(row)) < 20_000


def test_an_evaluate_liar_cannot_make_its_tier_read_100_percent(data_dir, tmp_path):
    nodes = {
        10 + i: {"rank-fraction": 1.0, "partition-id": i, "num-partitions": 4} for i in range(4)
    }
    cfg = _cfg(data_dir, tmp_path, clients_per_round=4, clients_per_eval=4, num_rounds=1)
    grid = FakeGrid(nodes, cfg.to_run_config(), train=echo())

    def evaluate(msg, context):
        if context.node_id == 10:
            return Message(P.encode_eval_reply(1e9, 0.0, 1.0), reply_to=msg)
        return Message(P.encode_eval_reply(20, 1.0, 0.5), reply_to=msg)

    grid.handlers[MessageType.EVALUATE] = evaluate
    server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
    fed = _rows(cfg)[-1]["federated"]["1"]
    # Weights 40 (2 × the median 20) and 3 × 20: (40 · 1.0 + 60 · 0.5) / 100.
    assert fed["accuracy"] == pytest.approx(0.7)
    assert fed["num-examples"] == 100
