"""The model-side work of the server: budgets per method, shapes, shrinking, per-tier evaluation.

The strategy stays free of torch and architecture: it calls these through plain callables over
numpy arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
import torch

from maestro_common.app.codec import model_arrays, prefix_axes
from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.cost import match_step_macs, matched_width_fn, received_model
from maestro_common.app.task import build_run_model, input_shape, resolve_device, run_method
from maestro_common.lowrank.accounting import count_macs, count_params
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.shrinking import shrink
from maestro_common.lowrank.training import evaluate_metrics
from maestro_common.ml.data import DATASET_INFO, ArrayDataset, load_dataset
from maestro_common.ml.data.partition import holdout_split
from maestro_common.ml.data.raw import local_raw_split, rows_dataset
from maestro_common.ml.data.text_sets import server_split
from maestro_common.ml.prefix import array_shapes, payload_nbytes, state_key, take_prefix

Shapes = dict[str, tuple[int, ...]]

# Threads for the server's evaluation: every core this process may use, unless this says how
# many. The rounds are synchronous, so while the server evaluates no client trains (in a
# simulation the workers share this machine and sit idle): 5 CNN tiers on the 10,000 test
# images took 38.2 s on one thread and 20.2-21.2 s on two here, with the same results.
EVAL_THREADS_ENV = "MAESTRO_EVAL_THREADS"


def eval_threads() -> int:
    """Threads the server evaluates with (``MAESTRO_EVAL_THREADS``, else the usable cores).

    Raises
    ------
    ConfigError
        When the variable is set to anything but a positive integer.
    """
    value = os.environ.get(EVAL_THREADS_ENV, "").strip()
    if not value:
        if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{EVAL_THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` inside the block, put back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _text_split(cfg: RunConfig, split: str, max_windows: int) -> ArrayDataset:
    """A character task's server split: a fixed sample of non-overlapping windows."""
    return server_split(cfg.dataset, split, cfg.data_dir, max_windows)


