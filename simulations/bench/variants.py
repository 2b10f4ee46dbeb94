"""What the benchmark measures: its models, their inputs, the factorization kinds, and the model
each kind of client holds at a tier (its rank prefix)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import budget_rank, low_rank_layers
from maestro_common.ml.data.arrays import DATASET_INFO
from maestro_common.ml.models import build_model

TIERS = (0.2, 0.4, 0.6, 0.8, 1.0)
SHAPE = (1, 28, 28)  # Fashion-MNIST: the image models' input
# name -> model builder options ("arch": the builder's model name, default the key; "dataset":
# the DATASET_INFO entry whose input and classes it takes, default Fashion-MNIST). ResNet-18 at
# a quarter of its channels (16..128) keeps every section within minutes on a 2-core CPU; at its
# full width (about 1.4 s a train step on one thread) it is measured in the models section only.
# char-transformer is sized as simulations/conf/shakespeare.toml's model-options (a test checks).
MODELS: dict[str, dict[str, Any]] = {
    "lenet5": {},
    "cnn": {},
    "resnet18": {"width": 0.25},
    "transformer": {},
    "resnet18-full": {"arch": "resnet18", "width": 1.0},
    "char-transformer": {
        "dataset": "shakespeare",
        "dim": 64,
        "depth": 3,
        "heads": 4,
        "mlp_ratio": 4,
    },
}
MODELS_SECTION_ONLY = ("resnet18-full",)
# The factorizations whole models are timed in (the branched Tucker's 4-branch form is timed per
# layer, in the branched section), each as `decompose` options.
KIND_OPTIONS: dict[str, dict[str, str]] = {
    "svd": {"conv_factorization": "svd"},
    "tucker": {"conv_factorization": "tucker"},
    "tucker-b2": {"conv_factorization": "tucker-b2"},
}
MODEL_KINDS = tuple(KIND_OPTIONS)
# Kinds that differ from svd only in how convolutions are factored.
CONV_ONLY_KINDS = ("tucker", "tucker-b2")
WIDTH_MODELS = ("lenet5", "cnn", "char-transformer")


@dataclass(frozen=True)
class Geometry:
    """What a bench model reads and predicts: images (B, *shape) of ``classes`` labels, or int64
    token ids (B, T) over a vocabulary of ``classes`` with next-token targets (B, T)."""

    shape: tuple[int, ...]
    classes: int
    tokens: bool = False

    def inputs(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random input batch: normal images, or uniform token ids."""
        if self.tokens:
            return torch.randint(0, self.classes, (batch, *self.shape), generator=generator)
        return torch.randn(batch, *self.shape, generator=generator)

    def batch(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch: images and uniform labels, or a random token sequence one
        longer than the window, split into the window and its next tokens."""
        if self.tokens:
            (t,) = self.shape
            seq = torch.randint(0, self.classes, (batch, t + 1), generator=generator)
            return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
        x = self.inputs(batch, generator)
        return x, torch.randint(0, self.classes, (batch,), generator=generator)


IMAGE = Geometry(SHAPE, 10)


def geometry(name: str) -> Geometry:
    """The input and classes of bench model ``name`` (its dataset's, see MODELS)."""
    info = DATASET_INFO[MODELS[name].get("dataset", "fashion-mnist")]
    return Geometry(info.input_shape, info.num_classes, info.is_text)


def dense_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    options = dict(MODELS[name])
    arch, geo = options.pop("arch", name), geometry(name)
    options.pop("dataset", None)
    if geo.tokens:
        return build_model(arch, geo.classes, context=geo.shape[0], **options)
    return build_model(arch, geo.classes, geo.shape[0], geo.shape[1], **options)


# (id of the dense model, kind) -> (the dense model, kept alive so its id is not reused; its
# factored form): the SVDs/HOSVDs of a model are computed once, not once per tier.
_FACTORED: dict[tuple[int, str], tuple[nn.Module, nn.Module]] = {}


def factored_tier(dense: nn.Module, kind: str, beta: float) -> nn.Module:
    """The model a factored client of budget β holds: every factor cut to the tier's ranks."""
    key = (id(dense), kind)
    if key not in _FACTORED:
        _FACTORED[key] = (dense, decompose(copy.deepcopy(dense), **KIND_OPTIONS[kind]))
    model = copy.deepcopy(_FACTORED[key][1])
    for layer in low_rank_layers(model).values():
        k = budget_rank(layer.rank, beta)
        if k < layer.rank:
            layer.truncate(k)
    return model


def model_kinds(name: str) -> list[str]:
    """The factored kinds of MODEL_KINDS timed for model ``name``: a token model has no
    convolution, so of the kinds that differ only in how convs are factored it keeps svd (tucker,
    tucker-b2 would time the same model again)."""
    kinds = list(MODEL_KINDS)
    if geometry(name).tokens:
        kinds = [k for k in kinds if k not in CONV_ONLY_KINDS]
    return kinds


def width_variant(kind: str) -> str:
    """The bench variant of the width tier MAC-matched to a factored ``kind``'s tier: ``width``
    for svd (the harness's matched-MACs rule, which the FjORD/HeteroFL baselines train), else
    ``width@<kind>``."""
    return "width" if kind == "svd" else f"width@{kind}"
