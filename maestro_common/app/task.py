"""The run's model, device, names and training settings, the same on the server and every client."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from maestro_common.app.config import ConfigError, RunConfig, key_fields, parse_options
from maestro_common.app.methods import METHOD_NAMES, Method, get_method
from maestro_common.lowrank.decompose import CONV_FACTORIZATIONS
from maestro_common.lowrank.freezing import FREEZE_MODES
from maestro_common.lowrank.samplers import SAMPLER_NAMES, SUBMODEL_RULES
from maestro_common.lowrank.training import TrainSettings
from maestro_common.ml.data import DATASET_INFO
from maestro_common.ml.data.partition import SCHEMES
from maestro_common.ml.models import MODEL_NAMES, SEQUENCE_MODELS, build_model
from maestro_common.ml.schedules import SCHEDULES


def registries() -> dict[str, tuple[str, ...]]:
    """The names each registry-named run-config key allows, by key."""
    return {
        "method": METHOD_NAMES,
        "model": MODEL_NAMES,
        "dataset": tuple(DATASET_INFO),
        "sampler": SAMPLER_NAMES,
        "partitioning": SCHEMES,
        "conv-factorization": CONV_FACTORIZATIONS,
        "freeze": FREEZE_MODES,
        "sub-models": ("auto", *SUBMODEL_RULES),
        "lr-schedule": SCHEDULES,
        "compute-match": ("", *METHOD_NAMES),
    }


def check_names(cfg: RunConfig) -> None:
    """Check the run's names against the registries of what they name, and that every key left
    off its default is one the run's method acts on (``needs`` in the key's metadata).

    Raises
    ------
    ConfigError
        Naming the key, the value and what is allowed.
    """
    method = get_method(cfg.method)
    for f in key_fields():
        flag = f.metadata["needs"]
        if flag is None or getattr(cfg, f.name) == f.default or getattr(method, flag):
            continue
        key = f.name.replace("_", "-")
        users = ", ".join(n for n in METHOD_NAMES if getattr(get_method(n), flag))
        if isinstance(f.default, bool):
            off = str(f.default).lower()
        else:
            off = f"at {f.default!r}" if isinstance(f.default, str) else f"at {f.default:g}"
        why = f.metadata["unused"]
        if flag == "factored":
            head, reason = f"factored methods only ({users})", why
        else:  # the flag names a part of a method that the others lack
            head, reason = f"{users} only ({why})", "would ignore it"
        raise ConfigError(
            f"{key} applies to {head}; method {cfg.method!r} {reason}: leave {key} {off}"
        )
    for key, allowed in registries().items():
        if key == "method":
            continue  # get_method above has refused an unknown one
        value = getattr(cfg, key.replace("-", "_"))
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {tuple(allowed)}, got {value!r}")
    if cfg.sub_model_rule == "split" and (cfg.full_pass_share != 1 or cfg.sub_batch_share != 1):
        how = "" if cfg.sub_models == "split" else " (what sub-models = 'auto' runs here)"
        raise ConfigError(
            f"sub-models = 'split'{how} shares each batch between the sandwich's passes "
            "itself: leave full-pass-share and sub-batch-share at 1 (got "
            f"{cfg.full_pass_share:g} and {cfg.sub_batch_share:g}), or set sub-models to "
            "another rule, such as 'sandwich'"
        )
    if method.samples_components(cfg) and cfg.conv_factorization != "svd":
        who = (
            f"method {cfg.method}" if not method.ordered else f"transmission = {cfg.transmission!r}"
        )
        fix = "" if not method.ordered else " (or set transmission to 'auto' or 'prefix')"
        raise ConfigError(
            f"{who} samples the components of U Vᵀ factors: "
            f"conv-factorization must be 'svd', got {cfg.conv_factorization!r}{fix}"
        )
    text = DATASET_INFO[cfg.dataset].is_text
    if text != (cfg.model in SEQUENCE_MODELS):
        allowed = (
            SEQUENCE_MODELS if text else tuple(m for m in MODEL_NAMES if m not in SEQUENCE_MODELS)
        )
        raise ConfigError(
            f"model {cfg.model!r} does not fit dataset {cfg.dataset!r} "
            f"({'character windows' if text else 'images'}): use one of {allowed}"
        )
    if "context" in parse_options(cfg.model_options, "model-options"):
        raise ConfigError(
            "model-options may not set context: the dataset's window length sets it "
            f"({DATASET_INFO[cfg.dataset].context or 'none for images'})"
        )


def load_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Parse Flower's run_config and check its names: what the ServerApp and ClientApp read."""
    cfg = RunConfig.from_run_config(run_config)
    check_names(cfg)
    return cfg


def run_method(cfg: RunConfig) -> Method:
    """The run's :class:`~maestro_common.app.methods.Method`."""
    return get_method(cfg.method)


def build_run_model(cfg: RunConfig) -> nn.Module:
    """The run's global model, seeded so every party builds the same one.

    The method prepares the dense model (:meth:`~maestro_common.app.methods.Method.prepare`). A
    fresh copy of a per-process template: a client builds one per message, and the SVD of
    decomposition would otherwise run every time.
    """
    return copy.deepcopy(_template(_model_key(cfg)))


# What the global model depends on: the run config with everything else at its default, so
# runs that differ only in training settings share one cached template.
_MODEL_FIELDS = (
    "method",
    "model",
    "model_options",
    "dataset",
    "rank_fraction",
    "seed",
    "conv_factorization",
)


def _model_key(cfg: RunConfig) -> RunConfig:
    return RunConfig(**{f: getattr(cfg, f) for f in _MODEL_FIELDS})


@lru_cache(maxsize=8)
def _template(cfg: RunConfig) -> nn.Module:
    check_names(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_dense_model(cfg)
        run_method(cfg).prepare(model, input_shape(cfg), cfg)
    return model


def build_dense_model(cfg: RunConfig) -> nn.Module:
    """The run's dense model, before its method prepares it (current torch seed).

    A sequence model reads the dataset's vocabulary and window length; an image model its
    classes and geometry; ``model-options`` go to the model, which checks their names.
    """
    info = DATASET_INFO[cfg.dataset]
    options = parse_options(cfg.model_options, "model-options")
    try:
        if info.is_text:
            return build_model(cfg.model, info.num_classes, context=info.context, **options)
        return build_model(
            cfg.model, info.num_classes, info.in_channels, info.image_size, **options
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model-options {cfg.model_options!r} for {cfg.model!r}: {err}") from err


def input_shape(cfg: RunConfig) -> tuple[int, ...]:
    """One sample's shape without the batch axis: (C, H, W) for images, (T,) for text."""
    return DATASET_INFO[cfg.dataset].input_shape


def train_settings(cfg: RunConfig, lr: float | None = None) -> TrainSettings:
    """Local training hyper-parameters of a run; the lasso only where the method uses it.

    ``lr``: the round's learning rate when the server schedules it (else the run's ``lr``); the
    schedule is the server's, so local steps use it as a constant.
    """
    return TrainSettings(
        epochs=cfg.local_epochs,
        steps=cfg.local_steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr if lr is None else lr,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        lasso=cfg.lasso if run_method(cfg).uses_lasso else 0.0,
    )


def resolve_device(cfg: RunConfig) -> torch.device:
    """``auto``: CUDA when present, else CPU. ``cuda`` without a GPU is an error."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available; use device=auto or cpu")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)
