"""Tests of the dense reference models and their factored (decomposed) forms."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import decompose, default_skip
from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers
from maestro_common.ml.models import MODEL_NAMES, build_model

# Small geometries keep the whole file fast on two cores.
CONFIGS: dict[str, tuple[str, dict]] = {
    "lenet5": ("lenet5", {"in_channels": 1, "image_size": 28}),
    "cnn": ("cnn", {"in_channels": 1, "image_size": 28}),
    "resnet18-group": ("resnet18", {"in_channels": 3, "image_size": 16, "width": 0.125}),
    "resnet18-batch": (
        "resnet18",
        {"in_channels": 3, "image_size": 16, "width": 0.125, "norm": "batch"},
    ),
    "transformer": ("transformer", {"in_channels": 3, "image_size": 16, "dim": 32}),
}
# (first conv, classifier) of each architecture.
ENDS = {
    "lenet5": ("conv1", "fc3"),
    "cnn": ("conv1", "fc2"),
    "resnet18": ("conv1", "fc"),
    "transformer": ("patch_embed", "head"),
}
NUM_CLASSES = 7


def make(key: str) -> tuple[nn.Module, torch.Tensor]:
    name, kwargs = CONFIGS[key]
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES, **kwargs)
    s = kwargs["image_size"]
    x = torch.randn(3, kwargs["in_channels"], s, s)
    return model, x


def test_model_names() -> None:
    assert MODEL_NAMES == (
        "lenet5",
        "cnn",
        "resnet18",
        "transformer",
        "char-transformer",
        "char-lstm",
    )


@pytest.mark.parametrize("key", CONFIGS)
def test_output_shape(key: str) -> None:
    model, x = make(key)
    y = model(x)
    assert y.shape == (3, NUM_CLASSES)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("key", CONFIGS)
def test_forward_at_budgets_after_decompose(key: str) -> None:
    model, x = make(key)
    decompose(model)
    model.eval()
    outputs = {}
    with torch.no_grad():
        for beta in (0.25, 0.5, 0.75, 1.0):
            with use_budget(model, beta):
                outputs[beta] = model(x)
            assert outputs[beta].shape == (3, NUM_CLASSES)
            assert torch.isfinite(outputs[beta]).all()
    # A smaller budget really runs a smaller sub-model.
    assert not torch.allclose(outputs[0.25], outputs[1.0], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("key", CONFIGS)
def test_default_skip_keeps_first_conv_and_classifier_dense(key: str) -> None:
    model, _ = make(key)
    first, classifier = ENDS[CONFIGS[key][0]]
    assert default_skip(model) == {first, classifier}
    decompose(model)
    assert type(model.get_submodule(first)) is nn.Conv2d
    assert type(model.get_submodule(classifier)) is nn.Linear
    dense_left = {n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    assert dense_left == {first, classifier}
    assert len(low_rank_layers(model)) >= 2


@pytest.mark.parametrize("key", CONFIGS)
def test_full_rank_decompose_preserves_outputs(key: str) -> None:
    model, x = make(key)
    model.eval()
    factored = decompose(copy.deepcopy(model))
    assert any(isinstance(m, LowRankLayer) for m in factored.modules())
    with torch.no_grad():
        expected, got = model(x), factored(x)
    rel = (got - expected).norm() / expected.norm()
    assert rel < 1e-4


def test_lenet_and_cnn_match_reference_parameter_counts() -> None:
    # LeNet-5 for MNIST and the FedAvg CNN have well-known sizes (1,663,370 in McMahan et al.).
    lenet = build_model("lenet5")
    cnn = build_model("cnn")
    assert sum(p.numel() for p in lenet.parameters()) == 61_706
    assert sum(p.numel() for p in cnn.parameters()) == 1_663_370
    assert build_model("lenet5", image_size=32).fc1.in_features == 16 * 6 * 6


def test_resnet_norm_choice_and_width() -> None:
    group = build_model("resnet18", in_channels=3, image_size=16, width=0.25)
    batch = build_model("resnet18", in_channels=3, image_size=16, norm="batch")
    norms = [m for m in group.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 2 for m in norms)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in group.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in batch.modules())
    assert group.fc.in_features == 128
    assert batch.fc.in_features == 512


def test_transformer_uses_separate_factorable_projections() -> None:
    model = build_model("transformer", in_channels=3, image_size=16, depth=3, heads=2)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    assert len(model.blocks) == 3
    attn = model.blocks[0].attn
    assert all(isinstance(getattr(attn, p), nn.Linear) for p in ("q", "k", "v", "out"))
    assert model.pos_embed.shape == (1, 16 + 1, 64)


def test_transformer_samples_are_independent() -> None:
    # Attention must mix tokens within a sample, never across the batch.
    model, x = make("transformer")
    model.eval()
    with torch.no_grad():
        full = model(x)
        single = model(x[1:2])
    torch.testing.assert_close(full[1:2], single, rtol=1e-5, atol=1e-6)


def test_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="lenet5"):
        build_model("vgg11")


@pytest.mark.parametrize(
    ("name", "options", "pattern"),
    [
        ("lenet5", {"width": 2.0}, "allowed: none"),
        ("resnet18", {"depth": 3}, "norm, width"),
        ("resnet18", {"norm": "layer"}, "group"),
        ("resnet18", {"width": 0.1}, "multiples of 2"),
        ("transformer", {"dim": 30, "heads": 4}, "divisible"),
        ("transformer", {"patch_size": 5}, "multiple of patch_size"),
    ],
)
def test_bad_option_raises(name: str, options: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_model(name, in_channels=3, image_size=16, **options)


def test_too_small_image_raises() -> None:
    with pytest.raises(ValueError, match="image_size"):
        build_model("lenet5", image_size=8)
