"""Device tiers as profile data: rank budget, compute speed, bandwidth, uptime.

Device heterogeneity is data, as in FedScale's client metadata: a tier is a rank budget β plus the
numbers the virtual clock (:mod:`server.clock`) turns into seconds. Nothing here sleeps or
measures anything.

Default 5-tier phone population, weakest to strongest. These are **assumed, illustrative values**
chosen to span roughly an order of magnitude the way phone generations do; they are not
measurements of any device or network:

=====  =====  ===============  ====================  ====================  ============
tier   β      speed (MAC/s)    down (B/s)            up (B/s)              availability
=====  =====  ===============  ====================  ====================  ============
0      0.2    2e9              1.25e6 (10 Mbit/s)    0.625e6 (5 Mbit/s)    0.80
1      0.4    4e9              2.5e6 (20 Mbit/s)     1.25e6 (10 Mbit/s)    0.85
2      0.6    8e9              5e6 (40 Mbit/s)       2.5e6 (20 Mbit/s)     0.90
3      0.8    16e9             7.5e6 (60 Mbit/s)     3.75e6 (30 Mbit/s)    0.95
4      1.0    32e9             12.5e6 (100 Mbit/s)   6.25e6 (50 Mbit/s)    1.00
=====  =====  ===============  ====================  ====================  ============

A tier's share of the population is not a profile field: it is the run config's ``tier-shares``
(:mod:`maestro_common.app.tiers` assigns tiers). Speed is sustained multiply-accumulates per second
of local training (well below a phone's peak), upload is half of download as on most consumer links.

For a tier whose β is not in the table, a default is interpolated by β: log-linearly for speed and
bandwidth (each step up doubles, roughly), linearly for availability, clamped at both ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maestro_common.app.config import parse_floats
from maestro_common.ml.prefix import check_budget, is_budget

DEFAULT_FRACTIONS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_SPEEDS: tuple[float, ...] = (2e9, 4e9, 8e9, 16e9, 32e9)  # MAC/s
DEFAULT_DOWN_BPS: tuple[float, ...] = (1.25e6, 2.5e6, 5e6, 7.5e6, 12.5e6)  # bytes/s
DEFAULT_UP_BPS: tuple[float, ...] = (0.625e6, 1.25e6, 2.5e6, 3.75e6, 6.25e6)  # bytes/s
DEFAULT_AVAILABILITY: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95, 1.0)


@dataclass(frozen=True)
class TierProfile:
    """One device tier; ``default_profile(beta)`` fills every field with the assumed defaults.

    Attributes
    ----------
    beta : float
        Rank budget, the fraction of every factored layer's rank the tier trains, in (0, 1].
    speed : float
        Sustained local-training compute in MAC/s (> 0).
    down_bps, up_bps : float
        Download and upload bandwidth in bytes/s (> 0).
    availability : float
        Probability that a device of this tier is online in a round, in (0, 1].
    """

    beta: float
    speed: float
    down_bps: float
    up_bps: float
    availability: float

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"TierProfile {message}")

        for name in ("beta", "speed", "down_bps", "up_bps", "availability"):
            value = getattr(self, name)
            check(
                not isinstance(value, bool) and isinstance(value, int | float),
                f"{name} must be a number, got {value!r}",
            )
            check(math.isfinite(value), f"{name} must be finite, got {value!r}")
        check(is_budget(self.beta), f"beta must be in (0, 1], got {self.beta}")
        check(self.speed > 0, f"speed must be > 0 MAC/s, got {self.speed}")
        check(self.down_bps > 0, f"down_bps must be > 0 bytes/s, got {self.down_bps}")
        check(self.up_bps > 0, f"up_bps must be > 0 bytes/s, got {self.up_bps}")
        check(
            0 < self.availability <= 1,
            f"availability must be in (0, 1], got {self.availability}",
        )


def default_profile(beta: float) -> TierProfile:
    """The assumed default profile of a tier with budget ``beta`` (see the module docstring)."""
    check_budget(beta, "beta")

    def log_interp(table: Sequence[float]) -> float:
        # Geometric in β: the defaults double per step, so interpolate their logarithms.
        return float(np.exp(np.interp(beta, DEFAULT_FRACTIONS, np.log(table))))

    return TierProfile(
        beta=float(beta),
        speed=log_interp(DEFAULT_SPEEDS),
        down_bps=log_interp(DEFAULT_DOWN_BPS),
        up_bps=log_interp(DEFAULT_UP_BPS),
        availability=float(np.interp(beta, DEFAULT_FRACTIONS, DEFAULT_AVAILABILITY)),
    )


def _per_tier(text: str, key: str, n: int) -> tuple[float, ...] | None:
    """One value per tier from a comma string; None for "" (defaults); one value is broadcast."""
    values = parse_floats(text, key)
    if not values:
        return None
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(
            f"{key} must have {n} values (one per tier) or a single value, "
            f"got {len(values)}: {text!r}"
        )
    return values


def profiles_from_strings(
    fractions: str = "",
    speeds: str = "",
    down: str = "",
    up: str = "",
    availability: str = "",
) -> tuple[TierProfile, ...]:
    """Tier profiles from comma strings, one value per tier.

    Parameters
    ----------
    fractions : str
        Rank budgets β of the tiers (key ``tier-fractions``); "" means the 5 default tiers. This
        string fixes the number of tiers.
    speeds, down, up, availability : str
        Per-tier MAC/s, download and upload bytes/s, and probability online (keys
        ``tier-speeds``, ``tier-down``, ``tier-up``, ``tier-availability``). "" means each
        tier's default; a single value applies to every tier.

    Returns
    -------
    tuple[TierProfile, ...]
        One profile per tier, in the order of ``fractions``.

    Raises
    ------
    ValueError
        On a value that is not a number, a count that does not match the tiers, or a value a
        ``TierProfile`` refuses.
    """
    betas = parse_floats(fractions, "tier-fractions") or DEFAULT_FRACTIONS
    n = len(betas)
    if not all(is_budget(b) for b in betas):
        raise ValueError(f"tier-fractions must all be in (0, 1], got {list(betas)}")
    given = {
        "speed": _per_tier(speeds, "tier-speeds", n),
        "down_bps": _per_tier(down, "tier-down", n),
        "up_bps": _per_tier(up, "tier-up", n),
        "availability": _per_tier(availability, "tier-availability", n),
    }
    profiles = []
    for i, beta in enumerate(betas):
        default = default_profile(beta)
        fields = {
            name: (values[i] if values is not None else getattr(default, name))
            for name, values in given.items()
        }
        profiles.append(TierProfile(beta=float(beta), **fields))
    return tuple(profiles)
