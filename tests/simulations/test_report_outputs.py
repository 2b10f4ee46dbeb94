"""What the report writes: units in column names, variant columns, figure formats and layout,
the paired-difference plot and the warning for a tier no client took part in."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from simulations.paired import paired_differences, t_quantile
from simulations.report import load_runs, plots, runs_frame, summary_frame, write_report
from simulations.report.runs import tiers_without_clients
from tests.simulations.report_runs import FINAL, fake_run


@pytest.fixture
def folders(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    return [fake_run(runs, m, s) for m, s in FINAL]


def _warm_up(folder, **settings) -> None:
    config = folder / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **settings}))


def test_csvs_give_accuracy_in_percent_and_variant_settings_as_columns(folders):
    _warm_up(folders[1], **{"dense-warmup": 0.6, "lasso": 0.03})
    runs = load_runs(folders)
    results = runs_frame(runs)
    assert "accuracy" not in results.columns and "accuracy-last" not in results.columns
    row = results[(results.run == "maestro-seed0") & (results["round"] == 3)]
    assert row["accuracy-pct"].tolist() == pytest.approx([70.0, 86.0])
    summary = summary_frame(runs, last_k=1)
    warm = summary[summary.run == "maestro-seed1"]
    # The base method, the variant and its settings apart; the others keep the defaults.
    assert set(warm.method) == {"maestro"} and set(warm.variant) == {"warmup+gl0.03"}
    assert set(warm.label) == {"maestro+warmup+gl0.03"}  # the name the report's tables show
    assert set(warm["dense-warmup"]) == {0.6} and set(warm.lasso) == {0.03}
    plain = summary[summary.run == "maestro-seed0"]
    assert set(plain.variant) == {""} and set(plain["dense-warmup"]) == {0.0}
    assert set(plain["conv-factorization"]) == {"svd"}
    assert warm["accuracy-pct"].tolist() == pytest.approx([74.0, 88.0])


def test_paired_reads_the_new_summary_by_label_and_old_ones_by_their_names(folders, tmp_path):
    _warm_up(folders[1], **{"dense-warmup": 0.6})
    path = tmp_path / "s.csv"
    summary_frame(load_runs(folders), last_k=1).to_csv(path, index=False)
    new = pd.read_csv(path)
    (full,) = [r for r in paired_differences(new, "maestro", "fedavg-fit") if r.beta == 1]
    assert full.seeds == (0,) and full.mean == pytest.approx(86.0 - 90.0)
    (warm,) = [r for r in paired_differences(new, "maestro+warmup", "fedavg-fit") if r.beta == 1]
    assert warm.seeds == (1,) and warm.mean == pytest.approx(88.0 - 90.0)
    # A summary written before: labels in `method`, the same % under `accuracy`.
    old = new.drop(columns=["label", "variant"]).rename(columns={"accuracy-pct": "accuracy"})
    old["method"] = new["label"]
    (again,) = [r for r in paired_differences(old, "maestro+warmup", "fedavg-fit") if r.beta == 1]
    assert again.differences == warm.differences


def test_t_quantile_comes_from_scipy():
    from scipy import stats

    assert t_quantile(0.975, 7) == stats.t.ppf(0.975, 7)


def test_time_unit_fits_the_run():
    assert plots.time_unit(90.0) == (1.0, "s")
    assert plots.time_unit(1800.0) == (60.0, "min")
    assert plots.time_unit(5 * 3600.0) == (3600.0, "h")


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would save, kept open instead."""
    kept = []

    def keep(fig, path):
        kept.append(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    yield kept
    for fig in kept:
        plt.close(fig)


def _legend_is_right_of_every_panel(fig) -> bool:
    fig.canvas.draw()
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    right = max(ax.get_window_extent().x1 for ax in fig.axes)
    return legend.get_window_extent().x0 >= right


def test_round_ticks_are_integers_and_legends_sit_outside(folders, tmp_path, figures):
    runs = load_runs(folders)
    plots.plot_accuracy_per_round(runs, tmp_path / "r.png")
    plots.plot_accuracy_vs_macs(runs, tmp_path / "m.png")
    plots.plot_bytes_per_round(runs, tmp_path / "b.png")
    plots.plot_accuracy_vs_virtual_time(runs, tmp_path / "v.png")
    rounds, _, _, virtual = figures
    for ax in rounds.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert all(_legend_is_right_of_every_panel(fig) for fig in figures)
    # The clock reaches 301 s: minutes, not hours.
    assert virtual.axes[0].get_xlabel() == "virtual clock (min)"
    assert max(virtual.axes[0].lines[0].get_xdata()) == pytest.approx(300.5 / 60)


def test_figures_are_written_as_png_and_pdf(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4], label="a")
    plots.legend_outside(ax)
    path = plots.save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"


def test_report_plots_the_paired_difference_per_tier(folders, tmp_path, monkeypatch):
    bars = []
    monkeypatch.setattr(
        plots.plt.Axes, "errorbar", lambda self, x, y, yerr, **kw: bars.append((x, y, yerr))
    )
    write_report(folders, tmp_path / "out", "t", last_k=1, paired_against=["fedavg-fit"])
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"]({plots.PAIRED_PLOT})" in text
    assert (tmp_path / "out" / "paired-differences.pdf").exists()
    # maestro − fedavg-fit per tier: β=0.2: +10, +12; β=1: −4, −2; half the 95 % t interval
    # with one degree of freedom is t(0.975, 1) · std / √2 = 12.706 · √2 / √2.
    ((x, means, errs),) = [b for b in bars if isinstance(b[1], list)]  # the others: a point each
    assert means == pytest.approx([11.0, -3.0])
    assert errs == pytest.approx([t_quantile(0.975, 1)] * 2)
    assert x[0] < x[1]  # tiers in budget order


def test_a_tier_no_client_took_part_in_is_warned_about(folders, tmp_path, capsys):
    runs = load_runs(folders)
    # The fake FedAvg runs only ever sent work to tier 1; maestro's to both tiers.
    assert tiers_without_clients([r for r in runs if r.method == "fedavg-fit"]) == ["0.2"]
    assert tiers_without_clients([r for r in runs if r.method == "maestro"]) == []
    write_report(folders, tmp_path / "out", "t", last_k=1)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "**Warning:** fedavg-fit: no client of tier β=0.2 took part in any round" in text
    assert "maestro: no client" not in text
    assert "warning: fedavg-fit: no client of tier β=0.2" in capsys.readouterr().err


def test_no_warning_when_the_runs_recorded_no_client_tiers(folders):
    runs = load_runs(folders)
    bare = [type(r)(r.folder, r.config, tuple({**row, "clients": []} for row in r.rows))
            for r in runs]  # fmt: skip
    assert tiers_without_clients(bare) == []
