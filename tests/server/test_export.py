"""Export a tier as a torch-only artifact, and the per-tier evaluation of a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from maestro_common.app.checkpoint import write_checkpoint
from maestro_common.app.codec import model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.samplers import make_sampler
from maestro_common.lowrank.training import TrainSettings, train
from maestro_common.ml.data import load_dataset
from server.export import (
    evaluate_run,
    export_tier,
    load_run,
    load_test_set,
    main,
    pixels,
    tier_beta,
)


def make_run(folder: Path, data_dir: Path, method: str = "maestro", **changes) -> Path:
    """A run folder with a LeNet-5 trained one epoch on 600 images: its checkpoint's path."""
    cfg = RunConfig(
        **changes,
        method=method,
        model="lenet5",
        data_dir=str(data_dir),
        tier_fractions="0.2,0.5,1.0",
        run_name="tiny",
        max_test_examples=400,
    )
    model = build_run_model(cfg)
    data = load_dataset("fashion-mnist", "train", str(data_dir))
    ranks = {n: m.rank for n, m in low_rank_layers(model).items()}
    sampler = make_sampler("maestro", ranks, seed=0) if ranks else None
    train(model, data.images[:600], data.labels[:600], TrainSettings(lr=0.02), sampler)
    folder.mkdir(parents=True)
    write_checkpoint(folder / "checkpoint.npz", 3, model_arrays(model), cfg.to_run_config())
    (folder / "config.json").write_text(json.dumps(cfg.to_run_config()))
    return folder / "checkpoint.npz"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, fmnist_sample) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "tiny", fmnist_sample)


# Runs with the interpreter's site-packages on the path and nothing else: no project, no .pth.
TORCH_ONLY = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[1])
assert importlib.util.find_spec("maestro_common") is None, "the project is importable"
import torch
program = torch.export.load(sys.argv[2]).module()
data = torch.load(sys.argv[3])
with torch.no_grad():
    pred = program(data["pixels"]).argmax(1)
