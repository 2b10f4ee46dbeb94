"""The benchmark's models, their inputs, and the model a tier's client holds."""

from __future__ import annotations

import pytest
import torch

from maestro_common.lowrank.layers import budget_rank, low_rank_layers
from simulations import bench
from simulations.bench import factored_tier


@pytest.mark.parametrize("kind", ["svd", "tucker"])
def test_factored_tier_holds_the_prefix(kind):
    dense = bench.dense_model("lenet5")
    full = factored_tier(dense, kind, 1.0)
    tier = factored_tier(dense, kind, 0.4)
    for name, layer in low_rank_layers(tier).items():
        assert layer.rank == budget_rank(low_rank_layers(full)[name].rank, 0.4)
    x = torch.randn(2, *bench.SHAPE)
    assert tier(x).shape == (2, 10)


def test_width_variants_name_the_kind_they_match():
    assert bench.width_variant("svd") == "width"
    assert bench.width_variant("tucker-b2") == "width@tucker-b2"


def test_char_transformer_is_sized_as_the_shakespeare_run():
    import tomllib
    from pathlib import Path

    from maestro_common.app.config import parse_options

    conf = tomllib.loads(
        (Path(__file__).parents[3] / "simulations/conf/shakespeare.toml").read_text()
    )
    options = {k: v for k, v in bench.MODELS["char-transformer"].items() if k != "dataset"}
    assert options == parse_options(conf["model-options"], "model-options")
    assert (conf["model"], conf["dataset"]) == ("char-transformer", "shakespeare")
    assert bench.MODELS["char-transformer"]["dataset"] == conf["dataset"]
    model = bench.dense_model("char-transformer")
    assert model.input_shape == bench.geometry("char-transformer").shape == (80,)
    assert model.input_dtype == torch.long
    assert model(torch.zeros(2, 80, dtype=torch.long)).shape == (2, 81, 80)


def test_image_models_keep_their_input_and_random_batch():
    assert bench.geometry("cnn") == bench.geometry("resnet18-full") == bench.IMAGE
    assert bench.Geometry((1, 28, 28), 10, tokens=False) == bench.IMAGE
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, *bench.SHAPE, generator=g), torch.randint(0, 10, (4,), generator=g)
    got = bench.IMAGE.batch(4, torch.Generator().manual_seed(0))
    assert torch.equal(got[0], x) and torch.equal(got[1], y)  # the draws the bench always made
    assert bench.model_kinds("cnn") == list(bench.MODEL_KINDS)
    assert bench.model_kinds("transformer") == ["svd", "tucker", "tucker-b2"]


def test_token_batches_are_windows_and_their_next_tokens():
    geo = bench.geometry("char-transformer")
    x, y = geo.batch(3, torch.Generator().manual_seed(0))
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (3, 80)
    assert torch.equal(x[:, 1:], y[:, :-1])  # position t's target is token t + 1
    assert int(x.min()) >= 0 and int(torch.cat([x, y]).max()) < 81
    assert geo.inputs(2).dtype == torch.long
    # No convolution to factor: the conv-only kinds would time svd again.
    assert bench.model_kinds("char-transformer") == ["svd"]