class ModelOps:
    """Model-specific operations of one run, over numpy arrays in and out.

    A tier is named by its budget label β (a rank fraction); what the label means is the run's
    :class:`~maestro_common.app.methods.Method`'s to say (:meth:`method_budget`).
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg)
        self.method = run_method(cfg)
        self.model = build_run_model(cfg).to(self.device)
        self.axes = prefix_axes(self.model)
        # How training nodes' sub-models are picked as index sets (None: leading blocks); read
        # off the fresh global model, before any load resizes it.
        self.plan = self.method.index_plan(self.model, input_shape(cfg), cfg)
        self.shape = input_shape(cfg)
        self._test: ArrayDataset | None = None
        self._val: ArrayDataset | None = None
        self._macs_at_budget = cache(self._forward_macs)
        self._step_macs_at = cache(self._step_macs)
        self.threads = eval_threads()

    def initial_arrays(self) -> dict[str, np.ndarray]:
        return model_arrays(self.model)

    # ----- budgets and shapes -----------------------------------------------------------------
    @cache  # noqa: B019 (one ModelOps per run; the cache lives as long as the run)
    def method_budget(self, beta: float) -> float:
        """The method's own budget for tier label β: a rank fraction or a width."""
        return self.method.budget(beta, self.cfg.tiers, self._matched_width)

    def _matched_width(self, beta: float) -> float:
        # Methods are compared at matched MACs: the widest width within the reference's MACs.
        return matched_width_fn(self.cfg, self.model, self.shape)(beta)

    def shapes(self, global_shapes: Shapes, beta: float) -> Shapes:
        """The array shapes of tier β's sub-model, given the global arrays' shapes."""
        return self.method.shapes(self.model, global_shapes, self.method_budget(beta), self.shape)

    def payload_nbytes(self, arrays: Mapping[str, np.ndarray], beta: float) -> int:
        """Bytes of the arrays tier β receives (and sends back)."""
        return payload_nbytes(take_prefix(arrays, self.shapes(array_shapes(arrays), beta)))

    def _forward_macs(self, budget: float, ranks: tuple[int, ...]) -> int:
        # MACs depend on shapes only: give the factors these ranks, their values do not matter
        # (every reader of the model's values loads the arrays first).
        for layer, k in zip(low_rank_layers(self.model).values(), ranks, strict=True):
            if layer.rank != k:
                layer.resize(k)
        return count_macs(self.model, self.shape, budget)

    def _rank_key(self, arrays: Mapping[str, np.ndarray]) -> tuple[int, ...]:
        """The kept ranks, read off the factors' shapes without loading anything."""
        return tuple(
            arrays[state_key(n, "u")].shape[layer.rank_axes["u"]]
            for n, layer in low_rank_layers(self.model).items()
        )

    def forward_macs(self, arrays: Mapping[str, np.ndarray], beta: float) -> int:
        """MACs of one forward pass of one example through tier β's sub-model."""
        return self._macs_at_budget(self.method_budget(beta), self._rank_key(arrays))

    def step_macs(self, arrays: Mapping[str, np.ndarray], beta: float) -> float:
        """Forward MACs per example of one local training step of tier β on ``arrays``: every
        pass its method's objective runs (a nested step's sub-models too), counted on a model
        loaded from the arrays the tier receives, as its client loads them."""
        received = self.shapes(array_shapes(arrays), beta)
        return self._step_macs_at(beta, tuple(sorted(received.items())))

    def _step_macs(self, beta: float, received: tuple[tuple[str, tuple[int, ...]], ...]) -> float:
        model = received_model(self.method, self.cfg, dict(received))
        grid = [self.method_budget(b) for b in self.cfg.tiers]
        global_ranks = self.method.ranks(build_run_model(self.cfg))  # as a client reads them
        budget = self.method_budget(beta)
        return self.method.step_macs(model, self.cfg, budget, grid, self.shape, beta, global_ranks)

    def match_step_macs(self, beta: float) -> float | None:
        """Forward MACs per example of one step of the run's ``compute-match`` method at tier β
        (None without compute matching; :mod:`maestro_common.app.cost`)."""
        return match_step_macs(self.cfg, beta)

    # ----- arrays ↔ model ----------------------------------------------------------------------
    def load(self, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Load the global arrays into the server's model; returns the kept ranks."""
        self.method.load(self.model, arrays)
        return {n: m.rank for n, m in low_rank_layers(self.model).items()}

    def ranks(self, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Kept rank of every factored layer, read off the arrays' shapes (nothing is loaded)."""
        names = low_rank_layers(self.model)
        return dict(zip(names, self._rank_key(arrays), strict=True))

    def shrink(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Server-side progressive shrinking from the aggregated factors' importance."""
        self.load(arrays)
        shrink(self.model, self.cfg.shrink_eps)
        return model_arrays(self.model)

    # ----- evaluation ------------------------------------------------------------------------
    def test_set(self) -> ArrayDataset:
        """The centralized test split (loaded once; the ServerApp loads it before round 1)."""
        if self._test is None and DATASET_INFO[self.cfg.dataset].is_text:
            self._test = _text_split(self.cfg, "test", self.cfg.max_test_examples)
        if self._test is None:
            test = load_dataset(self.cfg.dataset, "test", self.cfg.data_dir or None)
            if self.cfg.max_test_examples:
                test = test.subset(torch.arange(min(self.cfg.max_test_examples, len(test))))
            self._test = test
        return self._test

    def val_set(self) -> ArrayDataset:
        """The server's validation split: the ``val-size`` training examples held out of every
        client partition (:func:`~maestro_common.ml.data.partition.holdout_split`); loaded once.

        Raises
        ------
        ConfigError
            When ``val-size`` is not below the training set's size.
        """
        if self._val is None and DATASET_INFO[self.cfg.dataset].is_text:
            # Every role's validation segment (in no client's training data): val-size windows.
            self._val = _text_split(self.cfg, "val", self.cfg.val_size)
        if self._val is None:
            cfg = self.cfg
            data_dir = cfg.data_dir or None
            raw = local_raw_split(cfg.dataset, "train", data_dir)
            train = None if raw is not None else load_dataset(cfg.dataset, "train", data_dir)
            n = len(raw.labels) if raw is not None else len(train)
            try:
                _, held = holdout_split(n, cfg.val_size)
            except ValueError as err:
                raise ConfigError(str(err)) from err
            # From the memory-mapped cache, only the held-out rows are read.
            self._val = (
                rows_dataset(raw, held, cfg.dataset) if raw is not None else train.subset(held)
            )
        return self._val

    def evaluate_val(
        self, arrays: Mapping[str, np.ndarray], betas: Sequence[float]
    ) -> dict[str, dict[str, float]]:
        """Accuracy and loss of each tier's sub-model on :meth:`val_set` (keys ``f"{β:g}"``)."""
        self.load(arrays)
        scores = self._scores(self.val_set(), betas)
        return {f"{b:g}": scores[b] for b in betas}

    def _scores(self, data: ArrayDataset, betas: Sequence[float]) -> dict[float, dict[str, float]]:
        """Accuracy and loss of the loaded model's tier-β sub-model on ``data``, per β.

        Each distinct budget is evaluated once: a method that trains one model for every tier
        (fedavg-all, fedavg-fit) maps every β to the same budget and model.
        """
        by_budget: dict[float, dict[str, float]] = {}
        with threads(self.threads):
            for beta in betas:
                budget = self.method_budget(beta)
                if budget not in by_budget:
                    by_budget[budget] = evaluate_metrics(
                        self.model, data.images, data.labels, budget, device=self.device
                    )
        return {b: dict(by_budget[self.method_budget(b)]) for b in betas}

    def evaluate_tiers(
        self, arrays: Mapping[str, np.ndarray], betas: Sequence[float]
    ) -> dict[str, dict[str, Any]]:
        """Accuracy, loss, params, MACs and payload bytes of each tier's sub-model.

        Keys are the tier labels ``f"{β:g}"``; ``budget`` is what the method trains at β.
        """
        self.load(arrays)
        scores = self._scores(self.test_set(), betas)
        out = {}
        for beta in betas:
            budget = self.method_budget(beta)
            payload = self.payload_nbytes(arrays, beta)
            out[f"{beta:g}"] = {
                **scores[beta],
                "budget": budget,
                "params": count_params(self.model, budget),
                "macs": count_macs(self.model, self.shape, budget),
                "bytes-down": payload,
                "bytes-up": payload,
            }
        return out
