"""Dense reference models; :func:`~maestro_common.lowrank.decompose.decompose` factors them.

Every model is built from plain ``nn.Linear`` / ``nn.Conv2d`` layers, with the first conv
registered first and the classifier registered last, so that
:func:`maestro_common.lowrank.decompose.default_skip` keeps exactly those two dense. The
character models (``char-transformer``, ``char-lstm``) instead declare ``keep_dense`` (only their
head), ``input_dtype`` (token ids), ``input_shape`` ((context,)) and a width plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from maestro_common.ml.models.char_lstm import CharLSTM
from maestro_common.ml.models.char_transformer import CharTransformer
from maestro_common.ml.models.cnn import FedAvgCNN
from maestro_common.ml.models.lenet import LeNet5
from maestro_common.ml.models.resnet import ResNet18
from maestro_common.ml.models.transformer import VisionTransformer

__all__ = [
    "MODEL_NAMES",
    "SEQUENCE_MODELS",
    "CharLSTM",
    "CharTransformer",
    "FedAvgCNN",
    "LeNet5",
    "ResNet18",
    "VisionTransformer",
    "build_model",
]


@dataclass(frozen=True)
class _Spec:
    factory: Callable[..., nn.Module]
    options: tuple[str, ...]
    # A sequence model takes token ids: num_classes is its vocabulary, the image geometry
    # (in_channels, image_size) does not apply and is ignored.
    sequence: bool = False


_REGISTRY: dict[str, _Spec] = {
    "lenet5": _Spec(LeNet5, ()),
    "cnn": _Spec(FedAvgCNN, ()),
    "resnet18": _Spec(ResNet18, ("norm", "width")),
    "transformer": _Spec(VisionTransformer, ("dim", "depth", "heads", "mlp_ratio", "patch_size")),
    "char-transformer": _Spec(
        CharTransformer, ("dim", "depth", "heads", "mlp_ratio", "context"), sequence=True
    ),
    "char-lstm": _Spec(CharLSTM, ("embed", "hidden", "layers", "context"), sequence=True),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
# Models mapping token ids (B, T) to logits (B, num_classes, T) at every position.
SEQUENCE_MODELS: tuple[str, ...] = tuple(n for n, s in _REGISTRY.items() if s.sequence)


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    **options: Any,
) -> nn.Module:
    """Build a dense model by name.

    Parameters
    ----------
    name:
        One of :data:`MODEL_NAMES`.
    num_classes, in_channels, image_size:
        Classifier width and input geometry (square images of side ``image_size``). For the
        sequence models (:data:`SEQUENCE_MODELS`) ``num_classes`` is the vocabulary size (81 for
        LEAF Shakespeare) and the image geometry is ignored; their sequence length is the
        ``context`` option (default 80).
    **options:
        Model-specific options: ``resnet18`` takes ``norm`` ("group" or "batch") and ``width``;
        ``transformer`` takes ``dim``, ``depth``, ``heads``, ``mlp_ratio`` and ``patch_size``;
        ``char-transformer`` takes ``dim``, ``depth``, ``heads``, ``mlp_ratio`` and ``context``;
        ``char-lstm`` takes ``embed``, ``hidden``, ``layers`` and ``context``.

    Returns
    -------
    A freshly initialised dense ``nn.Module`` mapping (B, in_channels, S, S) to (B, num_classes),
    or, for a sequence model, int64 token ids (B, T) to logits (B, num_classes, T).

    Raises
    ------
    ValueError
        For an unknown name, an option the model does not take, or an invalid value.
    """
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) if spec.options else "none"
        raise ValueError(f"model {name!r} got unknown options {unknown}; allowed: {allowed}")
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if spec.sequence:
        return spec.factory(vocab=num_classes, **options)
    return spec.factory(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **options
    )
