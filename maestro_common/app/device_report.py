"""What a device reports about its automatic tier choice in its query reply, both ways.

Torch-free, so the server's strategy can decode it. The client side is
:mod:`maestro_common.app.autotier`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_CANDIDATES", "AutoTier", "StepMeasurement", "decode_auto_tier"]

# A device measures a few candidate budgets; a report listing more is refused unread, so that one
# query reply cannot add megabytes to the run's records.
MAX_CANDIDATES = 32


@dataclass(frozen=True)
class StepMeasurement:
    """One training step of the run's model at budget β on this device."""

    beta: float
    step_ms: float  # median wall time of a step (forward, backward, SGD update)
    memory_mb: float  # estimated process memory during the step (see maestro_common.app.autotier)


@dataclass(frozen=True)
class AutoTier:
    """The budget a device chose and what it measured to choose it."""

    beta: float
    tier: int
    cores: int
    memory_total_mb: float
    memory_available_mb: float
    max_step_ms: float | None  # None: no limit on the step time
    max_memory_mb: float
    measurements: tuple[StepMeasurement, ...]

    def to_record(self) -> dict[str, Any]:
        """Flat values for the query reply's ConfigRecord (scalars and lists of floats)."""
        record: dict[str, Any] = {
            "auto-tier": True,
            "auto-cores": self.cores,
            "auto-memory-total-mb": self.memory_total_mb,
            "auto-memory-available-mb": self.memory_available_mb,
            "auto-max-memory-mb": self.max_memory_mb,
            "auto-betas": [m.beta for m in self.measurements],
            "auto-step-ms": [m.step_ms for m in self.measurements],
            "auto-memory-mb": [m.memory_mb for m in self.measurements],
        }
        if self.max_step_ms is not None:
            record["auto-max-step-ms"] = self.max_step_ms
        return record


def decode_auto_tier(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a query reply says about an automatic tier choice; None for a node that was told.

    Raises
    ------
    ValueError
        When the reply claims an automatic choice but its measurements are malformed, or list
        more than :data:`MAX_CANDIDATES` candidates.
    """
    if not info.get("auto-tier"):
        return None
    for key in ("auto-betas", "auto-step-ms", "auto-memory-mb"):
        value = info.get(key)
        if isinstance(value, list | tuple) and len(value) > MAX_CANDIDATES:
            raise ValueError(
                f"automatic-tier report: {key} lists {len(value)} candidates, at most "
                f"{MAX_CANDIDATES} allowed"
            )
    try:
        betas = [float(b) for b in info["auto-betas"]]
        step_ms = [float(t) for t in info["auto-step-ms"]]
        memory_mb = [float(m) for m in info["auto-memory-mb"]]
        candidates = [
            {"beta": b, "step-ms": t, "memory-mb": m}
            for b, t, m in zip(betas, step_ms, memory_mb, strict=True)
        ]
        report = {
            "beta": float(info["rank-fraction"]),
            "cores": int(info["auto-cores"]),
            "memory-total-mb": float(info["auto-memory-total-mb"]),
            "memory-available-mb": float(info["auto-memory-available-mb"]),
            "max-memory-mb": float(info["auto-max-memory-mb"]),
            "max-step-ms": float(info["auto-max-step-ms"]) if "auto-max-step-ms" in info else None,
            "candidates": candidates,
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"malformed automatic-tier report in a query reply: {err!r}") from err
    return report
