"""Cross-check of this project's ``fjord`` / ``heterofl`` against Flower's own baseline code.

Flower's repository ships FjORD and HeteroFL baselines (``baselines/fjord``,
``baselines/heterofl``), written by other people. This script imports their model and
aggregation code at run time from a local checkout (``--flower PATH``; nothing of theirs is
copied here) and compares it with this project's, on the same weights:

- **FjORD sub-models.** This project's model (``--models``, default LeNet-5 and the FedAvg CNN)
  is rebuilt with Flower's ordered-dropout layers (their ``ODConv2d`` / ``ODLinear`` in place of
  every ``Conv2d`` / ``Linear``, the classifier not dropped, p fed by their ``ODSampler``) and the
  same weights. At every width p: the channels each layer keeps (out, in), the parameter count,
  and the max abs difference of the logits against this project's width-p sub-model.
- **Their rounding rule** over a grid of p (0.01 … 1.00), on the compared models' widths and on
  every width 1 … 512: the output channels their layer keeps against ours.
- **FjORD aggregation.** Their ``strategy.aggregate`` (nested weighted mean) against
  :func:`server.aggregation.aggregate_nested` on the same random client updates.
- **HeteroFL sub-models.** Their ``conv`` model (no normalisation, their scaler) at model rate r,
  built and loaded by their own code (``param_model_rate_mapping``,
  ``param_idx_to_local_params``), against the same global model made width-sliceable here and
  run at width r: kept shapes, parameter counts, logits in eval mode (their scaler idle) and in
  train mode (their scaler dividing by r).
- **HeteroFL aggregation.** Their ``HeteroFL._aggregate_conv`` against ``aggregate_nested`` on
  the same random client updates, every client holding every label (no label masking), with
  equal weights and with num-examples weights.

Their packages need libraries this project does not install (torchvision, hydra, coloredlogs);
only pure-torch / numpy code is run, and the modules their imports name but the compared code
never calls are replaced by empty placeholders, listed in the report.

Run (opt-in; needs a checkout of Flower's repository)::

    python -m simulations.experiments.flower_crosscheck --flower PATH [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import io
import json
import subprocess
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maestro_common.app.config import RunConfig
from maestro_common.app.cost import matched_width_fn
from maestro_common.app.methods import get_method
from maestro_common.app.task import build_run_model, input_shape
from maestro_common.ml.models import build_model
from maestro_common.width.sliceable import WidthLinear, use_width, width_shapes
from server.aggregation import aggregate_nested

TIERS = "0.2,0.4,0.6,0.8,1.0"  # the project's demo tiers (β)
HETEROFL_RATES = (1.0, 0.5, 0.25, 0.125, 0.0625)  # HeteroFL's levels a..e
# HeteroFL's MNIST "conv" model as its baseline configures it, without normalisation (this
# project's width models refuse BatchNorm).
HETEROFL_CONV = {
    "model": "conv",
    "data_shape": [1, 28, 28],
    "hidden_layers": [64, 128, 256, 512],
    "classes_size": 10,
    "norm": "none",
    "scale": True,
    "mask": False,
    "global_model_rate": 1.0,
}
# Flower's FjORD ResNet-18 widths and p values (its common.yaml), for the rounding sweep.
FJORD_RESNET_WIDTHS = (64, 128, 256, 512)
FJORD_P_S = (0.2, 0.4, 0.6, 0.8, 1.0)


# --------------------------------------------------------------------------- loading their code


@dataclass
class FlowerCode:
    """Flower's baseline modules, imported from a checkout, and what had to be stubbed."""

    root: Path
    commit: str
    od_layers: types.ModuleType
    od_samplers: types.ModuleType
    fjord_strategy: types.ModuleType
    heterofl_models: types.ModuleType
    heterofl_strategy: types.ModuleType
    stubs: list[str] = field(default_factory=list)


def _placeholder(name: str, attrs: Mapping[str, Any], stubs: list[str]) -> None:
    """Register an empty module ``name`` (and its parents) unless it can be imported."""
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules or i == len(parts):
            sys.modules[sub] = types.ModuleType(sub)
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)
    stubs.append(name)


class _Sink:
    """Swallows every logging call."""

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class _NoLogger:
    """Stands in for FjORD's ``Logger`` (its module needs coloredlogs)."""

    @classmethod
    def get(cls) -> _Sink:
        return _Sink()


