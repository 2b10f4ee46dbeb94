"""The report's timing tables: where a round's wall time goes (compute, client setup, dispatch,
waiting for the slowest worker, evaluation, aggregation, overhead) and each worker's phases."""

from __future__ import annotations


def test_timing_table_splits_wall_time(tmp_path):
    from simulations.report import Run, timing_table

    rows = [
        {
            "round": r,
            "wall-seconds": 10.0,
            "eval-seconds": 2.0,
            "aggregate-seconds": 0.5,
            "virtual-seconds": 100.0,
            "virtual-clock": 100.0 * r,
            "clients": [{"train-seconds": 3.0}, {"train-seconds": 3.0}],
            "tiers": {"0.5": {"accuracy": 0.5 + 0.2 * r}, "1": {"accuracy": 0.7 + 0.1 * r}},
        }
        for r in (1, 2)
    ]
    run = Run(tmp_path, {"method": "maestro", "seed": 0}, rows)
    table = timing_table([run], concurrency=2, target=0.85)
    line = next(x for x in table.splitlines() if x.startswith("| maestro"))
    # per round: wall 10, compute 6/2 = 3, eval 2, aggregation 0.5 (5 %), overhead 4.5 (45 %)
    # 85 %: the full tier at round 2 (200 s), the smallest at round 2 (0.9 ≥ 0.85, 200 s)
    assert (
        line
        == "| maestro | 10.00 | 3.00 | – | – | – | 2.00 | 5.00 | – | 45.0 | 100.0 | 0.06 / 0.06 |"
    )


def test_timing_table_splits_the_overhead_into_client_setup_and_dispatch(tmp_path):
    from simulations.report import Run, timing_table

    row = {
        "round": 1,
        "wall-seconds": 10.0,
        "train-seconds": 5.0,  # the training phase
        "eval-seconds": 1.0,
        "fed-eval-seconds": 1.0,
        "aggregate-seconds": 0.5,
        "virtual-seconds": 0.0,
        "virtual-clock": 0.0,
        "clients": [
            {"train-seconds": 3.0, "handle-seconds": 3.5},
            {"train-seconds": 3.0, "handle-seconds": 4.5},
        ],
        "tiers": {"1": {"accuracy": 0.9}},
    }
    table = timing_table([Run(tmp_path, {"method": "fjord", "seed": 0}, [row])], 2, 0.85)
    line = next(x for x in table.splitlines() if x.startswith("| fjord"))
    # compute 6/2 = 3, setup (8-6)/2 = 1, eval 1+1 = 2, agg 0.5 (5 %), no timestamps: no
    # dispatch or waiting, overhead 10 - 3 - 2 - 0.5 = 4.5 (45 %)
    assert line.startswith("| fjord | 10.00 | 3.00 | 1.00 | – | – | 2.00 | 5.00 | – | 45.0 |")


def test_phase_profile_lays_the_clients_out_per_worker(tmp_path):
    from simulations.report import Run, phase_profile_table

    def client(pid, start, handle, train):
        return {
            "worker-pid": pid,
            "handle-start": 100.0 + start,
            "handle-seconds": handle,
            "train-seconds": train,
        }

    row = {
        "round": 1,
        "train-start": 100.0,
        "train-seconds": 10.0,
        # worker 7: starts at 1, busy 1-4 and 5-8 (gap 1), ends 2 s before the phase does;
        # worker 9: starts at 0.5, busy 0.5-9.5.
        "clients": [client(7, 5.0, 3.0, 2.5), client(9, 0.5, 9.0, 8.0), client(7, 1.0, 3.0, 2.0)],
        "tiers": {"1": {"accuracy": 0.9}},
    }
    table = phase_profile_table([Run(tmp_path, {"method": "maestro", "seed": 0}, [row])])
    line = next(x for x in table.splitlines() if x.startswith("| maestro"))
    # means over the two workers: busy (6+9)/2, training (4.5+8)/2, before (1+0.5)/2,
    # between (1+0)/2, after (2+0.5)/2
    assert line == "| maestro | 10.00 | 7.50 | 6.25 | 0.75 | 0.50 | 1.25 |"
    old = {**row, "clients": [{"train-seconds": 1.0}]}  # recorded before the timestamps
    assert phase_profile_table([Run(tmp_path, {"method": "maestro", "seed": 0}, [old])]) == ""


def test_waiting_for_the_slowest_worker_is_apart_from_the_overhead(tmp_path):
    from simulations.report import Run, timing_table

    def client(pid, start, handle, train):
        return {"worker-pid": pid, "handle-start": 100.0 + start, "handle-seconds": handle,
                "train-seconds": train}  # fmt: skip

    row = {
        "round": 1,
        "wall-seconds": 12.0,
        "train-start": 100.0,
        "train-seconds": 10.0,
        "eval-seconds": 1.0,
        "aggregate-seconds": 0.5,
        "virtual-seconds": 0.0,
        "virtual-clock": 0.0,
        "clients": [client(7, 5.0, 3.0, 2.5), client(9, 0.5, 9.0, 8.0), client(7, 1.0, 3.0, 2.0)],
        "tiers": {"1": {"accuracy": 0.9}},
    }
    table = timing_table([Run(tmp_path, {"method": "maestro", "seed": 0}, [row])], 2, 0.85)
    line = next(x for x in table.splitlines() if x.startswith("| maestro"))
    # compute 12.5/2 = 6.25, setup (15-12.5)/2 = 1.25; per worker before+between (2, 0.5) and
    # after (2, 0.5): dispatch 1.25, waiting 1.25 (10.4 %); overhead 12-6.25-1-0.5-1.25 = 3 (25 %)
    assert line.startswith(
        "| maestro | 12.00 | 6.25 | 1.25 | 1.25 | 1.25 | 1.00 | 4.17 | 10.4 | 25.0 |"
    ), line
