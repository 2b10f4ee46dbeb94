"""The wire protocol between the ServerApp and the ClientApp: keys, messages and reply contracts.

Three message kinds travel, each an instruction from the server and a reply from the client:

========  ==========================================  =============================================
kind      instruction (server → client)               reply (client → server)
========  ==========================================  =============================================
query     empty ``config``                            ``config``: ``rank-fraction``, ``tier``,
                                                      ``partition-id``
train     ``arrays`` (the node's prefix), ``config``:  ``arrays`` (the trained prefix), ``metrics``:
          ``server-round``, ``rank-fraction``,        ``num-examples``, ``train-loss`` and optional
          ``budget``, ``budget-grid``, extras         numeric extras (``train-seconds``, ...)
evaluate  as train                                    ``metrics``: ``num-examples``, ``eval-loss``,
                                                      ``eval-accuracy``
========  ==========================================  =============================================

Every ``decode_*_reply`` checks its reply against the contract (missing, ill-typed, out of range
or non-finite values) and returns either the typed reply or a :class:`Rejected` with the reason;
it never raises. The arrays of a train reply are checked against the global model by
:mod:`server.validation`, which needs what the server sent. ``decode_instruction`` is the
client's side: a malformed instruction raises :class:`ProtocolError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

# Records of a message's content.
ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"
# Instruction config keys.
SERVER_ROUND = "server-round"
RANK_FRACTION = "rank-fraction"  # the tier budget β (query reply: the node's own)
BUDGET = "budget"  # the method's own budget at β (a rank fraction or a width)
BUDGET_GRID = "budget-grid"  # every tier's method budget (FjORD samples widths from it)
LR = "lr"  # the round's learning rate, when the server schedules it (lr-schedule)
# Query reply keys.
TIER, PARTITION_ID = "tier", "partition-id"
# Reply metric keys.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS, TRAIN_SECONDS, PEAK_RSS_MB = "train-loss", "train-seconds", "peak-rss-mb"
TORCH_THREADS = "torch-threads"
# The handler's whole time, receipt to reply (training plus data, model build and prefix cut),
# when it started (seconds since the epoch) and in which process: the harness's profile of a
# round lays the clients out per worker process.
HANDLE_SECONDS, HANDLE_START, WORKER_PID = "handle-seconds", "handle-start", "worker-pid"
EVAL_LOSS, EVAL_ACCURACY = "eval-loss", "eval-accuracy"

# A reply's num-examples above this is refused: far above any device's dataset.
MAX_NUM_EXAMPLES = 1e9

Arrays = dict[str, np.ndarray]


class ProtocolError(ValueError):
    """An instruction the client cannot act on (the server and client disagree on the protocol)."""


@dataclass(frozen=True)
class Rejected:
    """A reply that broke its contract; ``reason`` says which key and what was wrong."""

    reason: str


@dataclass(frozen=True)
class TierReply:
    """A node's answer to the query: its budget β, tier index and partition (None when unset)."""

    beta: float
    tier: int | None
    partition: int | None


@dataclass(frozen=True)
class TrainReply:
    """A train reply whose metrics passed the contract; the arrays are still unchecked."""

    arrays: Arrays
    num_examples: float
    train_loss: float
    metrics: dict[str, float] = field(default_factory=dict)  # every metric, all finite


@dataclass(frozen=True)
class EvalReply:
    """A federated-evaluation reply: accuracy in [0, 1], a finite loss ≥ 0, examples > 0."""

    num_examples: float
    loss: float
    accuracy: float


@dataclass(frozen=True)
class Instruction:
    """What a train or evaluate instruction tells the client."""

    arrays: Arrays
    server_round: int
    rank_fraction: float
    budget: float
    budget_grid: tuple[float, ...] = ()
    lr: float | None = None  # the round's learning rate when the server schedules it


# ----- records ------------------------------------------------------------------------------
def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays as an ArrayRecord (Flower refuses bare ndarrays)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> Arrays:
    return {k: v.numpy() for k, v in record.items()}


# ----- query ------------------------------------------------------------------------------
def encode_query() -> RecordDict:
    return RecordDict({CONFIG: ConfigRecord({})})


