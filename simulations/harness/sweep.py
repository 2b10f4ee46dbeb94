"""The lr sweep of one invocation (``--lrs``): one short run per method and lr on the validation
split, then each method's main runs with the lr chosen (:mod:`simulations.lr_sweep`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maestro_common.app.config import ConfigError
from maestro_common.app.task import load_run_config
from simulations import lr_sweep, provenance
from simulations.harness.configs import run_dir, total_rounds
from simulations.harness.errors import HarnessError
from simulations.harness.plans import Plan, plan_run, plan_runs
from simulations.harness.progress import read_rows
from simulations.labels import method_label

if TYPE_CHECKING:
    from simulations.harness.runner import Runner


@dataclass
class Sweep:
    """The lr sweep of one invocation: its runs, their requests and plans, its settings."""

    configs: list[dict]
    requests: dict[str, dict]
    plans: dict[str, Plan]
    federation: dict
    tuning: dict
    out_dir: Path
    last_k: int

    @classmethod
    def plan(
        cls,
        args: argparse.Namespace,
        out_dir: Path,
        configs: Sequence[dict],
        federation: dict,
        tuning: dict,
    ) -> Sweep:
        """One sweep run per method and lr, checked and planned (HarnessError when refused)."""
        try:
            lr_sweep.check_selection(out_dir, tuning)
        except ValueError as err:
            raise HarnessError(str(err)) from err
        methods = list(dict.fromkeys(c["method"] for c in configs))
        first = {m: next(c for c in configs if c["method"] == m) for m in methods}
        runs = []
        for method in methods:
            for lr in args.lrs:
                cfg = lr_sweep.sweep_config(
                    first[method], lr, tuning["select-rounds"], tuning["select-seed"], out_dir
                )
                try:
                    load_run_config(cfg)
                except ConfigError as err:
                    raise HarnessError(f"bad sweep config: {err}") from err
                runs.append(cfg)
        requests = {c["run-name"]: provenance.make_request(c, federation) for c in runs}
        return cls(
            runs, requests, plan_runs(runs, requests), federation, tuning, out_dir, args.last_evals
        )

    def run(
        self, runner: Runner, configs: Sequence[dict], failures: list[str]
    ) -> tuple[list[dict], dict[str, dict], dict[str, Plan]]:
        """Run the sweep, choose each method's lr, write ``lr-selection.json``; return the main
        runs with their lr set, their requests and plans (failures are appended)."""
        results: dict[str, dict[float, Any]] = {}
        for cfg in self.configs:
            name = cfg["run-name"]
            failure = runner.run(cfg, self.plans[name], self.requests[name])
            if failure:
                failures.append(failure)
            got = failure or read_rows(run_dir(cfg))
            results.setdefault(method_label(cfg), {})[float(cfg["lr"])] = got
        chosen = {m: lr_sweep.method_selection(r, self.last_k) for m, r in results.items()}
        lr_sweep.write_selection(self.out_dir, self.tuning, chosen)
        main_configs, requests, plans = [], {}, {}
        for cfg in configs:
            name, method = cfg["run-name"], method_label(cfg)
            lr = chosen[method]["lr"]
            if lr is None:
                failures.append(f"{name}: not run, no sweep run of {method} gave a score")
                continue
            print(f"[{name}] lr {lr:g} chosen on the validation split", flush=True)
            cfg = {**cfg, "lr": lr}
            request = provenance.make_request(cfg, self.federation, self.tuning)
            try:
                total = total_rounds(cfg)
                plans[name] = plan_run(run_dir(cfg), request, total)
            except HarnessError as err:
                print(f"FAILED: {err}", flush=True)
                failures.append(str(err))
                continue
            main_configs.append(cfg)
            requests[name] = request
        return main_configs, requests, plans
