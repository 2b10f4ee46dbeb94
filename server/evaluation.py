"""Centralized evaluation of the global model at every tier's budget on the held-out test set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from maestro_common.accounting import count_macs, count_params
from maestro_common.codec import array_shapes, load_arrays, payload_nbytes, prefix_axes
from maestro_common.config import RunConfig
from maestro_common.data import load_dataset
from maestro_common.layers import low_rank_layers
from maestro_common.prefix import budget_shapes, take_prefix
from maestro_common.shrinking import shrink
from maestro_common.task import build_run_model, input_shape, resolve_device
from maestro_common.training import evaluate


class ModelOps:
    """The model-specific work the server needs, over numpy arrays in and out.

    The strategy stays free of torch: it calls these through plain callables.
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg)
        self.model = build_run_model(cfg).to(self.device)
        self.axes = prefix_axes(self.model)
        self._test = None

    def initial_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def ranks(self, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Kept rank of every factored layer, read off the arrays."""
        load_arrays(self.model, arrays)
        return {n: m.rank for n, m in low_rank_layers(self.model).items()}

    def shrink(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Server-side progressive shrinking from the aggregated factors' importance."""
        load_arrays(self.model, arrays)
        shrink(self.model, self.cfg.shrink_eps)
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def _test_set(self):
        if self._test is None:
            test = load_dataset(self.cfg.dataset, "test", self.cfg.data_dir or None)
            if self.cfg.max_test_examples:
                test = test.subset(torch.arange(min(self.cfg.max_test_examples, len(test))))
            self._test = test
        return self._test

    def evaluate_tiers(
        self, arrays: Mapping[str, np.ndarray], betas: Sequence[float]
    ) -> dict[str, dict[str, Any]]:
        """Accuracy, loss, params, MACs and payload bytes at each budget β (keys ``f"{β:g}"``)."""
        load_arrays(self.model, arrays)
        test = self._test_set()
        shapes = array_shapes(arrays)
        out = {}
        for beta in betas:
            loss, acc = evaluate(self.model, test.images, test.labels, beta, device=self.device)
            payload = payload_nbytes(take_prefix(arrays, budget_shapes(shapes, self.axes, beta)))
            out[f"{beta:g}"] = {
                "accuracy": acc,
                "loss": loss,
                "params": count_params(self.model, beta),
                "macs": count_macs(self.model, input_shape(self.cfg), beta),
                "bytes-down": payload,
                "bytes-up": payload,
            }
        return out