def flower_commit(root: Path) -> str:
    """The commit of a Flower checkout (``unknown`` for a plain copy of files)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_flower(root: Path, commit: str | None = None) -> FlowerCode:
    """Import Flower's FjORD and HeteroFL baseline modules from a checkout at ``root``.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not hold ``baselines/fjord/fjord`` and ``baselines/heterofl/heterofl``.
    """
    root = Path(root)
    fjord_dir, hetero_dir = root / "baselines" / "fjord", root / "baselines" / "heterofl"
    for pkg in (fjord_dir / "fjord" / "od" / "layers", hetero_dir / "heterofl"):
        if not pkg.is_dir():
            raise FileNotFoundError(
                f"{pkg} not found: --flower must be a checkout of Flower's repository "
                "(with baselines/fjord and baselines/heterofl)"
            )
    for name in ("fjord", "heterofl"):
        loaded = sys.modules.get(name)
        if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(root)):
            raise RuntimeError(f"a module {name!r} from elsewhere is already imported")
    sys.path[:0] = [str(fjord_dir), str(hetero_dir)]
    stubs: list[str] = []
    # FjORD: strategy.py imports its client (torchvision datasets) for a type alias only, and a
    # logger needing coloredlogs; aggregate() uses neither.
    _placeholder("fjord.client", {"FJORD_CONFIG_TYPE": dict}, stubs)
    _placeholder("fjord.utils.logger", {"Logger": _NoLogger}, stubs)
    # HeteroFL: utils.py imports hydra for output paths, which the compared code never calls.
    _placeholder("hydra.core.hydra_config", {"HydraConfig": None}, stubs)
    return FlowerCode(
        root=root,
        commit=commit or flower_commit(root),
        od_layers=importlib.import_module("fjord.od.layers"),
        od_samplers=importlib.import_module("fjord.od.samplers"),
        fjord_strategy=importlib.import_module("fjord.strategy"),
        heterofl_models=importlib.import_module("heterofl.models"),
        heterofl_strategy=importlib.import_module("heterofl.strategy"),
        stubs=stubs,
    )


# ------------------------------------------------------------------------------ our-side helpers


def max_abs_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    """Per key, max |a − b| (``inf`` where the shapes differ). The keys must be equal."""
    if set(a) != set(b):
        raise ValueError(f"different keys: {sorted(set(a) ^ set(b))}")
    out = {}
    for key in a:
        x = np.asarray(a[key], dtype=np.float64)
        y = np.asarray(b[key], dtype=np.float64)
        out[key] = float(np.abs(x - y).max()) if x.shape == y.shape else float("inf")
    return out


def param_count(shapes: Mapping[str, Sequence[int]]) -> int:
    """Entries of all arrays of the given shapes."""
    return int(sum(np.prod(s, dtype=np.int64) for s in shapes.values()))


def layer_dims(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, int]]:
    """(out, in) of every ≥ 2-d ``<layer>.weight`` entry of a shape map."""
    return {
        key.removesuffix(".weight"): (int(s[0]), int(s[1]))
        for key, s in shapes.items()
        if key.endswith(".weight") and len(s) >= 2
    }


def our_width_model(dense: nn.Module, shape: Sequence[int], method: str = "fjord") -> nn.Module:
    """A copy of ``dense`` prepared as this project's width method prepares its global model."""
    return get_method(method).prepare(copy.deepcopy(dense), tuple(shape), None)  # type: ignore[arg-type]


def our_logits(model: nn.Module, x: torch.Tensor, width: float) -> torch.Tensor:
    """Logits of this project's width-``width`` sub-model (eval mode)."""
    model.eval()
    with torch.no_grad(), use_width(model, width):
        return model(x)


def tier_widths(model: str, tiers: str = TIERS) -> list[float]:
    """The widths this project's ``fjord`` trains for the tier labels (MAC-matched to Maestro)."""
    cfg = RunConfig.from_run_config({"method": "fjord", "model": model, "tier-fractions": tiers})
    net, shape = build_run_model(cfg), input_shape(cfg)
    matched = matched_width_fn(cfg, net, shape)
    method = get_method("fjord")
    return [method.budget(b, cfg.tiers, matched, net) for b in cfg.tiers]


def random_updates(
    glob: Mapping[str, np.ndarray],
    shapes: Sequence[Mapping[str, Sequence[int]]],
    seed: int,
    scale: float = 0.1,
) -> list[dict[str, np.ndarray]]:
    """Per client, its leading blocks of ``glob`` plus Gaussian noise (float32), as replies."""
    rng = np.random.default_rng(seed)
    out = []
    for client in shapes:
        reply = {}
        for key, shape in client.items():
            block = np.asarray(glob[key])[tuple(slice(0, n) for n in shape)]
            reply[key] = (block + scale * rng.standard_normal(block.shape)).astype(block.dtype)
        out.append(reply)
    return out


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------- FjORD: their OD twin