print(json.dumps({"accuracy": (pred == data["labels"]).float().mean().item()}))
"""


def test_exported_tier_runs_with_torch_alone_at_the_frameworks_accuracy(checkpoint, tmp_path):
    run = load_run(checkpoint)
    test = load_test_set(run.cfg, limit=400)
    facts = export_tier(run, 0.2, tmp_path, test, repeats=3)
    # The artifact in a fresh interpreter without site processing (-S) or this repository on
    # its path (-I): only the folder holding torch is added.
    torch.save({"pixels": pixels(run.cfg, test.images), "labels": test.labels}, tmp_path / "t.pt")
    site = sysconfig.get_paths()["purelib"]
    args = [tmp_path / facts["artifact"], tmp_path / "t.pt"]
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", TORCH_ONLY, site, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    accuracy = json.loads(done.stdout.splitlines()[-1])["accuracy"]
    assert abs(100 * accuracy - facts["framework-accuracy-pct"]) <= 0.1  # in %
    assert facts["test-accuracy-pct"] == pytest.approx(100 * accuracy, abs=1e-4)
    written = json.loads((tmp_path / "tiny-beta0.2.json").read_text())
    assert written["beta"] == 0.2 and written["round"] == 3
    # Ranks are the tier's ⌈0.2·r⌉, not the full model's.
    full = {n: m.rank for n, m in low_rank_layers(run.model).items()}
    assert written["ranks"] == {n: -(-r // 5) for n, r in full.items()}
    assert set(written["latency-ms"]) == {"1", "64"}
    assert written["params"] > 0 and written["macs"] > 0 and written["artifact-bytes"] > 0


@pytest.mark.parametrize("merge", ["none", "all"])
def test_merge_modes_change_the_form_not_the_predictions(checkpoint, tmp_path, merge):
    run = load_run(checkpoint)
    test = load_test_set(run.cfg, limit=200)
    facts = export_tier(run, 0.5, tmp_path, test, merge=merge, repeats=1)
    assert facts["merged-to-dense"] == ([] if merge == "none" else sorted(facts["ranks"]))
    assert facts["test-accuracy-pct"] == pytest.approx(facts["framework-accuracy-pct"], abs=0.1)


def test_evaluate_matches_the_servers_per_tier_evaluation(checkpoint, fmnist_sample):
    run = load_run(checkpoint)
    test = load_test_set(run.cfg, limit=400)
    rows = evaluate_run(run, [0.2, 0.5, 1.0], test, repeats=1)
    expected = run.ops.evaluate_tiers(run.checkpoint.arrays, [0.2, 0.5, 1.0])
    for row in rows:
        tier = expected[f"{row['beta']:g}"]
        assert row["accuracy-pct"] == pytest.approx(100 * tier["accuracy"])  # metrics: a fraction
        assert row["loss"] == pytest.approx(tier["loss"], rel=1e-5)
        assert (row["params"], row["macs"], row["bytes"]) == (
            tier["params"],
            tier["macs"],
            tier["bytes-down"],
        )
    assert rows[0]["params"] < rows[-1]["params"]


def test_evaluate_cli_writes_the_table(checkpoint, tmp_path, capsys):
    code = main(
        [
            *("evaluate", str(checkpoint), "--betas", "0.2,1", "--limit-test", "100"),
            *("--repeats", "1", "--out", str(tmp_path)),
        ]
    )
    assert code == 0
    assert "| 0.2 |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "tiers.json").read_text())
    assert [r["beta"] for r in rows] == [0.2, 1.0]
    csv_lines = (tmp_path / "tiers.csv").read_text().splitlines()
    assert csv_lines[0].startswith("beta,budget,accuracy-pct,") and len(csv_lines) == 3
    assert (tmp_path / "tiers.md").read_text().startswith("# tiny")


def test_export_cli_by_tier_index(checkpoint, tmp_path):
    code = main(
        [
            *("export", str(checkpoint), "--tier", "0", "--limit-test", "50", "--merge", "none"),
            *("--repeats", "1", "--out", str(tmp_path)),
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "tiny-beta0.2.json").read_text())["beta"] == 0.2


def test_dense_runs_export_whole(tmp_path, fmnist_sample):
    checkpoint = make_run(tmp_path / "dense", fmnist_sample, method="fedavg-all")
    run = load_run(checkpoint)
    facts = export_tier(run, 0.2, tmp_path / "out", load_test_set(run.cfg, limit=100), repeats=1)
    assert facts["budget"] == 1.0 and facts["ranks"] == {}
    assert facts["test-accuracy-pct"] == pytest.approx(facts["framework-accuracy-pct"], abs=0.1)


@pytest.mark.parametrize("hybrid", [False, True])
def test_an_older_runs_removed_key_loads_at_its_default_only(tmp_path, hybrid):
    """Checkpoints written before hybrid-width was removed store it (false): they still load.
    One of a run that set it names the removal rather than building another model."""
    cfg = RunConfig(model="lenet5", tier_fractions="0.2,0.5,1.0")
    old = {**cfg.to_run_config(), "hybrid-width": hybrid}
    (tmp_path / "config.json").write_text(json.dumps(old))
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, 3, model_arrays(build_run_model(cfg)), old)
    if hybrid:
        with pytest.raises(ValueError, match="'hybrid-width' was removed"):
            load_run(path)
        return
    assert load_run(path).cfg == cfg.replace(device="cpu")


def test_bad_inputs_get_clear_errors(checkpoint, tmp_path, capsys):
    run = load_run(checkpoint)
    with pytest.raises(ValueError, match=r"tier must be an index in 0..2"):
        tier_beta(run.cfg, tier=3)
    with pytest.raises(ValueError, match="exactly one"):
        tier_beta(run.cfg, beta=0.5, tier=1)
    missing = tmp_path / "nothing" / "checkpoint.npz"
    assert main(["evaluate", str(missing), "--out", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err
    garbage = tmp_path / "checkpoint.npz"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(garbage), "--out", str(tmp_path)]) == 2
    assert str(garbage) in capsys.readouterr().err


def test_width_baselines_are_not_exported(tmp_path, fmnist_sample):
    checkpoint = make_run(tmp_path / "w", fmnist_sample, method="heterofl")
    run = load_run(checkpoint)
    with pytest.raises(ValueError, match="width baseline"):
        export_tier(run, 0.5, tmp_path, load_test_set(run.cfg, limit=10), repeats=1)
    assert np.isfinite(evaluate_run(run, [0.5], load_test_set(run.cfg, limit=50), 1)[0]["loss"])


# ----- export reads only checked inputs and writes only inside --out ------------------------


def _copy_run(checkpoint: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("checkpoint.npz", "config.json"):
        (folder / name).write_bytes((checkpoint.parent / name).read_bytes())
    return folder / "checkpoint.npz"


def test_an_edited_config_json_is_refused_with_the_differing_keys(checkpoint, tmp_path, capsys):
    copy = _copy_run(checkpoint, tmp_path / "run")
    config = json.loads((copy.parent / "config.json").read_text())
    config["rank-fraction"] = 0.5  # would evaluate another model, silently
    (copy.parent / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"in 1 key\(s\) \(rank-fraction: 0.5 there, 1.0 checked\)"
    ):
        load_run(copy)
    assert main(["evaluate", str(copy), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "config.json differs from the checksummed run config" in err
    assert not (tmp_path / "e").exists()
    # --config is checked the same way; a file equal to the checked config passes.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**config, "rank-fraction": 1.0, "seed": 9}))
    with pytest.raises(ValueError, match=r"seed: 9 there, 0 checked"):
        load_run(checkpoint, other)
    (copy.parent / "config.json").unlink()  # none beside it: the checkpoint's own config
    assert load_run(copy).cfg.rank_fraction == 1.0


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "..", "a\\b", ".hidden", ""])
def test_export_names_are_confined_to_out(checkpoint, tmp_path, capsys, name):
    out = tmp_path / "sub" / "out"
    code = main(
        [
            *("export", str(checkpoint), "--beta", "0.2", "--limit-test", "20"),
            *("--merge", "none", "--repeats", "1", "--out", str(out), "--name", name),
        ]
    )
    assert code == 2
    assert "give a plain file name" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.pt2")) and not list(tmp_path.rglob("*.json"))


def test_a_compressed_checkpoint_entry_is_refused_by_export(checkpoint, tmp_path, capsys):
    import zipfile

    packed = tmp_path / "checkpoint.npz"
    with zipfile.ZipFile(checkpoint) as zin, zipfile.ZipFile(packed, "w", 8) as zout:
        for info in zin.infolist():  # 8: deflate
            zout.writestr(info.filename, zin.read(info))
    assert main(["evaluate", str(packed), "--out", str(tmp_path / "e")]) == 2
    assert "is compressed" in capsys.readouterr().err
