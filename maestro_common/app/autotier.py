"""Automatic tier: a device measures itself and picks the largest budget it can train.

A SuperNode started with ``--node-config 'rank-fraction="auto" max-step-ms=250 max-memory-mb=700'``
answers the server's tier query by measuring (psutil: memory, cores; one timed training step at
each of the run's tier budgets) and choosing the largest budget β whose step time and memory
estimate meet the limits. The choice and the measurements travel in the query reply
(:mod:`maestro_common.app.device_report`) and the server records them in ``metrics.jsonl``.

Memory of a step at β is estimated, not isolated (a process cannot measure one step's peak
apart from what it already holds): the process's resident memory before the benchmark, plus
three times the parameter bytes at β (weights, gradients, momentum), plus the bytes autograd
saved for the backward pass of one batch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import psutil
import torch
import torch.nn.functional as F

from maestro_common.app.config import RunConfig
from maestro_common.app.device_report import AutoTier, StepMeasurement
from maestro_common.app.task import build_run_model, input_shape, run_method
from maestro_common.lowrank.accounting import count_params
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.inference import tier_model
from maestro_common.ml.data import DATASET_INFO

__all__ = [
    "AUTO",
    "AutoTier",
    "StepMeasurement",
    "auto_tier",
    "benchmark_step",
    "choose_tier",
    "is_auto",
]

AUTO = "auto"
MB = 1 << 20


Benchmark = Callable[[RunConfig, float], StepMeasurement]


def _saved_bytes() -> tuple[Any, list[int]]:
    """Hooks that add up the bytes autograd keeps for backward."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), total


def benchmark_step(cfg: RunConfig, beta: float, steps: int = 3) -> StepMeasurement:
    """Time training steps of the run's model at budget β on random data of one batch.

    A factored model is cut to its β sub-model (what a client of that tier receives); a width
    or dense model runs at width β (the server's MAC-matched width can differ slightly).
    """
    torch.manual_seed(0)
    model = build_run_model(cfg)
    width = 1.0
    method = run_method(cfg)
    if method.factored:
        model = tier_model(model, beta)
    elif method.width_sliced:
        width = beta
    model.train()
    params = count_params(model, width)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=cfg.momentum)
    info = DATASET_INFO[cfg.dataset]
    if info.is_text:  # token windows and a next-token target at every position
        x = torch.randint(0, info.num_classes, (cfg.batch_size, info.context))
        y = torch.randint(0, info.num_classes, (cfg.batch_size, info.context))
    else:
        x = torch.randn((cfg.batch_size, *input_shape(cfg)))
        y = torch.randint(0, info.num_classes, (cfg.batch_size,))
    rss = psutil.Process().memory_info().rss
    times, saved = [], 0
    for i in range(steps + 1):  # the first step warms up and is not timed
        hooks, total = _saved_bytes()
        start = time.perf_counter()
        with use_budget(model, width), hooks:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
        saved = max(saved, total[0])
    memory = rss + 3 * 4 * params + saved  # float32 weights, gradients and momentum
    return StepMeasurement(beta, 1000 * statistics.median(times), memory / MB)


def _cores() -> int:
    """CPU cores this process may run on (its affinity: what a container's cpuset allows)."""
    try:
        return len(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):  # no affinity on this platform
        return psutil.cpu_count() or 1


def _limit(node_config: Mapping[str, Any], key: str) -> float | None:
    value = node_config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"node config {key} must be a positive number, got {value!r}")
    return float(value)


def choose_tier(
    cfg: RunConfig,
    max_step_ms: float | None,
    max_memory_mb: float,
    bench: Benchmark | None = None,
) -> AutoTier:
    """Measure every tier budget of the run and pick the largest that meets both limits.

    Raises
    ------
    ValueError
        When no tier meets the limits; the message gives what was measured.
    """
    bench = bench or benchmark_step  # looked up at call time: tests replace it
    measured = tuple(bench(cfg, beta) for beta in sorted(cfg.tiers))
    fitting = [
        m
        for m in measured
        if (max_step_ms is None or m.step_ms <= max_step_ms) and m.memory_mb <= max_memory_mb
    ]
    if not fitting:
        found = ", ".join(
            f"β={m.beta:g}: {m.step_ms:.1f} ms, {m.memory_mb:.0f} MB" for m in measured
        )
        raise ValueError(
            f"no tier of the run fits this device (max-step-ms={max_step_ms}, "
            f"max-memory-mb={max_memory_mb:.0f}); measured {found}"
        )
    best = max(fitting, key=lambda m: m.beta)
    memory = psutil.virtual_memory()
    return AutoTier(
        beta=best.beta,
        tier=cfg.tiers.index(best.beta),
        cores=_cores(),
        memory_total_mb=memory.total / MB,
        memory_available_mb=memory.available / MB,
        max_step_ms=max_step_ms,
        max_memory_mb=max_memory_mb,
        measurements=measured,
    )


def auto_tier(node_config: Mapping[str, Any], cfg: RunConfig) -> AutoTier:
    """The tier of a node whose node config says ``rank-fraction="auto"``.

    ``max-step-ms`` (default: no limit) and ``max-memory-mb`` (default: the memory available
    now) from the node config bound the choice.
    """
    max_step_ms = _limit(node_config, "max-step-ms")
    max_memory_mb = _limit(node_config, "max-memory-mb")
    if max_memory_mb is None:
        max_memory_mb = psutil.virtual_memory().available / MB
    return choose_tier(cfg, max_step_ms, max_memory_mb)


def is_auto(node_config: Mapping[str, Any]) -> bool:
    """Whether the node config asks for an automatic tier."""
    return node_config.get("rank-fraction") == AUTO
