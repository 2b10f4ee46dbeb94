"""How a figure is taken: the timer's median and its interleaved calls."""

from __future__ import annotations

from simulations import bench
from simulations.bench import Timer


def test_timer_takes_the_median_after_warmup(monkeypatch):
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])  # three timed calls: 1, 3, 2 s
    monkeypatch.setitem(bench.CLOCKS, "fake", lambda: next(ticks))
    calls = []
    assert Timer(warmup=2, repeats=3, clock="fake")(lambda: calls.append(1)) == 2000.0
    assert len(calls) == 5


def test_timer_interleaves_its_functions(monkeypatch):
    monkeypatch.setitem(bench.CLOCKS, "fake", iter(range(100)).__next__)
    order = []
    got = Timer(warmup=1, repeats=2, clock="fake").interleaved(
        [lambda: order.append("a"), lambda: order.append("b")]
    )
    assert order == ["a", "b"] * 3
    assert got == [1000.0, 1000.0]  # each timed call spans one tick
