"""How far one round's mean of factors is from its mean of products (issue 12's last item).

The server aggregates a factored layer's U and V coordinate by coordinate (nested FedAvg over
leading blocks), so the new layer computes Ū V̄ᵀ. What each client computed is W_c = U_c V_cᵀ,
and averaging *those* (each component j over the clients that trained it, as the factors are
averaged) gives the product mean

    W̄ = Σ_j  Σ_{c ∋ j} w_c u_cj v_cjᵀ / Σ_{c ∋ j} w_c      (components no client held: global)

The two differ by the clients' covariance of factor updates, a second-order term. This tool runs
one federated round in process, with the clients' own training code on their own partitions and
the server's tier shapes, round lr and aggregation, from a run's checkpoint (or the run's fresh
model), and reports for every factored layer of the form W = U Vᵀ:

- ``update``: ‖W̄ − W_g‖_F, how far the round moved the layer (W_g: the global model before it);
- ``gap``: ‖W̄ − Ū V̄ᵀ‖_F, and ``gap / update``;

and the server's validation accuracy at every tier after the round, three ways: the factor mean
(what the server does), the factor mean re-factored by SVD (the same products at full rank,
its components re-ordered by singular value), and the product mean re-factored by SVD. At the
full tier the first two are the same model, so that column isolates factor against product
averaging; at smaller tiers the second isolates the re-ordering.

Tucker-2 layers and a hybrid's width-nested reader are not of the form U Vᵀ and are left out
(listed). Weights are the clients' example counts (the trust caps act on adversarial replies and
are not applied here).

    python -m simulations.experiments.factor_average --conf simulations/conf/fmnist-100.toml \\
        --checkpoint runs/maestro-seed0/checkpoint.npz --partitions 100
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from server.evaluation import ModelOps

from client.client_app import local_round
from client.local_data import local_splits
from maestro_common.app.checkpoint import read_checkpoint
from maestro_common.app.codec import model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.protocol import Instruction
from maestro_common.app.task import build_run_model, check_names
from maestro_common.app.tiers import assign_tiers
from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers
from maestro_common.ml.prefix import array_shapes, take_prefix
from maestro_common.ml.schedules import round_lr
from server.aggregation import aggregate_nested
from server.sampling import sample_nodes
from simulations.experiment import read_experiment
from simulations.harness.configs import parse_sets

log = logging.getLogger(__name__)
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Reply:
    arrays: Arrays
    weight: float
    beta: float


def product_layers(model: torch.nn.Module) -> dict[str, LowRankLayer]:
    """The factored layers whose weight is U Vᵀ of their two factors (SVD kinds, whole input)."""
    return {
        n: m
        for n, m in low_rank_layers(model).items()
        if type(m).dense_weight is LowRankLayer.dense_weight and not m.nested_input
    }


def _matrices(layer: LowRankLayer, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, V) as (out, k) and (in', k) float64 matrices from a layer's ``u`` and ``v`` arrays."""
    with torch.no_grad():
        saved_u, saved_v = layer.u, layer.v
        try:
            layer.u = torch.nn.Parameter(torch.from_numpy(u))
            layer.v = torch.nn.Parameter(torch.from_numpy(v))
            return (
                layer.u_matrix().double().numpy().copy(),
                layer.v_matrix().double().numpy().copy(),
            )
        finally:
            layer.u, layer.v = saved_u, saved_v


def product_mean(
    layer: LowRankLayer,
    name: str,
    global_arrays: Mapping[str, np.ndarray],
    replies: Sequence[Reply],
) -> np.ndarray:
    """W̄ of the module docstring for one layer: each component's outer products averaged over
    the replies that hold it, weighted by their example counts; a component no reply holds keeps
    the global one. Shape (out, in')."""
    gu, gv = _matrices(layer, global_arrays[f"{name}.u"], global_arrays[f"{name}.v"])
    rank = gu.shape[1]
    held = np.zeros(rank)
    for r in replies:
        held[: r.arrays[f"{name}.u"].shape[layer.rank_axes["u"]]] += r.weight
    scale = np.divide(1.0, held, out=np.zeros(rank), where=held > 0)
    total = (gu[:, held == 0]) @ gv[:, held == 0].T
    for r in replies:
        u, v = _matrices(layer, r.arrays[f"{name}.u"], r.arrays[f"{name}.v"])
        k = u.shape[1]
        total += (u * (r.weight * scale[:k])) @ v.T
    return total


def svd_factors(
    layer: LowRankLayer, weight: np.ndarray, like: Mapping[str, np.ndarray], name: str
) -> Arrays:
    """The layer's ``u`` and ``v`` arrays of ``weight`` (out, in') by SVD, √s on both sides,
    components ordered by singular value, at the layer's kept rank (exact if that is full)."""
    p, s, qt = np.linalg.svd(weight, full_matrices=False)
    k = like[f"{name}.u"].shape[layer.rank_axes["u"]]
    root = np.sqrt(s[:k])
    u_mat = torch.from_numpy((p[:, :k] * root).astype(np.float32))
    v_mat = torch.from_numpy((qt[:k].T * root).astype(np.float32))
    with torch.no_grad():
        saved_u, saved_v = layer.u, layer.v
        try:
            layer.load_factors(u_mat, v_mat)
            return {f"{name}.u": layer.u.numpy().copy(), f"{name}.v": layer.v.numpy().copy()}
        finally:
            layer.u, layer.v = saved_u, saved_v