class _Cell:
    """Holds the sampler of the current forward pass (a plain object, not a module)."""

    sampler: Callable[[], float | None] | None = None


class _Fed(nn.Module):
    """Calls a Flower OD layer as their ResNet does: ``layer(x, p=sampler())`` if it drops."""

    def __init__(self, layer: nn.Module, cell: _Cell) -> None:
        super().__init__()
        self.layer = layer
        self._cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.layer, "is_od", False) and self._cell.sampler is not None:
            return self.layer(x, p=self._cell.sampler())
        return self.layer(x)


class ODTwin(nn.Module):
    """``dense``'s forward with every Conv2d / Linear replaced by an ordered-dropout layer.

    ``conv_cls`` / ``linear_cls`` are the OD layer classes (Flower's ``ODConv2d`` /
    ``ODLinear``), built with ``is_od`` and the dense layer's hyper-parameters and weights. The
    last Linear (the classifier) gets ``is_od=False``, as in Flower's ResNet. ``forward(x,
    sampler)`` feeds every dropping layer ``p = sampler()``; without a sampler, full width.
    """

    def __init__(self, dense: nn.Module, conv_cls: type, linear_cls: type) -> None:
        super().__init__()
        self._cell = _Cell()
        self.net = copy.deepcopy(dense)
        layers = [
            (n, m) for n, m in self.net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
        ]
        linears = [n for n, m in layers if isinstance(m, nn.Linear)]
        classifier = linears[-1] if linears else layers[-1][0]
        self.od: dict[str, nn.Module] = {}
        for name, m in layers:
            is_od = name != classifier
            if isinstance(m, nn.Conv2d):
                od = conv_cls(
                    m.in_channels,
                    m.out_channels,
                    kernel_size=m.kernel_size,
                    stride=m.stride,
                    padding=m.padding,
                    dilation=m.dilation,
                    groups=m.groups,
                    bias=m.bias is not None,
                    is_od=is_od,
                )
            else:
                od = linear_cls(m.in_features, m.out_features, bias=m.bias is not None, is_od=is_od)
            with torch.no_grad():
                od.weight.copy_(m.weight)
                if m.bias is not None:
                    od.bias.copy_(m.bias)
            parent_name, _, child = name.rpartition(".")
            parent = self.net.get_submodule(parent_name) if parent_name else self.net
            setattr(parent, child, _Fed(od, self._cell))
            self.od[name] = od

    def forward(self, x: torch.Tensor, sampler: Callable[[], Any] | None = None) -> torch.Tensor:
        self._cell.sampler = sampler
        try:
            return self.net(x)
        finally:
            self._cell.sampler = None

    def dims(self) -> dict[str, tuple[int, int]]:
        """(out, in) each OD layer used in the last forward pass (their own record)."""
        return {n: (int(m.last_output_dim), int(m.last_input_dim)) for n, m in self.od.items()}

    def used_params(self) -> int:
        """Parameters the OD layers used in the last forward pass."""
        total = 0
        for m in self.od.values():
            out, inp = m.last_output_dim, m.last_input_dim
            total += out * inp * int(np.prod(m.weight.shape[2:], dtype=np.int64))
            total += out if m.bias is not None else 0
        return int(total)

    def agg_config(self, x: torch.Tensor, p_s: Sequence[float], sampler_cls: type) -> dict:
        """FjORD's per-p aggregation config, built the way its client builds it: a forward pass
        at each p, then every state-dict entry's layer class and (in, out) dims."""
        owners = []
        for key in self.state_dict():
            owners.append(self.get_submodule(key.rpartition(".")[0]))
        config: dict[Any, Any] = {p: [{} for _ in owners] for p in p_s}
        with torch.no_grad():
            for p in p_s:
                self(x, sampler=sampler_cls(p_s=[p], max_p=p, model=self))
                for i, layer in enumerate(owners):
                    config[p][i] = {
                        "in_dim": layer.last_input_dim,
                        "out_dim": layer.last_output_dim,
                    }
        config["layer"] = [type(m).__name__ for m in owners]
        config["layer_p"] = [getattr(m, "p", None) for m in owners]
        return config


