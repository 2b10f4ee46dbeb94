"""The one typed run configuration, parsed once from Flower's ``run_config`` (kebab-case keys).

Flower run-config values are scalars, so lists (tier fractions, shares) travel as comma strings.
Unknown keys and bad values raise :class:`ConfigError` naming what is allowed; a key of a removed
variant says so, and where its verdict is (:mod:`maestro_common.app.removed`). Each field
declares its help text, allowed values and method group (:func:`setting`); one loop checks every
field's own bound, then a few rules tie keys together. This module is a leaf (no torch, models or
data): names of methods, models, datasets, samplers and partitionings are checked against their
registries where those are built, as are keys that only some methods act on
(:func:`maestro_common.app.task.check_names`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from maestro_common.app.removed import REMOVED_KEYS, removed_key_message, without_removed_defaults
from maestro_common.app.settings import (
    AT_LEAST_1,
    BUDGET,
    MAESTRO,
    NON_NEGATIVE,
    POSITIVE,
    SHARE,
    Allowed,
    OneOf,
    Range,
    Rule,
    describe_settings,
    group_keys,
    setting,
)
from maestro_common.app.step_rules import resolve_sub_models, resolve_transmission
from maestro_common.ml.prefix import is_budget

# How the server combines the float coordinates of a round (server.aggregation.RULES, a leaf
# copy so that this module imports no server code; tests check the two agree).
AGGREGATIONS = ("mean", "trimmed-mean", "median", "centered-clip")

# Maestro's training step: nested (the prefix on the labels plus smaller sub-models,
# maestro_common.lowrank.samplers.NestedSampler) or sampled (one sub-model per step, `sampler`).
OBJECTIVES = ("nested", "sampled")
# Which components a Maestro training node is sent: its prefix, or components drawn by the
# Collective rule of spectral model sharding (maestro_common.lowrank.spectral; docs/index-sets.md);
# auto: collective where every factored layer is U Vᵀ (conv-factorization = "svd"), else prefix.
TRANSMISSIONS = ("auto", "prefix", "collective")
# Keys whose default changed after they were added, with the value they held before: what a run
# config stored without the key ran with (issue 29 made the one-pass `split` step with Collective
# transmission the default, as `auto`; until then it was the sandwich on prefixes).
EARLIER_DEFAULTS: dict[str, Any] = {"sub-models": "sandwich", "transmission": "prefix"}


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


def _plain_folder_name(name: str) -> bool:
    return not set(name) & {"/", "\\"} and name not in (".", "..")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; field ``foo_bar`` is run-config key ``foo-bar``.

    Each field carries its help text, allowed values and method group in its metadata
    (:func:`setting`); :func:`describe_keys` lists them for users.
    """

    # What is trained
    method: str = setting("maestro", "the training method")
    model: str = setting("cnn", "the model")
    model_options: str = setting(
        "", 'the model\'s own options as "key=value" pairs, e.g. "dim=64,depth=2"'
    )
    dataset: str = setting("fashion-mnist", "the dataset")
    data_dir: str = setting("", 'folder with the dataset\'s files ("" = default search path)')
    rank_fraction: float = setting(
        1.0,
        "initial kept rank of each factored layer, as a fraction of full rank",
        BUDGET,
        method=MAESTRO,
    )
    # Federation
    num_rounds: int = setting(3, "federated rounds", AT_LEAST_1)
    clients_per_round: int = setting(
        10,
        "clients sampled per round, by partition id (the same seed samples the same)",
        AT_LEAST_1,
    )
    clients_per_eval: int = setting(
        0, "clients of federated evaluation on local splits (0 = off)", NON_NEGATIVE
    )
    min_nodes: int = setting(2, "nodes to wait for before round 1", AT_LEAST_1)
    round_timeout: float = setting(3600.0, "seconds to wait for the replies of one round", POSITIVE)
    query_timeout: float = setting(
        30.0, "seconds to wait for the nodes' answers to the tier query", POSITIVE
    )
    # Tiers: budget β and share of the population of each tier
    tier_fractions: str = setting("0.2,0.4,0.6,0.8,1.0", "budget β of each tier (comma list)")
    tier_shares: str = setting("", 'share of the population of each tier ("" = equal shares)')
    # Device profiles of the tiers for the virtual clock (comma lists, one value per tier or one
    # for all; "" = server.profiles defaults) and the round deadline
    tier_speeds: str = setting("", "virtual clock: MAC/s of local training per tier")
    tier_down: str = setting("", "virtual clock: download bandwidth per tier, bytes/s")
    tier_up: str = setting("", "virtual clock: upload bandwidth per tier, bytes/s")
    tier_availability: str = setting("", "probability of being online in a round, per tier")
    deadline: float = setting(0.0, "virtual seconds per round (0 = none)", NON_NEGATIVE)
    deadline_policy: str = setting(
        "drop",
        "drop: stragglers' replies are left out; fit: lower their budget",
        OneOf(("drop", "fit")),
    )
    # Data partitioning (simulation: partition-id comes from the node config)
    partitioning: str = setting("dirichlet", "how the data is split among clients")
    alpha: float = setting(0.5, "Dirichlet concentration", POSITIVE)
    classes_per_partition: int = setting(
        2, "pathological partitioning: classes per client", AT_LEAST_1
    )
    val_fraction: float = setting(
        0.1,
        "share of each client's data for federated evaluation",
        Range(low=0, high=1, high_open=True),
    )
    max_test_examples: int = setting(
        0, "test examples of centralized evaluation (0 = the whole test set)", NON_NEGATIVE
    )
    # Server-side validation: the last val-size examples of a fixed permutation of the training
    # set (one for every run and seed) are held out of every client partition and evaluated by
    # the server at each evaluation round (0 = off); lr sweeps choose on them, never on the test
    val_size: int = setting(
        0, "training examples held out for server-side validation (0 = off)", NON_NEGATIVE
    )
    test_eval: bool = setting(
        True, "evaluate every tier on the test set (false: sweep runs never see it)"
    )
    # Local training
    local_epochs: int = setting(1, "passes over the local data per round", AT_LEAST_1)
    # When set, it alone decides the round's length: batches are drawn epoch after epoch until
    # that many steps ran
    local_steps: int = setting(
        0, "optimiser steps per round (0: local-epochs passes over the data)", NON_NEGATIVE
    )
    # each client's round runs as many steps as give it the forward MACs of that method's round
    # at its tier (equal client compute; maestro_common.app.cost)
    compute_match: str = setting(
        "",
        '"" or a method: each client runs the steps that spend that method\'s round MACs '
        "at its tier",
    )
    batch_size: int = setting(32, "local batch size", AT_LEAST_1)
    lr: float = setting(0.02, "local learning rate", POSITIVE)
    optimizer: str = setting(
        "sgd",
        "local optimiser, fresh each round (sgd: with momentum)",
        OneOf(("sgd", "adam")),
    )
    momentum: float = setting(0.9, "SGD momentum", NON_NEGATIVE)
    weight_decay: float = setting(0.0, "L2 weight decay of the local optimiser", NON_NEGATIVE)
    max_grad_norm: float = setting(5.0, "gradient clipping (0 = off)", NON_NEGATIVE)
    sampler: str = setting(
        "maestro",
        "sampled objective: the rank sampler of each step",
        method=MAESTRO,
    )
    lasso: float = setting(
        0.0,
        "λ of the hierarchical group lasso (0 = off)",
        NON_NEGATIVE,
        method=MAESTRO,
        needs="uses_lasso",
        unused="a group lasso over factored layers' components",
    )
    # Server-side progressive shrinking
    shrink_every: int = setting(
        0,
        "rounds between server-side shrinks (0 = off)",
        NON_NEGATIVE,
        method=MAESTRO,
        needs="shrinks",
        unused="it cuts factored layers' ranks",
    )
    shrink_eps: float = setting(
        0.01, "importance threshold of shrinking", NON_NEGATIVE, method=MAESTRO
    )
    # Evaluation and output
    eval_every: int = setting(
        1, "rounds between centralized evaluations (the last round always)", AT_LEAST_1
    )
    seed: int = setting(0, "the run's seed", NON_NEGATIVE)
    device: str = setting("auto", "auto: CUDA when present", OneOf(("auto", "cpu", "cuda")))
    output_dir: str = setting("runs", "folder of the run folders")
    run_name: str = setting(
        "",
        '"" = method-model-dataset-seed',
        Rule(_plain_folder_name, "a plain folder name (no '/', '\\', '.' or '..')"),
    )
    resume: bool = setting(False, "continue after the run folder's checkpoint")
    tensorboard: bool = setting(
        False,
        "TensorBoard events of per-tier accuracy and loss in <run folder>/tensorboard/ "
        "(pip install tensorboard)",
    )
    # Trust boundary (docs/trust.md)
    weight_cap: float = setting(
        2.0, "a reply weighs at most this × the round's median num-examples (0 = off)", NON_NEGATIVE
    )
    weight_floor: float = setting(
        0.01, "... and at least this × that median (0 = off; ≤ weight-cap)", NON_NEGATIVE
    )
    update_cap: float = setting(
        2.0, "a reply's update RMS is cut to this × the round's median (0 = off)", NON_NEGATIVE
    )
    node_wait: float = setting(
        300.0,
        "seconds to wait for min-nodes nodes, then for every node's tier reply, before round 1",
        NON_NEGATIVE,
    )
    aggregation: str = setting(
        "centered-clip",
        "how the server combines a coordinate over its holders (mean: FedAvg)",
        OneOf(AGGREGATIONS),
    )
    trim_fraction: float = setting(
        0.2,
        "trimmed-mean: the share cut",
        Range(low=0, high=0.5, high_open=True, note="(a share cut at each end)"),
    )
    clip_radius: float = setting(
        1.0, "centered-clip: × the round's median deviation from the median", POSITIVE
    )
    # Fast low-rank tiers
    conv_factorization: str = setting(
        "svd",
        "kxk convs: svd (kxk→r, 1x1 r→out), tucker (1x1, core, 1x1), tucker-b2/-b4 (branched core)",
        method=MAESTRO,
    )
    freeze: str = setting("none", "sequential freezing of stages, per epoch", method=MAESTRO)
    freeze_groups: int = setting(
        2,
        "stages (freeze = stage) frozen in turn",
        AT_LEAST_1,
        method=MAESTRO,
    )
    freeze_per_epoch: int = setting(
        1,
        "freezing periods per local epoch: what is frozen changes this often",
        AT_LEAST_1,
        method=MAESTRO,
    )
    # Maestro's training objective and the lr schedule (issue 12)
    objective: str = setting(
        "nested",
        "nested: prefix + smaller sub-models; sampled: one sub-model per step (sampler)",
        OneOf(OBJECTIVES),
        method=MAESTRO,
    )
    sub_models: str = setting(
        "auto",
        "nested: which smaller sub-models a step runs (auto: split, the sandwich's passes on "
        "parts of each batch, with Collective transmission; the sandwich on prefixes)",
        method=MAESTRO,
    )
    full_pass_share: float = setting(
        1.0, "nested: share of steps that train the whole prefix", SHARE, method=MAESTRO
    )
    sub_batch_share: float = setting(
        1.0, "nested: smaller sub-models run on this share of each batch", BUDGET, method=MAESTRO
    )
    transmission: str = setting(
        "auto",
        "which components a training node is sent: prefix (the first ⌈β·r⌉), collective "
        "(as many, drawn by spectral sharding's Collective rule), auto (collective; prefix with "
        "Tucker cores)",
        OneOf(TRANSMISSIONS),
        method=MAESTRO,
        needs="ordered",
        unused="ordered factors trained by the nested objective",
    )
    lr_schedule: str = setting("constant", "lr per round, sent by the server")
    # Centralized trainer only (the federation refuses it): this share of the epochs first
    # trains the dense model, then it is factored by SVD (docs/centralized.md)
    dense_warmup: float = setting(
        0.0,
        "centralized trainer only: the dense model trains first for this share of the epochs "
        "(0 = off)",
        Range(low=0, high=1, high_open=True, note="(a share of the epochs)"),
        method=MAESTRO,
        needs="factored",
        unused="trains its own model from the start",
    )
    tiers: tuple[float, ...] = field(init=False, default=())
    shares: tuple[float, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        for f in fields(self):
            if not f.init:
                continue
            key, value = f.name.replace("_", "-"), getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key} must be finite, got {value}")
            allowed: Allowed | None = f.metadata["allowed"]
            if allowed is not None and (message := allowed.error(key, value)):
                raise ConfigError(message)
        self._check_relations()
        parse_options(self.model_options, "model-options")  # syntax here; names by the model
        tiers = parse_floats(self.tier_fractions, "tier-fractions")
        _check(
            bool(tiers) and all(is_budget(t) for t in tiers),
            f"tier-fractions must be numbers in (0, 1], got {self.tier_fractions!r}",
        )
        _check(
            len({f"{t:g}" for t in tiers}) == len(tiers),
            f"tier-fractions repeat a value (tiers are labelled by 6 significant digits): "
            f"{self.tier_fractions!r}",
        )
        shares = parse_floats(self.tier_shares, "tier-shares") or tuple(1.0 for _ in tiers)
        _check(
            len(shares) == len(tiers)
            and all(math.isfinite(s) and s >= 0 for s in shares)
            and sum(shares) > 0,
            f"tier-shares must be {len(tiers)} non-negative numbers (one per tier) with a "
            f"positive sum, got {self.tier_shares!r}",
        )
        total = sum(shares)
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "shares", tuple(s / total for s in shares))

    def _check_relations(self) -> None:
        """Rules that tie keys together (each key's own bounds are on its field)."""
        _check(
            self.warmup_rounds < self.num_rounds,
            f"dense-warmup={self.dense_warmup:g} of num-rounds={self.num_rounds} leaves no round "
            "for the factored model: lower dense-warmup or raise num-rounds",
        )
        _check(
            not self.weight_cap or self.weight_floor <= self.weight_cap,
            f"weight-floor ({self.weight_floor}) must not exceed weight-cap ({self.weight_cap})",
        )
        _check(
            self.test_eval or self.val_size > 0,
            "test-eval = false needs val-size > 0: otherwise no round evaluates anything",
        )

    @property
    def warmup_rounds(self) -> int:
        """Rounds ``1 .. warmup_rounds`` train the dense model first (``dense-warmup`` of
        ``num-rounds``, rounded, at least 1 when on; 0 when off)."""
        if not self.dense_warmup:
            return 0
        return max(1, round(self.dense_warmup * self.num_rounds))

    @property
    def transmission_rule(self) -> str:
        """How a Maestro training node's components are picked: ``prefix`` or ``collective``
        (``transmission`` with ``auto`` resolved by :func:`resolve_transmission`)."""
        return resolve_transmission(self.transmission, self.conv_factorization)

    @property
    def sub_model_rule(self) -> str:
        """The smaller sub-models a nested step runs: ``sub-models`` with ``auto`` resolved by
        :func:`resolve_sub_models`."""
        return resolve_sub_models(self.sub_models, self.transmission_rule)

    @property
    def name(self) -> str:
        return self.run_name or f"{self.method}-{self.model}-{self.dataset}-seed{self.seed}"

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name.replace("_", "-") for f in fields(cls) if f.init]

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Parse Flower's run_config; unknown keys and wrong types raise ConfigError, and so do
        removed keys, saying why (:mod:`maestro_common.app.removed`)."""
        known = {f.name.replace("_", "-"): f for f in fields(cls) if f.init}
        removed = sorted(set(run_config) & set(REMOVED_KEYS))
        if removed:
            raise ConfigError("; ".join(map(removed_key_message, removed)))
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


def as_current(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run config (a checkpoint's, a run record's) as the code reads it today: a removed
    key at its old default dropped (:func:`~maestro_common.app.removed.without_removed_defaults`),
    and a key added since filled in with what the run did before the key existed: its default
    (a new key's default keeps the old behaviour), or for a key whose default changed later, the
    default it had before (:data:`EARLIER_DEFAULTS`)."""
    kept = without_removed_defaults(run_config)
    then = {**RunConfig().to_run_config(), **EARLIER_DEFAULTS}
    return {**{k: v for k, v in then.items() if k not in kept}, **kept}


def key_fields() -> list[dataclasses.Field]:
    """The fields of :class:`RunConfig` that are run-config keys, in declaration order."""
    return [f for f in fields(RunConfig) if f.init]


def keys_by_method() -> dict[str | None, list[str]]:
    """The keys of each method group (``None``: keys that every method reads), in order."""
    return group_keys(key_fields())


def describe_keys(names: Mapping[str, Sequence[str]] | None = None) -> str:
    """Every run-config key as a TOML line ``key = default  # help; must be ...``, by method group.

    ``names`` gives, per key, the names a registry allows (:func:`maestro_common.app.task.
    registries`; this module imports no registry). ``pyproject.toml``'s ``[tool.flwr.app.config]``
    is exactly this text with them (a test checks it); ``python -m maestro_common.app.keys``
    prints it.
    """
    return describe_settings(key_fields(), names)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


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
