"""The virtual clock: a client's round time as a formula on its tier profile, never a sleep.

As in FedScale, compute time is work / speed and communication time is bytes / bandwidth. A client
downloads its prefix, trains, then uploads, one after the other, so its round time is the sum. A
round lasts as long as its slowest kept client; a deadline drops the stragglers (or, with
``fit_budget``, lets a client lower its budget until it fits).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from server.profiles import TierProfile

K = TypeVar("K", bound=Hashable)

# Forward + backward ≈ 3 × forward: the backward pass computes gradients with respect to both the
# activations and the weights, each about as costly as the forward pass (Kaplan et al. 2020).
BACKWARD_FACTOR = 3

# Mixed into the availability seed so that availability draws never coincide with other
# streams seeded by (seed, round, partition).
_AVAILABILITY_STREAM = 7


def training_macs(forward_macs_per_example: float, num_examples: int, epochs: int) -> int:
    """MACs of local training: 3 × forward MACs per example × examples × epochs.

    ``forward_macs_per_example`` is one *step's*: the sum over every forward pass the method's
    objective runs in a step (Maestro's nested step: the prefix and its sub-models), not one pass
    of the tier's model. The factor 3 counts each pass's forward plus a backward of about twice
    its cost (this convention: backward = 2 × forward, not measured).
    """
    for name, value in (
        ("forward_macs_per_example", forward_macs_per_example),
        ("num_examples", num_examples),
        ("epochs", epochs),
    ):
        if value < 0:
            raise ValueError(f"{name} must be ≥ 0, got {value}")
    return round(BACKWARD_FACTOR * forward_macs_per_example * int(num_examples) * int(epochs))


@dataclass(frozen=True)
class ClientTime:
    """Virtual seconds a client spends in one round."""

    compute: float  # local training: MACs / speed
    download: float  # receiving its prefix: bytes down / down bandwidth
    upload: float  # sending its prefix back: bytes up / up bandwidth

    @property
    def total(self) -> float:
        """Download, train, upload one after the other."""
        return self.download + self.compute + self.upload


def client_time(
    train_macs: int, bytes_down: int, bytes_up: int, profile: TierProfile
) -> ClientTime:
    """Seconds of compute, download and upload of one client of ``profile`` in one round."""
    if min(train_macs, bytes_down, bytes_up) < 0:
        raise ValueError(
            f"work must be ≥ 0, got train_macs={train_macs}, bytes_down={bytes_down}, "
            f"bytes_up={bytes_up}"
        )
    return ClientTime(
        compute=train_macs / profile.speed,
        download=bytes_down / profile.down_bps,
        upload=bytes_up / profile.up_bps,
    )


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and not deadline > 0:
        raise ValueError(f"deadline must be > 0 seconds or None, got {deadline}")


def apply_deadline(
    times: Mapping[K, ClientTime], deadline: float | None
) -> tuple[list[K], list[K]]:
    """Split clients into those that finish within ``deadline`` and the stragglers.

    Parameters
    ----------
    times : Mapping[K, ClientTime]
        Each client's round time, keyed by any id (node id, partition id).
    deadline : float | None
        Seconds a round may last; None keeps every client.

    Returns
    -------
    tuple[list[K], list[K]]
        ``(kept, dropped)``, each in the order of ``times``. A client finishing exactly at the
        deadline is kept.
    """
    _check_deadline(deadline)
    kept = [k for k, t in times.items() if deadline is None or t.total <= deadline]
    dropped = [k for k, t in times.items() if deadline is not None and t.total > deadline]
    return kept, dropped


def round_duration(times: Mapping[K, ClientTime], kept: Sequence[K]) -> float:
    """Virtual seconds of a round: the slowest kept client's total (0.0 when none is kept)."""
    return max((times[k].total for k in kept), default=0.0)


def fit_budget(
    deadline: float | None,
    profile: TierProfile,
    cost_at: Callable[[float], tuple[int, int, int]],
    grid: Sequence[float],
) -> float | None:
    """The largest budget a client of ``profile`` can train within the deadline.

    Parameters
    ----------
    deadline : float | None
        Seconds a round may last; None means no deadline (the largest allowed budget).
    profile : TierProfile
        The client's tier; budgets above ``profile.beta`` are never chosen.
    cost_at : Callable[[float], tuple[int, int, int]]
        ``(train_macs, bytes_down, bytes_up)`` of one round at a budget.
    grid : Sequence[float]
        Candidate budgets, in any order.

    Returns
    -------
    float | None
        The largest candidate ≤ ``profile.beta`` whose time fits; None when none fits.
    """
    _check_deadline(deadline)
    # Float slack so that a grid value printed from the same β (0.6 vs 0.6000000000000001) counts.
    candidates = sorted((b for b in grid if 0 < b <= profile.beta + 1e-12), reverse=True)
    for budget in candidates:
        if deadline is None or client_time(*cost_at(budget), profile).total <= deadline:
            return float(budget)
    return None


def is_available(seed: int, server_round: int, partition_id: int, availability: float) -> bool:
    """Whether a client is online in a round: a pure, reproducible Bernoulli(availability) draw.

    The draw depends only on its arguments, so a rerun, a resumed run or another process gives the
    same answer, and the long-run frequency over rounds is ``availability``.
    """
    if not 0 <= availability <= 1:
        raise ValueError(f"availability must be in [0, 1], got {availability}")
    rng = np.random.default_rng([seed, server_round, partition_id, _AVAILABILITY_STREAM])
    return bool(rng.random() < availability)
