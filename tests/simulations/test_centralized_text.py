"""The centralized trainer on the character task: windows drawn from every role's training text,
scored at every position and at the last, like the federation's server."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model
from maestro_common.lowrank.training import evaluate_metrics
from maestro_common.ml.data.text_sets import server_split
from simulations.centralized import main

TINY = {
    "char-transformer": "dim=16,depth=1,heads=2,mlp-ratio=2",
    "char-lstm": "hidden=16",
}


def text_args(model: str, *extra: str) -> list[str]:
    return [
        "--set", "dataset=shakespeare", "--set", f"model={model}",
        "--set", f"model-options={TINY[model]}", "--set", "local-steps=3",
        "--set", "batch-size=4", "--set", "optimizer=adam", "--set", "lr=0.003",
        "--set", "tier-fractions=0.5,1", "--set", "max-test-examples=20",
        "--epochs", "2", "--threads", "1", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("model", sorted(TINY))
def test_character_models_train_and_report_last_position_accuracy(small_corpus, tmp_path, model):
    out = tmp_path / "out"
    rows = main(text_args(model, "--methods", "maestro,fedavg-all", "--out", str(out)))
    assert {r.method for r in rows} == {"maestro", "fedavg-all", "svd"}
    for r in rows:
        assert 0.0 <= r.accuracy <= 1.0 and 0.0 <= r.accuracy_last <= 1.0
        assert r.macs > 0 and r.loss > 0
    summary = pd.read_csv(out / "summary.csv")
    assert summary["accuracy-last-pct"].notna().all()
    assert (summary["last-round"] == 2).all()


def test_text_rows_are_the_servers_metrics_of_the_trained_model(small_corpus, tmp_path):
    out = tmp_path / "out"
    rows = main(text_args("char-lstm", "--methods", "fedavg-all", "--out", str(out)))
    # The saved model, scored on the server's test windows, gives the rows' figures.
    from maestro_common.app.checkpoint import read_checkpoint
    from maestro_common.app.methods import get_method

    cfg = RunConfig(
        method="fedavg-all", dataset="shakespeare", model="char-lstm", model_options="hidden=16"
    )
    model = build_run_model(cfg)
    checkpoint = read_checkpoint(out / "fedavg-all-seed0" / "checkpoint.npz")
    get_method("fedavg-all").load(model, checkpoint.arrays)
    test = server_split("shakespeare", "test", "", 20)
    metrics = evaluate_metrics(model, test.images, test.labels)
    row = next(r for r in rows if r.method == "fedavg-all")
    assert row.accuracy == pytest.approx(metrics["accuracy"])
    assert row.accuracy_last == pytest.approx(metrics["accuracy-last"])


def test_each_epoch_trains_local_steps_batches_of_fresh_windows(small_corpus, monkeypatch):
    from simulations.centralized import trainer

    calls, drawn = [], []
    real = trainer.train

    def spy(model, images, labels, settings, *args, **kwargs):
        calls.append((images.shape, labels.shape, settings.steps, settings.optimizer))
        drawn.append(images)
        assert images.dtype == torch.int64 and labels.dtype == torch.int64
        return real(model, images, labels, settings, *args, **kwargs)

    monkeypatch.setattr(trainer, "train", spy)
    main(text_args("char-lstm", "--methods", "fjord"))
    # Two epochs, each local-steps × batch-size windows of 80 symbols and a fresh Adam.
    assert calls == [((12, 80), (12, 80), 3, "adam")] * 2
    assert not torch.equal(drawn[0], drawn[1])  # each epoch draws its own windows
