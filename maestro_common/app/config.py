"""The one typed run configuration, parsed once from Flower's ``run_config`` (kebab-case keys).

Flower run-config values are scalars, so lists (tier fractions, shares) travel as comma strings.
Unknown keys and bad values raise :class:`ConfigError` naming what is allowed. This module is a
leaf (no torch, models or data): names of methods, models, datasets, samplers and partitionings
are checked against their registries where those are built
(:func:`maestro_common.app.task.check_names`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from maestro_common.lowrank.prefix import is_budget

# How the server combines the float coordinates of a round (server.aggregation.RULES, a leaf
# copy so that this module imports no server code; tests check the two agree).
AGGREGATIONS = ("mean", "trimmed-mean", "median", "centered-clip")

# Maestro's training step: nested (the prefix on the labels plus smaller sub-models,
# maestro_common.lowrank.samplers.NestedSampler) or sampled (one sub-model per step, `sampler`).
OBJECTIVES = ("nested", "sampled")


class ConfigError(ValueError):
    """A run-config key or value is not allowed."""


def parse_options(text: str, what: str) -> dict[str, int | float | str]:
    """Parse ``"dim=64,mlp-ratio=2.5"`` into ``{"dim": 64, "mlp_ratio": 2.5}``.

    Keys may be kebab- or snake-case; values are ints, floats or else strings.
    """
    options: dict[str, int | float | str] = {}
    for item in str(text).split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"{what} must be comma-separated key=value pairs, got {text!r}")
        if key in options:
            raise ConfigError(f"{what} gives {key!r} twice: {text!r}")
        for kind in (int, float):
            try:
                options[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return options


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """Parse ``"0.2,0.4"`` into floats; empty items are ignored."""
    try:
        return tuple(float(x) for x in str(text).split(",") if x.strip())
    except ValueError as err:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from err


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; field ``foo_bar`` is run-config key ``foo-bar``."""

    # What is trained
    method: str = "maestro"  # one of maestro_common.app.methods.METHODS
    model: str = "cnn"  # one of maestro_common.ml.models.MODEL_NAMES
    # the model's own options as "key=value" pairs, e.g. "dim=64,depth=2" (checked by the model)
    model_options: str = ""
    dataset: str = "fashion-mnist"  # one of maestro_common.ml.data.DATASET_INFO
    data_dir: str = ""  # folder with the dataset's files ("" = default search path)
    rank_fraction: float = 1.0  # initial kept rank of each factored layer, as a fraction of full
    # Federation
    num_rounds: int = 3
    clients_per_round: int = 10  # sampled by partition id, so the same seed samples the same
    clients_per_eval: int = 0  # federated evaluation on local splits (0 = off)
    min_nodes: int = 2  # wait for this many nodes before round 1
    round_timeout: float = 3600.0  # seconds to wait for the replies of one round
    query_timeout: float = 30.0  # seconds to wait for the nodes' answers to the tier query
    # Tiers: budget β and share of the population of each tier
    tier_fractions: str = "0.2,0.4,0.6,0.8,1.0"
    tier_shares: str = ""  # "" = equal shares
    # Device profiles of the tiers for the virtual clock (comma lists, one value per tier or one
    # for all; "" = server.profiles defaults) and the round deadline
    tier_speeds: str = ""  # MAC/s of local training
    tier_down: str = ""  # download bandwidth, bytes/s
    tier_up: str = ""  # upload bandwidth, bytes/s
    tier_availability: str = ""  # probability of being online in a round
    deadline: float = 0.0  # virtual seconds per round (0 = none)
    deadline_policy: str = "drop"  # drop: stragglers' replies are left out; fit: lower their budget
    # Data partitioning (simulation: partition-id comes from the node config)
    partitioning: str = "dirichlet"
    alpha: float = 0.5
    classes_per_partition: int = 2
    val_fraction: float = 0.1  # of each client's data, for federated evaluation
    max_test_examples: int = 0  # 0 = the whole test set for centralized evaluation
    # Server-side validation: the last val-size examples of a fixed permutation of the training
    # set (one for every run and seed) are held out of every client partition and evaluated by
    # the server at each evaluation round (0 = off); lr sweeps choose on them, never on the test
    val_size: int = 0
    test_eval: bool = True  # evaluate every tier on the test set (false: sweep runs never see it)
    # Local training
    local_epochs: int = 1
    # Optimiser steps per round (0: local-epochs passes over the local data). When set, it alone
    # decides the round's length: batches are drawn epoch after epoch until that many steps ran
    local_steps: int = 0
    # "" or a method: each client's round runs as many steps as give it the forward MACs of that
    # method's round at its tier (equal client compute; maestro_common.app.cost)
    compute_match: str = ""
    batch_size: int = 32
    lr: float = 0.02
    optimizer: str = "sgd"  # local optimiser, fresh each round: sgd (with momentum) or adam
    momentum: float = 0.9
    weight_decay: float = 0.0
    max_grad_norm: float = 5.0  # gradient clipping (0 = off)
    sampler: str = "maestro"  # maestro, uniform or none
    lasso: float = 0.0  # λ of the group lasso
    frobenius_decay: float = 0.0  # factored methods: λ of ½λ‖U Vᵀ‖²_F per factored layer
    # Server-side progressive shrinking
    shrink_every: int = 0  # rounds between shrinks (0 = off)
    shrink_eps: float = 1e-2
    # Evaluation and output
    eval_every: int = 1  # rounds between centralized evaluations (the last round always)
    seed: int = 0
    device: str = "auto"  # auto, cpu or cuda
    output_dir: str = "runs"
    run_name: str = ""  # "" = method-model-dataset-seed
    resume: bool = False
    # TensorBoard events of the per-tier metrics in <run folder>/tensorboard/ (needs tensorboard)
    tensorboard: bool = False
    # Trust boundary (docs/trust.md)
    weight_cap: float = 2.0  # a reply weighs at most this × the round's median num-examples
    weight_floor: float = 0.01  # ... and at least this × that median (0 = off; ≤ weight-cap)
    update_cap: float = 2.0  # a reply's update RMS is cut to this × the round's median (0 = off)
    node_wait: float = 300.0  # seconds to wait for min-nodes nodes before round 1
    # mean (FedAvg), trimmed-mean, median or centered-clip, per coordinate over its holders
    aggregation: str = "centered-clip"
    trim_fraction: float = 0.2  # trimmed-mean: share of a coordinate's holders cut at each end
    clip_radius: float = 1.0  # centered-clip: × the round's median deviation from the median
    # Fast low-rank tiers (maestro only)
    # kxk convs: svd (kxk→r, 1x1 r→out), tucker (1x1, core, 1x1) or tucker-b2/-b4 (branched core)
    conv_factorization: str = "svd"
    rank_quantum: int = 1  # a tier's per-layer ranks are rounded down to multiples of this
    freeze: str = "none"  # sequential freezing: none, factor, layer or stage (per epoch)
    freeze_groups: int = 2  # groups (freeze = layer) or stages (freeze = stage) frozen in turn
    freeze_per_epoch: int = 1  # periods per local epoch: what is frozen changes this often
    # Maestro's training objective and the lr schedule (issue 12)
    objective: str = "nested"  # nested: prefix + smaller sub-models; sampled: `sampler`
    sub_models: str = "sandwich"  # nested: sandwich, random, smallest or none
    distill: bool = False  # nested: sub-models learn the prefix's softened output (off: labels)
    distill_temperature: float = 1.0
    full_pass_share: float = 1.0  # nested: share of steps that train the whole prefix
    sub_batch_share: float = 1.0  # nested: smaller sub-models run on this share of each batch
    pass_average: bool = False  # nested: a gradient is the mean over the passes that used it
    initial_ranks: str = "full"  # maestro: full (rank-fraction of min(m, n)) or breakeven
    # maestro: nest the first (dense) conv by width and the factored layers by rank (hybrid)
    hybrid_width: bool = False
    lr_schedule: str = "constant"  # constant, cosine or step, applied per round by the server
    # Factored methods: this share of the rounds first trains the dense model with
    # warmup-method, then the server factors it by SVD (docs/federated.md; 0 = off)
    dense_warmup: float = 0.0
    warmup_method: str = "fedavg-all"  # fedavg-all: the tiers that can run it; fjord: every tier
    tiers: tuple[float, ...] = field(init=False, default=())
    shares: tuple[float, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                check(
                    math.isfinite(value), f"{f.name.replace('_', '-')} must be finite, got {value}"
                )

        check(
            self.objective in OBJECTIVES,
            f"objective must be one of {OBJECTIVES}, got {self.objective!r}",
        )
        check(
            0 <= self.full_pass_share <= 1,
            f"full-pass-share must be in [0, 1], got {self.full_pass_share}",
        )
        check(
            0 < self.sub_batch_share <= 1,
            f"sub-batch-share must be in (0, 1], got {self.sub_batch_share}",
        )
        check(self.local_steps >= 0, f"local-steps must be ≥ 0, got {self.local_steps}")
        check(
            0 <= self.dense_warmup < 1,
            f"dense-warmup must be in [0, 1) (a share of the rounds), got {self.dense_warmup}",
        )
        check(
            self.warmup_rounds < self.num_rounds,
            f"dense-warmup={self.dense_warmup:g} of num-rounds={self.num_rounds} leaves no round "
            "for the factored model: lower dense-warmup or raise num-rounds",
        )
        check(
            self.distill_temperature > 0,
            f"distill-temperature must be > 0, got {self.distill_temperature}",
        )
        check(
            self.optimizer in ("sgd", "adam"),
            f"optimizer must be sgd or adam, got {self.optimizer!r}",
        )
        check(
            self.deadline_policy in ("drop", "fit"),
            f"deadline-policy must be drop or fit, got {self.deadline_policy!r}",
        )
        check(self.deadline >= 0, f"deadline must be ≥ 0, got {self.deadline}")
        check(
            self.device in ("auto", "cpu", "cuda"),
            f"device must be auto, cpu or cuda, got {self.device!r}",
        )
        check(
            is_budget(self.rank_fraction),
            f"rank-fraction must be in (0, 1], got {self.rank_fraction}",
        )
        for key in (
            "rank_quantum",
            "freeze_groups",
            "freeze_per_epoch",
            "num_rounds",
            "clients_per_round",
            "local_epochs",
            "batch_size",
            "eval_every",
            "min_nodes",
            "classes_per_partition",
        ):
            check(
                getattr(self, key) >= 1,
                f"{key.replace('_', '-')} must be ≥ 1, got {getattr(self, key)}",
            )
        for key in (
            "clients_per_eval",
            "shrink_every",
            "max_test_examples",
            "seed",
            "val_size",
            "local_steps",
        ):
            check(
                getattr(self, key) >= 0,
                f"{key.replace('_', '-')} must be ≥ 0, got {getattr(self, key)}",
            )
        check(
            self.aggregation in AGGREGATIONS,
            f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}",
        )
        check(
            0 <= self.trim_fraction < 0.5,
            f"trim-fraction must be in [0, 0.5) (a share cut at each end), got "
            f"{self.trim_fraction}",
        )
        check(self.clip_radius > 0, f"clip-radius must be > 0, got {self.clip_radius}")
        check(
            not self.weight_cap or self.weight_floor <= self.weight_cap,
            f"weight-floor ({self.weight_floor}) must not exceed weight-cap ({self.weight_cap})",
        )
        for key in ("weight_cap", "weight_floor", "update_cap", "node_wait"):
            check(
                getattr(self, key) >= 0,
                f"{key.replace('_', '-')} must be ≥ 0, got {getattr(self, key)}",
            )
        for key in ("lr", "alpha", "round_timeout", "query_timeout"):
            check(
                getattr(self, key) > 0,
                f"{key.replace('_', '-')} must be > 0, got {getattr(self, key)}",
            )
        for key in (
            "momentum",
            "weight_decay",
            "max_grad_norm",
            "lasso",
            "frobenius_decay",
            "shrink_eps",
        ):
            check(
                getattr(self, key) >= 0,
                f"{key.replace('_', '-')} must be ≥ 0, got {getattr(self, key)}",
            )
        check(
            not set(self.run_name) & {"/", "\\"} and self.run_name not in (".", ".."),
            f"run-name must be a plain folder name (no '/', '\\', '.' or '..'), got "
            f"{self.run_name!r}",
        )
        check(
            self.test_eval or self.val_size > 0,
            "test-eval = false needs val-size > 0: otherwise no round evaluates anything",
        )
        check(
            0 <= self.val_fraction < 1, f"val-fraction must be in [0, 1), got {self.val_fraction}"
        )
        parse_options(self.model_options, "model-options")  # syntax here; names by the model
        tiers = parse_floats(self.tier_fractions, "tier-fractions")
        check(
            bool(tiers) and all(is_budget(t) for t in tiers),
            f"tier-fractions must be numbers in (0, 1], got {self.tier_fractions!r}",
        )
        check(
            len({f"{t:g}" for t in tiers}) == len(tiers),
            f"tier-fractions repeat a value (tiers are labelled by 6 significant digits): "
            f"{self.tier_fractions!r}",
        )
        shares = parse_floats(self.tier_shares, "tier-shares") or tuple(1.0 for _ in tiers)
        check(
            len(shares) == len(tiers)
            and all(math.isfinite(s) and s >= 0 for s in shares)
            and sum(shares) > 0,
            f"tier-shares must be {len(tiers)} non-negative numbers (one per tier) with a "
            f"positive sum, got {self.tier_shares!r}",
        )
        total = sum(shares)
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "shares", tuple(s / total for s in shares))

    @property
    def warmup_rounds(self) -> int:
        """Rounds ``1 .. warmup_rounds`` train the dense model first (``dense-warmup`` of
        ``num-rounds``, rounded, at least 1 when on; 0 when off)."""
        if not self.dense_warmup:
            return 0
        return max(1, round(self.dense_warmup * self.num_rounds))

    @property
    def name(self) -> str:
        return self.run_name or f"{self.method}-{self.model}-{self.dataset}-seed{self.seed}"

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name.replace("_", "-") for f in fields(cls) if f.init]

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Parse Flower's run_config; unknown keys and wrong types raise ConfigError."""
        known = {f.name.replace("_", "-"): f for f in fields(cls) if f.init}
        unknown = sorted(set(run_config) - set(known))
        if unknown:
            raise ConfigError(f"unknown run-config keys {unknown}; allowed: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in run_config.items():
            f = known[key]
            kwargs[f.name] = _coerce(key, value, type(f.default))
        return cls(**kwargs)

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case dict form (what ``config.json`` stores)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self) if f.init}

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. tier-fractions=1.0 given as a single TOML number
    raise ConfigError(f"{key} must be a {kind.__name__}, got {value!r} ({type(value).__name__})")
