"""What a round is to the strategy: who may train in it (the policy's interface), what the server
knows of a node, and what the round did (its log for the results file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeInfo", "RoundLog", "RoundPolicy"]


@dataclass
class NodeInfo:
    """What the server knows of a node: its budget and (simulation) partition."""

    beta: float
    tier: int | None
    partition: int | None


class RoundPolicy:
    """Who may train in a round, at which budget, and whose reply counts (default: everyone).

    The simulation harness replaces it with a virtual-clock policy (availability, deadlines);
    the strategy itself knows nothing of time.
    """

    def available(self, server_round: int, node_id: int, info: NodeInfo) -> bool:
        return True

    def budget(self, server_round: int, node_id: int, info: NodeInfo) -> float:
        """The tier budget the node trains at this round (a deadline may lower it)."""
        return info.beta

    def admit(self, server_round: int, clients: list[dict[str, Any]]) -> tuple[set[int], float]:
        """Node ids whose replies count, and the round's virtual duration in seconds."""
        return {c["node-id"] for c in clients}, 0.0


@dataclass
class RoundLog:
    """What one round did, for the results file."""

    server_round: int
    clients: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    federated: dict[str, dict[str, float]] = field(default_factory=dict)
    eval_rejected: list[tuple[int, str]] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)  # stragglers past a deadline
    valid_replies: int = 0  # train replies accepted and aggregated
    virtual_seconds: float = 0.0
    aggregate_seconds: float = 0.0
    train_seconds: float = 0.0  # from sending the train messages until the last reply
    fed_eval_seconds: float = 0.0  # the same for the federated evaluation messages
    train_start: float = 0.0  # when the train messages were sent (seconds since the epoch)
    shrunk: bool = False
