"""The ServerApp's plot: skipped without matplotlib (a light install); whole round ticks."""

import sys

from server.report import plot_accuracy


def test_plot_is_skipped_without_matplotlib(tmp_path, monkeypatch):
    # None in sys.modules makes `import matplotlib` raise ImportError, as when it is missing.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    rows = [{"round": 1, "tiers": {"1": {"accuracy": 0.5}}}]
    assert plot_accuracy(tmp_path, rows) is None
    assert not (tmp_path / "accuracy.png").exists()


def test_plot_has_whole_round_ticks_and_its_legend_beside_the_axes(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    rows = [{"round": r, "tiers": {"0.5": {"accuracy": 0.1 * r}, "1": {"accuracy": 0.2 * r}}}
            for r in (1, 3)]  # fmt: skip
    plot_accuracy(tmp_path, rows)
    (fig,) = saved
    (ax,) = fig.axes
    fig.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
