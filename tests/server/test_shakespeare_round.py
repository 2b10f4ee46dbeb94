"""The character task end to end in process: every method's ServerApp over a fake grid of roles.

The ServerApp and ClientApp handlers run as in a federation (tier query, train, aggregate,
evaluate), on the synthetic corpus (6 roles), with a tiny character Transformer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.methods import METHOD_NAMES
from maestro_common.app.task import build_run_model, check_names
from server import server_app
from tests.fakegrid import FakeGrid

pytestmark = pytest.mark.usefixtures("task_identity")


def _cfg(tmp_path: Path, method: str, model: str = "char-transformer") -> RunConfig:
    options = "dim=16,depth=1,heads=2,mlp-ratio=2" if model == "char-transformer" else "hidden=16"
    return RunConfig(
        method=method,
        model=model,
        model_options=options,
        dataset="shakespeare",
        tier_fractions="0.5,1.0",
        num_rounds=2,
        clients_per_round=3,
        min_nodes=3,
        local_steps=3,
        batch_size=8,
        lr=0.5,
        max_test_examples=12,
        val_size=6,
        device="cpu",
        output_dir=str(tmp_path / "runs"),
        run_name="shk",
    )


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_trains_the_character_model_and_scores_every_tier(
    small_corpus, tmp_path, method
):
    cfg = _cfg(tmp_path, method)
    nodes = {i + 1: {"partition-id": i, "num-partitions": 3} for i in range(3)}
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg.to_run_config()
    )
    server_app.main(FakeGrid(nodes, cfg.to_run_config()), context)
    rows = [json.loads(x) for x in (Path(cfg.output_dir) / "shk" / "metrics.jsonl").open()]
    assert [r["round"] for r in rows] == [1, 2]
    last = rows[-1]
    assert set(last["tiers"]) == {"0.5", "1"}
    for tier in last["tiers"].values():
        # Per-position and last-position accuracy, on the server's 12 test windows.
        assert 0 <= tier["accuracy"] <= 1 and 0 <= tier["accuracy-last"] <= 1
        assert tier["loss"] > 0 and tier["macs"] > 0
    assert set(last["val-tiers"]) == {"0.5", "1"}
    # A reply weighs its whole local data, not the 3 × 8 windows its step budget trained on.
    assert all(c["num-examples"] > 24 for c in last["clients"])


def test_the_lstm_runs_under_maestro(small_corpus, tmp_path):
    cfg = _cfg(tmp_path, "maestro", model="char-lstm").replace(num_rounds=1)
    nodes = {i + 1: {"partition-id": i, "num-partitions": 3} for i in range(3)}
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg.to_run_config()
    )
    server_app.main(FakeGrid(nodes, cfg.to_run_config()), context)
    rows = [json.loads(x) for x in (Path(cfg.output_dir) / "shk" / "metrics.jsonl").open()]
    assert set(rows[-1]["tiers"]) == {"0.5", "1"}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"model": "cnn"}, "does not fit dataset 'shakespeare'"),
        ({"dataset": "fashion-mnist"}, "does not fit dataset 'fashion-mnist'"),
        ({"model_options": "context=40"}, "may not set context"),
    ],
)
def test_a_model_that_does_not_fit_the_data_is_refused(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        check_names(_cfg(tmp_path, "maestro").replace(**changes))


def test_an_unknown_model_option_is_a_config_error_naming_the_allowed_ones(tmp_path):
    cfg = _cfg(tmp_path, "fjord").replace(model_options="dim=16,width=3")
    with pytest.raises(ConfigError, match="allowed: dim, depth, heads"):
        build_run_model(cfg)