def client_round(
    cfg: RunConfig,
    ops: ModelOps,
    global_arrays: Arrays,
    partition: int,
    num_partitions: int,
    beta: float,
    server_round: int,
) -> Reply:
    """What one client replies in ``server_round``: the server's instruction for tier β, then the
    client app's own local round (:func:`client.client_app.local_round`), in process."""
    shapes = ops.shapes(array_shapes(global_arrays), beta)
    task = Instruction(
        take_prefix(global_arrays, shapes),
        server_round,
        beta,
        ops.method_budget(beta),
        tuple(ops.method_budget(t) for t in cfg.tiers),
        round_lr(cfg.lr, cfg.lr_schedule, server_round, cfg.num_rounds),
    )
    train_ds, _ = local_splits(cfg, partition, num_partitions)
    arrays, result = local_round(cfg, task, train_ds, partition)
    return Reply(arrays, float(result.num_examples), beta)


def measure(
    cfg: RunConfig,
    global_arrays: Arrays,
    server_round: int,
    num_partitions: int,
    clients: int,
) -> dict:
    """One round from ``global_arrays`` (the model after round ``server_round`` − 1)."""
    ops = ModelOps(cfg)
    tiers = assign_tiers(num_partitions, cfg.shares, cfg.seed)
    picked = sample_nodes({p: p for p in range(num_partitions)}, clients, cfg.seed, server_round)
    replies = []
    for p in picked:
        beta = cfg.tiers[int(tiers[p])]
        replies.append(client_round(cfg, ops, global_arrays, p, num_partitions, beta, server_round))
        log.info("client %d (β=%g): %d examples", p, beta, replies[-1].weight)
    factor_mean = aggregate_nested(global_arrays, [(r.arrays, r.weight) for r in replies])
    model = build_run_model(cfg)
    layers = product_layers(model)
    reordered, product = dict(factor_mean), dict(factor_mean)
    per_layer = {}
    for name, layer in layers.items():
        gu, gv = _matrices(layer, global_arrays[f"{name}.u"], global_arrays[f"{name}.v"])
        fu, fv = _matrices(layer, factor_mean[f"{name}.u"], factor_mean[f"{name}.v"])
        w_prod = product_mean(layer, name, global_arrays, replies)
        w_fac = fu @ fv.T
        update = float(np.linalg.norm(w_prod - gu @ gv.T))
        gap = float(np.linalg.norm(w_prod - w_fac))
        per_layer[name] = {"update": update, "gap": gap, "gap/update": gap / max(update, 1e-30)}
        reordered.update(svd_factors(layer, w_fac, factor_mean, name))
        product.update(svd_factors(layer, w_prod, factor_mean, name))
    skipped = sorted(set(low_rank_layers(model)) - set(layers))
    accuracy = {}
    for label, arrays in (
        ("factor mean", factor_mean),
        ("factor mean, SVD-ordered", reordered),
        ("product mean, SVD-ordered", product),
    ):
        scores = ops.evaluate_val(arrays, cfg.tiers)
        accuracy[label] = {b: 100 * s["accuracy"] for b, s in scores.items()}
    return {
        "round": server_round,
        "clients": [{"partition": p, "beta": r.beta} for p, r in zip(picked, replies, strict=True)],
        "layers": per_layer,
        "left out": skipped,
        "val accuracy": accuracy,
    }


def _config(conf: Path | None, overrides: Sequence[str], checkpoint_config: Mapping) -> RunConfig:
    values: dict = dict(checkpoint_config)
    if conf is not None:  # the experiment file's run config (its num-supernodes is the harness's)
        values.update(read_experiment(conf).run_config)
    values.update(parse_sets(overrides))
    cfg = RunConfig.from_run_config(values)
    check_names(cfg)
    return cfg


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conf", type=Path, help="run config (TOML) when not from a checkpoint")
    p.add_argument("--checkpoint", type=Path, help="start from this run's checkpoint")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE run-config override")
    p.add_argument("--partitions", type=int, default=100, help="number of client partitions")
    p.add_argument("--clients", type=int, default=0, help="clients in the round (0: the run's)")
    p.add_argument(
        "--round",
        type=int,
        default=0,
        help="the round whose lr (the run's schedule) and client sample the clients get "
        "(0: the round after the checkpoint's, at most the run's last)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.conf is None and args.checkpoint is None:
        p.error("give --conf (a fresh model) or --checkpoint (a trained one), or both")
    if args.partitions < 1 or args.clients < 0 or args.threads < 1 or args.round < 0:
        p.error("--partitions and --threads must be ≥ 1, --clients and --round ≥ 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        ckpt = read_checkpoint(args.checkpoint) if args.checkpoint is not None else None
        cfg = _config(args.conf, args.set, ckpt.config if ckpt is not None else {})
    except (ValueError, OSError) as err:  # ConfigError and CheckpointError are ValueErrors
        raise SystemExit(f"factor_average: {err}") from None
    if cfg.val_size <= 0:
        cfg = cfg.replace(val_size=5000)
    if ckpt is not None:
        arrays, server_round = ckpt.arrays, min(ckpt.round + 1, cfg.num_rounds)
    else:
        arrays, server_round = model_arrays(build_run_model(cfg)), 1
    server_round = args.round or server_round
    clients = args.clients or cfg.clients_per_round
    result = measure(cfg, arrays, server_round, args.partitions, clients)
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
