from simulations.time_to_accuracy import time_to_accuracy


def test_time_to_accuracy():
    rows = [
        {"round": 1, "virtual-clock": 10.0},
        {"round": 2, "virtual-clock": 20.0, "tiers": {"0.2": {"accuracy": 0.5}}},
        {"round": 3, "virtual-clock": 30.0, "tiers": {"0.2": {"accuracy": 0.75}}},
        {"round": 4, "virtual-clock": 40.0, "tiers": {"0.2": {"accuracy": 0.8}}},
    ]
    assert time_to_accuracy(rows, "0.2", 0.7) == 30.0
    assert time_to_accuracy(rows, "0.2", 0.75) == 30.0  # reaching exactly the target counts
    assert time_to_accuracy(rows, "0.2", 0.5) == 20.0
    assert time_to_accuracy(rows, "0.2", 0.9) is None
    assert time_to_accuracy(rows, "1", 0.1) is None
