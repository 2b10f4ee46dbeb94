from server.clock import training_macs
from server.policy import VirtualClockPolicy
from server.profiles import TierProfile
from server.rounds import NodeInfo

FAST = TierProfile(beta=1.0, speed=1e9, down_bps=1e6, up_bps=1e6, availability=1.0)
SLOW = TierProfile(beta=0.5, speed=1e8, down_bps=1e5, up_bps=1e5, availability=0.5)


def cost(beta: float) -> tuple[int, int, int]:
    # forward MACs per example and bytes both ways grow with the budget
    return int(1e6 * beta), int(1e6 * beta), int(1e6 * beta)


def row(node: int, beta: float, n: int = 100) -> dict:
    _, down, up = cost(beta)
    return {
        "node-id": node,
        "rank-fraction": beta,
        "tier-beta": beta,
        "num-examples": n,
        "bytes-down": down,
        "bytes-up": up,
    }


def test_client_times_and_round_duration_without_deadline():
    policy = VirtualClockPolicy([FAST, SLOW], cost, local_epochs=1, seed=0)
    kept, duration = policy.admit(1, rows := [row(1, 1.0), row(2, 0.5)])
    # fast: 3·1e6·100 MACs / 1e9 + 1e6/1e6 + 1e6/1e6 = 0.3 + 2 = 2.3 s
    # slow: 3·5e5·100 / 1e8 + 5e5/1e5 + 5e5/1e5 = 1.5 + 10 = 11.5 s
    assert kept == {1, 2}
    assert abs(rows[0]["virtual-seconds"] - 2.3) < 1e-9
    assert abs(rows[1]["virtual-seconds"] - 11.5) < 1e-9
    assert abs(duration - 11.5) < 1e-9
    assert training_macs(10, 5, 2) == 300


def test_deadline_drops_stragglers_and_round_ends_at_the_last_kept():
    policy = VirtualClockPolicy([FAST, SLOW], cost, local_epochs=1, seed=0, deadline=5.0)
    kept, duration = policy.admit(1, rows := [row(1, 1.0), row(2, 0.5)])
    assert kept == {1} and abs(duration - 2.3) < 1e-9
    assert [r["dropped"] for r in rows] == [False, True]


def test_fit_policy_lowers_the_budget_to_meet_the_deadline():
    slow_full = TierProfile(beta=1.0, speed=1e8, down_bps=1e5, up_bps=1e5, availability=1)
    tiers = [
        TierProfile(beta=b, speed=1e8, down_bps=1e5, up_bps=1e5, availability=1)
        for b in (0.25, 0.5)
    ] + [slow_full]
    policy = VirtualClockPolicy(
        tiers,
        cost,
        local_epochs=1,
        seed=0,
        deadline=6.0,
        deadline_policy="fit",
    )
    info = NodeInfo(beta=1.0, tier=2, partition=0)
    # Before its first reply the node's examples are unknown (0): only transfers count.
    assert policy.budget(1, 7, info) == 0.25  # β=0.5: 10 s of transfer; β=0.25: 5 s ≤ 6
    policy.admit(1, [row(7, 1.0, n=100)])  # the policy learns its 100 examples
    # β=1: 3 + 20 = 23 s; β=0.5: 11.5 s; β=0.25: 0.75 + 5 = 5.75 s ≤ 6
    assert policy.budget(2, 7, info) == 0.25
    policy.admit(2, [row(7, 0.25, n=1000)])  # 1000 examples: β=0.25 takes 7.5 + 5 s
    assert policy.budget(3, 7, info) == 0.25  # nothing fits: the smallest budget
    drop = VirtualClockPolicy(tiers, cost, local_epochs=1, seed=0, deadline=6.0)
    assert drop.budget(1, 7, info) == 1.0


def test_availability_is_a_seeded_draw_per_partition():
    policy = VirtualClockPolicy([FAST, SLOW], cost, local_epochs=1, seed=3)
    info = NodeInfo(beta=0.5, tier=1, partition=4)
    draws = [policy.available(r, node_id=99, info=info) for r in range(400)]
    again = [policy.available(r, node_id=12345, info=info) for r in range(400)]
    assert draws == again  # keyed by partition, not by Flower's node id
    assert 0.4 < sum(draws) / len(draws) < 0.6
    assert all(policy.available(r, 1, NodeInfo(1.0, 0, 0)) for r in range(50))


def test_a_round_of_fixed_steps_is_priced_from_the_examples_its_steps_see():
    # 100 examples in batches of 32: 4 batches an epoch; 6 steps = one epoch + 2 batches of 32.
    steps = VirtualClockPolicy(
        [FAST], cost, local_epochs=1, seed=0, steps=lambda b, n, own: 6, batch_size=32
    )
    assert steps.train_macs(1.0, 1e6, 100) == 3 * 1e6 * (100 + 64)
    epochs = VirtualClockPolicy([FAST], cost, local_epochs=2, seed=0)
    assert epochs.train_macs(1.0, 1e6, 100) == 3 * 1e6 * 200


def test_the_clock_prices_a_tier_at_its_methods_step_not_one_pass():
    from maestro_common.app.config import RunConfig
    from maestro_common.app.cost import tier_step_macs
    from server.model_ops import ModelOps

    for method in ("maestro", "fjord"):
        cfg = RunConfig(method=method, model="lenet5", tier_fractions="0.25,0.5,1.0")
        ops = ModelOps(cfg)
        arrays = ops.initial_arrays()
        for beta in cfg.tiers:
            # What a client of the tier reports it runs (tests/maestro_common/app/test_cost.py).
            assert ops.step_macs(arrays, beta) == tier_step_macs(cfg, beta)
    # Maestro's nested step at β = 1: the prefix and its sandwich sub-models, over 1.5 passes;
    # the default (split) runs those passes on thirds of the batch, under one pass.
    maestro = ModelOps(cfg.replace(method="maestro", sub_models="sandwich"))
    start = maestro.initial_arrays()
    assert maestro.step_macs(start, 1.0) > 1.5 * maestro.forward_macs(start, 1.0)
    split = ModelOps(cfg.replace(method="maestro"))
    start = split.initial_arrays()
    assert 0.5 * split.forward_macs(start, 1.0) < split.step_macs(start, 1.0)
    assert split.step_macs(start, 1.0) < split.forward_macs(start, 1.0)