# ------------------------------------------------------------------------------- the comparisons


def compare_fjord_submodels(
    code: FlowerCode, model: str, widths: Sequence[float], x: torch.Tensor, seed: int
) -> dict[str, Any]:
    """Their OD twin vs our ``fjord`` width model on the same weights, at every width."""
    shape = tuple(x.shape[1:])
    torch.manual_seed(seed)
    dense = build_model(model, num_classes=10, in_channels=shape[0], image_size=shape[-1])
    ours = our_width_model(dense, shape)
    twin = ODTwin(dense, code.od_layers.ODConv2d, code.od_layers.ODLinear).eval()
    rows = []
    for p in widths:
        with torch.no_grad():
            theirs = twin(x, sampler=code.od_samplers.ODSampler(p_s=[p], max_p=p, model=twin))
        mine = our_logits(ours, x, p)
        our_shapes = width_shapes(ours, p, shape)
        rows.append(
            {
                "p": p,
                "dims_theirs": twin.dims(),
                "dims_ours": layer_dims(our_shapes),
                "dims_equal": twin.dims() == layer_dims(our_shapes),
                "params_theirs": twin.used_params(),
                "params_ours": param_count(our_shapes),
                "logits_max_abs_diff": float((theirs - mine).abs().max()),
            }
        )
    return {"model": model, "rows": rows}


def rounding_sweep(
    code: FlowerCode, sizes: Iterable[int], ps: Iterable[float]
) -> list[dict[str, float | int]]:
    """Where their OD layer and ours keep a different number of outputs: (size, p, theirs, ours)."""
    diffs = []
    for size in sorted(set(sizes)):
        od = code.od_layers.ODLinear(1, size, is_od=True)
        mine = WidthLinear.from_module(nn.Linear(1, size))
        for p in ps:
            with torch.no_grad():
                od(torch.zeros(1, 1), p=p)
            theirs, ours = int(od.last_output_dim), mine.out_width(p)
            if theirs != ours:
                diffs.append({"size": size, "p": p, "theirs": theirs, "ours": ours})
    return diffs


def compare_fjord_aggregation(
    code: FlowerCode, model: str, widths: Sequence[float], x: torch.Tensor, seed: int
) -> dict[str, Any]:
    """Their FjORD ``aggregate`` vs our ``aggregate_nested`` (mean) on the same updates."""
    shape = tuple(x.shape[1:])
    torch.manual_seed(seed)
    dense = build_model(model, num_classes=10, in_channels=shape[0], image_size=shape[-1])
    ours = our_width_model(dense, shape)
    twin = ODTwin(dense, code.od_layers.ODConv2d, code.od_layers.ODLinear).eval()
    p_s = sorted(set(widths))
    config = twin.agg_config(x, p_s, code.od_samplers.ODSampler)
    glob = state_arrays(ours)
    rng = np.random.default_rng(seed)
    p_max = [p_s[i % len(p_s)] for i in range(len(p_s) + 2)]  # every tier, two twice
    examples = [int(n) for n in rng.integers(20, 200, size=len(p_max))]
    blocks = random_updates(glob, [width_shapes(ours, p, shape) for p in p_max], seed + 1)
    # Their clients return full-size arrays; coordinates outside the p_max block are never read.
    full = []
    for reply in blocks:
        arrays = {k: v.copy() for k, v in glob.items()}
        for key, block in reply.items():
            arrays[key][tuple(slice(0, n) for n in block.shape)] = block
        full.append(arrays)
    keys = list(glob)
    results = [
        ([a[k] for k in keys], n, p, p_s, config)
        for a, n, p in zip(full, examples, p_max, strict=True)
    ]
    theirs = code.fjord_strategy.aggregate(results, [glob[k] for k in keys])
    mine = aggregate_nested(glob, list(zip(blocks, examples, strict=True)))
    diff = max_abs_diff(dict(zip(keys, theirs, strict=True)), mine)
    return {
        "model": model,
        "p_max": p_max,
        "examples": examples,
        "max_abs_diff": max(diff.values()),
    }


def _heterofl_model(code: FlowerCode, rate: float) -> nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):  # their helpers print
        return code.heterofl_models.create_model(dict(HETEROFL_CONV), model_rate=rate)


def _heterofl_index(code: FlowerCode, glob: nn.Module, rates: Sequence[float]) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        return code.heterofl_models.param_model_rate_mapping(
            "conv", glob.state_dict(), list(rates), HETEROFL_CONV["global_model_rate"]
        )


