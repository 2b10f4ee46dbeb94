"""A run's progress line and whether it ever trained, read off its metrics rows."""

from simulations.harness.progress import never_trained, progress_line
from tests.simulations.harness.runs import metrics_row


def test_progress_shows_start_up_then_rounds_with_time_left_from_round_times():
    assert progress_line("m", [], 50, 0, 42.4) == (
        "[m] starting up (SuperLink, simulation engine, clients): 42 s"
    )
    # Resumed after round 4: old rows do not count as progress of this invocation.
    old = [metrics_row(r, wall=99.0) for r in range(1, 5)]
    assert "starting up" in progress_line("m", old, 50, 4, 5.0)
    # 6 new rounds of 20 s each (start-up excluded), 40 rounds left: 13.3 min.
    rows = old + [metrics_row(r, wall=20.0) for r in range(5, 10)]
    rows.append(metrics_row(10, wall=20.0, acc={"0.2": 0.75, "0.6": 0.7, "1": 0.8}))
    assert progress_line("m", rows, 50, 4, 999.0) == (
        "[m] round 10/50 | β=0.2: 75.00%, β=1: 80.00% | 20.0 s/round, ~13.3 min left"
    )


def test_never_trained():
    assert never_trained([])
    assert never_trained([metrics_row(1, clients=0), metrics_row(2, clients=0)])
    assert never_trained([{"round": 1, "valid-replies": 0, "no-valid-reply": True}])
    assert not never_trained([metrics_row(1, clients=0), metrics_row(2, clients=1)])
    assert not never_trained([{"round": 1, "valid-replies": 3}])
