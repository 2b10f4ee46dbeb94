"""The ServerApp's plot is optional: without matplotlib (a light install) it is skipped."""

import sys

from server.report import plot_accuracy


def test_plot_is_skipped_without_matplotlib(tmp_path, monkeypatch):
    # None in sys.modules makes `import matplotlib` raise ImportError, as when it is missing.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    rows = [{"round": 1, "tiers": {"1": {"accuracy": 0.5}}}]
    assert plot_accuracy(tmp_path, rows) is None
    assert not (tmp_path / "accuracy.png").exists()