def encode_tier_reply(
    beta: float,
    tier: int | None,
    partition: int | None,
    extra: Mapping[str, object] | None = None,
) -> RecordDict:
    """The node's tier; ``extra`` carries what a self-measuring node measured (auto tier)."""
    info = {
        **dict(extra or {}),
        RANK_FRACTION: float(beta),
        TIER: -1 if tier is None else int(tier),
        PARTITION_ID: -1 if partition is None else int(partition),
    }
    return RecordDict({CONFIG: ConfigRecord(info)})


def decode_tier_reply(msg: Message) -> TierReply | Rejected:
    """The node's tier, or why its reply is refused (β must be in (0, 1], indices ≥ -1)."""
    return _fenced(_decode_tier_reply, msg)


def _decode_tier_reply(msg: Message) -> TierReply:
    info = _record(msg, CONFIG)
    beta = _number(info, RANK_FRACTION)
    if not 0 < beta <= 1:
        raise _Bad(f"{RANK_FRACTION} must be in (0, 1], got {beta!r}")
    tier, part = _index(info, TIER), _index(info, PARTITION_ID)
    return TierReply(beta, None if tier < 0 else tier, None if part < 0 else part)


# ----- train and evaluate instructions ------------------------------------------------------
def encode_instruction(
    arrays: Mapping[str, np.ndarray],
    server_round: int,
    rank_fraction: float,
    budget: float,
    extra: Mapping[str, object] | None = None,
) -> RecordDict:
    """A train or evaluate instruction; ``extra`` (e.g. ``budget-grid``) goes in the config."""
    config = ConfigRecord(dict(extra or {}))
    config[SERVER_ROUND] = int(server_round)
    config[RANK_FRACTION] = float(rank_fraction)
    config[BUDGET] = float(budget)
    return RecordDict({ARRAYS: to_record(arrays), CONFIG: config})


def decode_instruction(msg: Message) -> Instruction:
    """The client's reading of a train or evaluate instruction.

    Raises
    ------
    ProtocolError
        If a record or key is missing or a value is out of range.
    """
    try:
        arrays = from_record(_record(msg, ARRAYS))
        config = _record(msg, CONFIG)
        server_round = _index(config, SERVER_ROUND)
        beta, budget = _number(config, RANK_FRACTION), _number(config, BUDGET)
        grid = config.get(BUDGET_GRID, [])
        if not isinstance(grid, list) or not all(_is_finite_number(b) for b in grid):
            raise _Bad(f"{BUDGET_GRID} must be a list of finite numbers, got {grid!r}")
        lr = _number(config, LR) if LR in config else None
        if lr is not None and not lr > 0:
            raise _Bad(f"{LR} must be > 0, got {lr!r}")
    except _Bad as err:
        raise ProtocolError(f"malformed instruction from the server: {err}") from None
    if server_round < 1 or not 0 < beta <= 1 or not budget > 0:
        raise ProtocolError(
            f"malformed instruction from the server: {SERVER_ROUND} must be ≥ 1, {RANK_FRACTION}"
            f" in (0, 1] and {BUDGET} > 0, got {server_round}, {beta}, {budget}"
        )
    return Instruction(arrays, server_round, beta, budget, tuple(float(b) for b in grid), lr)


# ----- train reply --------------------------------------------------------------------------
def encode_train_reply(
    arrays: Mapping[str, np.ndarray],
    num_examples: float,
    train_loss: float,
    extra: Mapping[str, float] | None = None,
) -> RecordDict:
    """The trained prefix and its metrics; ``extra`` holds further numeric metrics."""
    metrics = MetricRecord(dict(extra or {}))
    metrics[NUM_EXAMPLES] = num_examples
    metrics[TRAIN_LOSS] = float(train_loss)
    return RecordDict({ARRAYS: to_record(arrays), METRICS: metrics})


def decode_train_reply(msg: Message) -> TrainReply | Rejected:
    """The reply's arrays and metrics, or why it is refused.

    Contract: an ``arrays`` record of numpy-readable arrays; ``num-examples`` a number (not a
    bool) in (0, ``MAX_NUM_EXAMPLES``]; ``train-loss`` finite; every other metric a finite number.
    """
    return _fenced(_decode_train_reply, msg)


