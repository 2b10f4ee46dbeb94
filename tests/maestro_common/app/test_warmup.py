"""The dense warm-up's phases and the SVD that ends it."""

import numpy as np
import pytest
import torch

from maestro_common.app.codec import load_arrays, model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model
from maestro_common.app.warmup import factor_arrays, in_warmup, phase_config, whole_model
from maestro_common.lowrank.layers import low_rank_layers


def test_rounds_up_to_the_warmup_train_the_dense_method_then_the_runs_own():
    cfg = RunConfig(model="lenet5", num_rounds=10, dense_warmup=0.3)
    assert [in_warmup(cfg, r) for r in (0, 1, 3, 4, 10)] == [True, True, True, False, False]
    dense = phase_config(cfg, 3)
    assert (dense.method, dense.dense_warmup, dense.model) == ("fedavg-all", 0.0, "lenet5")
    assert phase_config(cfg, 4) is cfg
    assert phase_config(cfg.replace(warmup_method="fjord"), 1).method == "fjord"
    # The warm-up's dense model has no factors: Frobenius decay waits for the factored phase.
    decayed = cfg.replace(frobenius_decay=1e-4)
    assert phase_config(decayed, 3).frobenius_decay == 0.0
    assert phase_config(decayed, 4).frobenius_decay == 1e-4
    off = RunConfig(model="lenet5")
    assert not in_warmup(off, 1) and phase_config(off, 1) is off


def test_only_the_whole_dense_model_limits_who_warms_up():
    assert whole_model(RunConfig(dense_warmup=0.5))
    assert not whole_model(RunConfig(dense_warmup=0.5, warmup_method="fjord"))


@pytest.mark.parametrize(
    ("conv", "how"),
    [("svd", "fedavg-all"), ("tucker", "fjord"), ("tucker-b2", "fedavg-all"), ("svd", "fjord")],
)
def test_factored_arrays_compute_what_the_dense_model_did(conv, how):
    cfg = RunConfig(
        model="cnn",
        conv_factorization=conv,
        num_rounds=4,
        dense_warmup=0.5,
        warmup_method=how,
    )
    dense_model = build_run_model(phase_config(cfg, 1))
    with torch.no_grad():  # "trained": weights unlike the seeded initial ones
        for p in dense_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    arrays = factor_arrays(cfg, model_arrays(dense_model))
    factored = load_arrays(build_run_model(cfg), arrays)
    fresh = model_arrays(build_run_model(cfg))
    assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in fresh.items()}
    assert low_rank_layers(factored)  # factored, at full rank
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(factored(x), dense_model(x), rtol=1e-4, atol=1e-4)


def test_the_leading_components_carry_the_largest_singular_values():
    cfg = RunConfig(model="lenet5", num_rounds=4, dense_warmup=0.5)
    arrays = factor_arrays(cfg, model_arrays(build_run_model(phase_config(cfg, 1))))
    u, v = arrays["fc1.u"], arrays["fc1.v"]
    energy = np.linalg.norm(u, axis=0) * np.linalg.norm(v, axis=0)
    assert np.all(np.diff(energy) <= 1e-5)  # a prefix is the best low-rank cut