class _Dict2Tensor(nn.Module):
    """Calls HeteroFL's dict-in, dict-out model on a tensor, returning its scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = torch.zeros(x.shape[0], dtype=torch.long)
        return self.model({"img": x, "label": label})["score"]


def compare_heterofl_submodels(
    code: FlowerCode, rates: Sequence[float], x: torch.Tensor, seed: int
) -> dict[str, Any]:
    """Their HeteroFL ``conv`` sub-model at rate r vs ours at width r, on the same weights."""
    shape = tuple(x.shape[1:])
    torch.manual_seed(seed)
    glob = _heterofl_model(code, 1.0)
    index = _heterofl_index(code, glob, rates)
    ours = _Dict2Tensor(our_width_model(glob, shape, "heterofl"))
    rows = []
    for r in rates:
        local = _heterofl_model(code, r)
        with warnings_quiet():
            sub = code.heterofl_models.param_idx_to_local_params(glob.state_dict(), index[r])
        local.load_state_dict(sub)
        local = _Dict2Tensor(local)
        their_shapes = {k: tuple(v.shape) for k, v in local.state_dict().items()}
        our_shapes = width_shapes(ours, r, shape)
        row: dict[str, Any] = {
            "rate": r,
            "shapes_equal": their_shapes == our_shapes,
            "params_theirs": param_count(their_shapes),
            "params_ours": param_count(our_shapes),
        }
        for mode in ("eval", "train"):
            local.train(mode == "train")
            ours.train(mode == "train")
            with torch.no_grad(), use_width(ours, r):
                row[f"logits_max_abs_diff_{mode}"] = float((local(x) - ours(x)).abs().max())
        rows.append(row)
    return {"rows": rows}


def compare_heterofl_aggregation(
    code: FlowerCode, rates: Sequence[float], seed: int
) -> dict[str, Any]:
    """Their ``HeteroFL._aggregate_conv`` vs our ``aggregate_nested`` on the same updates."""
    torch.manual_seed(seed)
    glob = _heterofl_model(code, 1.0)
    client_rates = [rates[i % len(rates)] for i in range(len(rates) + 2)]
    index = _heterofl_index(code, glob, client_rates)
    glob_arrays = state_arrays(glob)
    shapes = [
        {k: tuple(v.shape) for k, v in _heterofl_model(code, r).state_dict().items()}
        for r in client_rates
    ]
    updates = random_updates(glob_arrays, shapes, seed + 1)

    # Their method reads self.net and self.active_cl_labels only; every client holds all labels.
    strategy = code.heterofl_strategy.HeteroFL
    fake = types.SimpleNamespace(
        net=copy.deepcopy(glob),
        active_cl_labels=[torch.arange(HETEROFL_CONV["classes_size"])] * len(client_rates),
    )
    fake._agg_layer_conv = functools.partial(strategy._agg_layer_conv, fake)
    local = [OrderedDict((k, u[k]) for k in glob_arrays) for u in updates]
    results = [(types.SimpleNamespace(cid=str(i)), None) for i in range(len(client_rates))]
    with warnings_quiet():
        strategy._aggregate_conv(
            fake, [copy.deepcopy(index[r]) for r in client_rates], local, results
        )
    theirs = state_arrays(fake.net)

    rng = np.random.default_rng(seed)
    examples = [int(n) for n in rng.integers(20, 200, size=len(client_rates))]
    equal = aggregate_nested(glob_arrays, [(u, 1.0) for u in updates])
    weighted = aggregate_nested(glob_arrays, list(zip(updates, examples, strict=True)))
    return {
        "client_rates": client_rates,
        "max_abs_diff_equal_weights": max(max_abs_diff(theirs, equal).values()),
        "max_abs_diff_num_examples_weights": max(max_abs_diff(theirs, weighted).values()),
    }


@contextlib.contextmanager
def warnings_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.meshgrid's indexing warning, in their code
        yield


# ----------------------------------------------------------------------------------------- CLI


def batch(kind: str, size: int, seed: int) -> torch.Tensor:
    """The first ``size`` Fashion-MNIST test images, or seeded Gaussian ones."""
    if kind == "random":
        return torch.randn(size, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    from maestro_common.ml.data import load_fashion_mnist

    return load_fashion_mnist("test").images[:size].float()


def run(args: argparse.Namespace) -> dict[str, Any]:
    code = load_flower(Path(args.flower), args.flower_commit)
    x = batch(args.input, args.batch, args.seed)
    report: dict[str, Any] = {
        "flower_commit": code.commit,
        "placeholders": code.stubs,
        "input": f"{args.input} x{args.batch}",
        "fjord": [],
        "fjord_aggregation": [],
    }
    sizes: set[int] = set(FJORD_RESNET_WIDTHS)
    for model in args.models.split(","):
        widths = tier_widths(model, args.tiers)
        report["fjord"].append(compare_fjord_submodels(code, model, widths, x, args.seed))
        report["fjord_aggregation"].append(
            compare_fjord_aggregation(code, model, widths, x, args.seed)
        )
        dense = build_model(model)
        sizes |= {
            m.weight.shape[0] for m in dense.modules() if isinstance(m, nn.Conv2d | nn.Linear)
        }
    grid = [round(k / 100, 2) for k in range(1, 101)]
    report["rounding"] = {
        "sizes": sorted(sizes),
        "grid": "0.01..1.00",
        "differs": rounding_sweep(code, sizes, grid),
        "differs_any_size_1_512": rounding_sweep(code, range(1, 513), grid),
    }
    report["rounding_fjord_p_s"] = rounding_sweep(code, FJORD_RESNET_WIDTHS, FJORD_P_S)
    rates = sorted(set(HETEROFL_RATES) | set(tier_widths("cnn", args.tiers)), reverse=True)
    report["heterofl"] = compare_heterofl_submodels(code, rates, x, args.seed)
    report["heterofl_aggregation"] = compare_heterofl_aggregation(
        code, list(HETEROFL_RATES), args.seed
    )
    return report


def summary(report: Mapping[str, Any]) -> str:
    """The report as short text lines."""
    lines = [f"Flower commit {report['flower_commit']}; input {report['input']}"]
    if report["placeholders"]:
        lines.append(
            "placeholder modules (imported, never called): " + ", ".join(report["placeholders"])
        )
    for block in report["fjord"]:
        for r in block["rows"]:
            lines.append(
                f"fjord {block['model']} p={r['p']:.4f}: dims equal {r['dims_equal']}, "
                f"params theirs {r['params_theirs']} ours {r['params_ours']}, "
                f"logits max|Δ| {r['logits_max_abs_diff']:.3g}"
            )
    for block in report["fjord_aggregation"]:
        lines.append(f"fjord aggregation {block['model']}: max|Δ| {block['max_abs_diff']:.3g}")
    diffs = report["rounding"]["differs"]
    lines.append(
        f"rounding sweep, sizes {report['rounding']['sizes']}, p {report['rounding']['grid']}: "
        f"{len(diffs)} (size, p) pairs differ"
        + (
            ""
            if not diffs
            else ": "
            + ", ".join(f"{d['size']}@{d['p']} {d['theirs']} vs {d['ours']}" for d in diffs)
        )
    )
    anywhere = report["rounding"]["differs_any_size_1_512"]
    lines.append(
        f"rounding sweep, every size 1..512: {len(anywhere)} pairs differ, e.g. "
        + ", ".join(f"{d['size']}@{d['p']} {d['theirs']} vs {d['ours']}" for d in anywhere[:6])
    )
    fjord_own = len(report["rounding_fjord_p_s"])
    lines.append(f"rounding at FjORD's own p_s on its ResNet widths: {fjord_own} differ")
    for r in report["heterofl"]["rows"]:
        lines.append(
            f"heterofl conv rate={r['rate']:.4f}: shapes equal {r['shapes_equal']}, "
            f"params theirs {r['params_theirs']} ours {r['params_ours']}, logits max|Δ| "
            f"eval {r['logits_max_abs_diff_eval']:.3g} train {r['logits_max_abs_diff_train']:.3g}"
        )
    agg = report["heterofl_aggregation"]
    lines.append(
        f"heterofl aggregation, rates {agg['client_rates']}: max|Δ| equal weights "
        f"{agg['max_abs_diff_equal_weights']:.3g}, num-examples weights "
        f"{agg['max_abs_diff_num_examples_weights']:.3g}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flower", required=True, help="a checkout of Flower's repository")
    parser.add_argument("--flower-commit", default=None, help="its commit, if not a git checkout")
    parser.add_argument("--models", default="lenet5,cnn", help="this project's models (FjORD)")
    parser.add_argument("--tiers", default=TIERS, help="tier labels β (widths MAC-matched)")
    parser.add_argument("--input", choices=("fashion-mnist", "random"), default="fashion-mnist")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = run(args)
    print(summary(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