def _decode_train_reply(msg: Message) -> TrainReply:
    metrics = _metrics(_record(msg, METRICS))
    arrays = from_record(_record(msg, ARRAYS))
    return TrainReply(arrays, _num_examples(metrics), _number(metrics, TRAIN_LOSS), metrics)


# ----- evaluate reply -----------------------------------------------------------------------
def encode_eval_reply(num_examples: float, loss: float, accuracy: float) -> RecordDict:
    metrics = {NUM_EXAMPLES: num_examples, EVAL_LOSS: float(loss), EVAL_ACCURACY: float(accuracy)}
    return RecordDict({METRICS: MetricRecord(metrics)})


def decode_eval_reply(msg: Message) -> EvalReply | Rejected:
    """Accuracy in [0, 1], loss finite and ≥ 0, num-examples as for training; else refused."""
    return _fenced(_decode_eval_reply, msg)


def _decode_eval_reply(msg: Message) -> EvalReply:
    metrics = _record(msg, METRICS)
    n = _num_examples(metrics)
    loss, acc = _number(metrics, EVAL_LOSS), _number(metrics, EVAL_ACCURACY)
    if loss < 0:
        raise _Bad(f"{EVAL_LOSS} must be ≥ 0, got {loss!r}")
    if not 0 <= acc <= 1:
        raise _Bad(f"{EVAL_ACCURACY} must be in [0, 1], got {acc!r}")
    return EvalReply(n, loss, acc)


# ----- checks -------------------------------------------------------------------------------
class _Bad(Exception):
    """A contract breach inside a decoder; turned into :class:`Rejected` by :func:`_fenced`."""


def _fenced(decode, msg: Message):
    """Run a decoder; a breach or anything unexpected becomes a rejection, never an exception."""
    try:
        if msg.has_error():
            return Rejected(f"client error: {msg.error.reason}")
        return decode(msg)
    except _Bad as err:
        return Rejected(str(err))
    except Exception as err:  # a reply must never end the round, whatever it holds
        return Rejected(f"unreadable reply: {type(err).__name__}: {err}")


def _record(msg: Message, key: str):
    content = msg.content
    if key not in content:
        raise _Bad(f"no {key!r} record in the reply")
    return content[key]


def _is_finite_number(value: object) -> bool:
    return (
        not isinstance(value, bool | np.bool_)
        and isinstance(value, int | float | np.integer | np.floating)
        and math.isfinite(float(value))
    )


def _number(record: Mapping[str, object], key: str) -> float:
    if key not in record:
        raise _Bad(f"missing {key!r}")
    value = record[key]
    if not _is_finite_number(value):
        raise _Bad(f"{key!r} must be a finite number, got {type(value).__name__}: {value!r}")
    return float(value)  # type: ignore[arg-type]


def _index(record: Mapping[str, object], key: str) -> int:
    if key not in record:
        raise _Bad(f"missing {key!r}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < -1:
        raise _Bad(f"{key!r} must be an integer ≥ -1 (-1: none), got {value!r}")
    return int(value)


def _num_examples(record: Mapping[str, object]) -> float:
    n = _number(record, NUM_EXAMPLES)
    if not 0 < n <= MAX_NUM_EXAMPLES:
        raise _Bad(f"{NUM_EXAMPLES} must be in (0, {MAX_NUM_EXAMPLES:.0e}], got {n!r}")
    return n


def _metrics(record: Mapping[str, object]) -> dict[str, float]:
    """Every metric as a float; lists and non-finite values break the contract."""
    return {key: _number(record, key) for key in sorted(record)}


# What the server knows of a train reply without asking the client: it writes these into the
# round's per-client row over anything a client sent under the same names.
NODE_ID, TIER_BETA, BYTES_DOWN, BYTES_UP = "node-id", "tier-beta", "bytes-down", "bytes-up"
SERVER_FACTS = (NODE_ID, PARTITION_ID, TIER, TIER_BETA, RANK_FRACTION, BUDGET, BYTES_DOWN, BYTES_UP)
