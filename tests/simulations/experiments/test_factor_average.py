"""The factor-against-product averaging diagnostic: its means, its SVD and one in-process round."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maestro_common.app.codec import model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model
from maestro_common.lowrank.layers import LowRankConv2d, LowRankLinear
from server.aggregation import aggregate_nested
from simulations.experiments import factor_average as fa


def _reply(layer, name, k, weight, gen):
    u = torch.randn(layer.u.shape[0], k, generator=gen)
    v = (
        torch.randn(*layer.v.shape[:-1], k, generator=gen)
        if isinstance(layer, LowRankLinear)
        else torch.randn(k, *layer.v.shape[1:], generator=gen)
    )
    return fa.Reply({f"{name}.u": u.numpy(), f"{name}.v": v.numpy()}, weight, 1.0)


@pytest.mark.parametrize("layer", [LowRankLinear(6, 5), LowRankConv2d(2, 4, 3)])
def test_product_mean_averages_each_component_over_the_replies_that_hold_it(layer):
    gen = torch.Generator().manual_seed(0)
    glob = {"l.u": layer.u.detach().numpy(), "l.v": layer.v.detach().numpy()}
    rank = layer.rank
    replies = [_reply(layer, "l", rank, 1.0, gen), _reply(layer, "l", 2, 3.0, gen)]
    got = fa.product_mean(layer, "l", glob, replies)
    # Written out: component j's outer products, weighted over the replies holding j.
    mats = [fa._matrices(layer, r.arrays["l.u"], r.arrays["l.v"]) for r in replies]
    expected = np.zeros_like(got)
    for j in range(rank):
        holders = [(m, r.weight) for m, r in zip(mats, replies, strict=True) if m[0].shape[1] > j]
        total = sum(w for _, w in holders)
        for (u, v), w in holders:
            expected += w / total * np.outer(u[:, j], v[:, j])
    assert np.allclose(got, expected, atol=1e-10)
    # One reply: its own product; the factor mean of one reply is that reply too (no gap).
    alone = fa.product_mean(layer, "l", glob, replies[:1])
    u, v = mats[0]
    assert np.allclose(alone, u @ v.T, atol=1e-10)
    # Two replies: the mean of the factors is not the mean of the products.
    fm = aggregate_nested(glob, [(r.arrays, r.weight) for r in replies])
    fu, fv = fa._matrices(layer, fm["l.u"], fm["l.v"])
    assert np.linalg.norm(got - fu @ fv.T) > 1e-3


def test_product_mean_keeps_the_global_components_no_reply_holds():
    layer = LowRankLinear(6, 5)
    glob = {"l.u": layer.u.detach().numpy(), "l.v": layer.v.detach().numpy()}
    reply = _reply(layer, "l", 2, 1.0, torch.Generator().manual_seed(1))
    gu, gv = fa._matrices(layer, glob["l.u"], glob["l.v"])
    u, v = fa._matrices(layer, reply.arrays["l.u"], reply.arrays["l.v"])
    expected = u @ v.T + gu[:, 2:] @ gv[:, 2:].T
    assert np.allclose(fa.product_mean(layer, "l", glob, [reply]), expected, atol=1e-10)


def test_svd_factors_give_the_weight_back_ordered_by_singular_value():
    torch.manual_seed(2)
    layer = LowRankConv2d(3, 4, 3)  # full rank 4: exact
    like = {"l.u": layer.u.detach().numpy(), "l.v": layer.v.detach().numpy()}
    weight = np.random.default_rng(0).normal(size=(4, 27))
    arrays = fa.svd_factors(layer, weight, like, "l")
    assert arrays["l.u"].shape == like["l.u"].shape and arrays["l.v"].shape == like["l.v"].shape
    u, v = fa._matrices(layer, arrays["l.u"], arrays["l.v"])
    assert np.allclose(u @ v.T, weight, atol=1e-5)
    norms = np.linalg.norm(u, axis=0)
    assert np.all(np.diff(norms) <= 1e-6)  # √s on u: leading components are the largest


def test_tucker_and_hybrid_readers_are_left_out():
    tucker = build_run_model(RunConfig(model="cnn", conv_factorization="tucker"))
    assert set(fa.product_layers(tucker)) == {"fc1"}
    hybrid = build_run_model(RunConfig(model="cnn", hybrid_width=True))
    assert set(fa.product_layers(hybrid)) == {"fc1"}
    assert set(fa.product_layers(build_run_model(RunConfig(model="cnn")))) == {"conv2", "fc1"}


def test_one_round_in_process_reports_every_layer_and_tier(fmnist_sample):
    cfg = RunConfig(
        model="lenet5",
        data_dir=str(fmnist_sample),
        tier_fractions="0.5,1.0",
        val_size=200,
        lr=0.05,
        num_rounds=4,
    )
    fresh = model_arrays(build_run_model(cfg))
    result = fa.measure(cfg, fresh, server_round=1, num_partitions=4, clients=3)
    assert set(result["layers"]) == {"conv2", "fc1", "fc2"} and result["left out"] == []
    for figures in result["layers"].values():
        assert figures["update"] > 0 and 0 <= figures["gap"] < figures["update"]
    acc = result["val accuracy"]
    assert set(acc) == {"factor mean", "factor mean, SVD-ordered", "product mean, SVD-ordered"}
    # At full rank the SVD re-factoring is exact: the full tier is the same model.
    assert acc["factor mean"]["1"] == pytest.approx(acc["factor mean, SVD-ordered"]["1"], abs=1)
    assert {c["beta"] for c in result["clients"]} <= {0.5, 1.0} and len(result["clients"]) == 3


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        fa.parse_args([])
    assert "give --conf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fa.parse_args(["--conf", "x.toml", "--partitions", "0"])
    assert "--partitions and --threads must be ≥ 1" in capsys.readouterr().err


def test_a_bad_run_config_is_refused_with_its_reason(tmp_path):
    conf = tmp_path / "run.toml"
    conf.write_text('model = "cnn"\n')
    with pytest.raises(SystemExit, match=r"factor_average: .*lr must be > 0"):
        fa.main(["--conf", str(conf), "--set", "lr=0"])
    with pytest.raises(SystemExit, match=r"factor_average: .*KEY=VALUE"):
        fa.main(["--conf", str(conf), "--set", "lr"])


def test_an_experiment_files_node_count_is_not_taken_for_run_config(tmp_path):
    conf = tmp_path / "e.toml"
    conf.write_text('num-supernodes = 20\nmodel = "cnn"\nnum-rounds = 4\n')
    cfg = fa._config(conf, [], {})
    assert (cfg.model, cfg.num_rounds) == ("cnn", 4)
