"""Paired-by-seed comparison: the t quantile, the differences, the verdicts, bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from simulations.paired import main, paired_differences, paired_section, paired_table, t_quantile


def summary(rows: dict[tuple[str, float, int], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"method": m, "beta": b, "seed": s, "accuracy": a} for (m, b, s), a in rows.items()]
    )


# maestro is ahead of fit at β = 1 on every seed by about 1 pp, and mixed at β = 0.2.
ROWS = {
    ("maestro", 0.2, 0): 88.0, ("maestro", 0.2, 1): 87.0, ("maestro", 0.2, 2): 89.5,
    ("maestro", 1.0, 0): 89.0, ("maestro", 1.0, 1): 88.1, ("maestro", 1.0, 2): 89.9,
    ("fit", 0.2, 0): 88.5, ("fit", 0.2, 1): 86.5, ("fit", 0.2, 2): 89.4,
    ("fit", 1.0, 0): 88.0, ("fit", 1.0, 1): 87.0, ("fit", 1.0, 2): 89.0,
}  # fmt: skip


@pytest.mark.parametrize(("df", "value"), [(1, 12.706), (2, 4.303), (4, 2.776), (30, 2.042)])
def test_t_quantile_matches_the_published_table(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-3)


def test_t_quantile_refuses_a_lower_tail_or_no_degrees_of_freedom():
    with pytest.raises(ValueError, match="p must be in"):
        t_quantile(0.4, 3)
    with pytest.raises(ValueError, match="df must be"):
        t_quantile(0.975, 0)


def test_differences_are_paired_by_seed_with_a_t_interval():
    low, full = paired_differences(summary(ROWS), "maestro", "fit")
    assert (low.beta, low.seeds) == (0.2, (0, 1, 2))
    assert low.differences == pytest.approx((-0.5, 0.5, 0.1))
    assert low.verdict == "not resolved"
    assert full.differences == pytest.approx((1.0, 1.1, 0.9))
    assert full.mean == pytest.approx(1.0) and full.std == pytest.approx(0.1)
    assert full.half_width == pytest.approx(4.303 * 0.1 / 3**0.5, abs=1e-3)
    assert full.verdict == "ahead"
    (back,) = [r for r in paired_differences(summary(ROWS), "fit", "maestro") if r.beta == 1]
    assert back.verdict == "behind"


def test_margin_moves_the_reference_down():
    (_, full) = paired_differences(summary(ROWS), "maestro", "fit", margin=2.0)
    assert full.mean == pytest.approx(3.0)
    assert "fit − 2 pp" in paired_table([full])


def test_only_shared_seeds_pair_and_one_seed_has_no_interval():
    rows = {k: v for k, v in ROWS.items() if not (k[0] == "fit" and k[2] > 0)}
    low, _ = paired_differences(summary(rows), "maestro", "fit")
    assert low.seeds == (0,) and low.verdict == "one seed: no interval"
    assert "| -0.50 |" in paired_table([low])  # no ± without an interval


def test_bad_summaries_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match=r"no rows of method 'fjord'.*\['fit', 'maestro'\]"):
        paired_differences(summary(ROWS), "maestro", "fjord")
    twice = pd.concat([summary(ROWS), summary({("fit", 1.0, 2): 80.0})])
    with pytest.raises(ValueError, match=r"more than once, e.g. \(fit, 1, 2\)"):
        paired_differences(twice, "maestro", "fit")
    with pytest.raises(ValueError, match=r"lack the columns \['seed'\]"):
        paired_differences(summary(ROWS).drop(columns="seed"), "maestro", "fit")
    disjoint = summary({("maestro", 1.0, 0): 1.0, ("fit", 1.0, 1): 1.0})
    with pytest.raises(ValueError, match="share no seed"):
        paired_differences(disjoint, "maestro", "fit")


def test_section_pairs_every_other_method_with_each_reference():
    rows = dict(ROWS)
    rows.update({("alone", 1.0, 7): 50.0})  # shares no seed: left out, not an error
    text = paired_section(summary(rows), ["fit", "absent"])
    assert "| maestro | fit | 1 | 3 | 0,1,2 |" in text and "| ahead |" in text
    assert "alone" not in text and "absent" not in text
    assert paired_section(summary(rows), ["absent"]) == ""


def test_cli_prints_the_table_and_rejects_unknown_methods(tmp_path, capsys):
    head, more = tmp_path / "a.csv", tmp_path / "b.csv"
    frame = summary(ROWS)
    frame[frame.seed < 2].to_csv(head, index=False)
    frame[frame.seed == 2].to_csv(more, index=False)  # later seeds, in a CSV of their own
    main([str(head), str(more), "--method", "maestro", "--against", "fit"])
    out = capsys.readouterr().out
    assert "| maestro | fit | 1 | 3 | 0,1,2 | +1.00 / +1.10 / +0.90 |" in out
    with pytest.raises(SystemExit):
        main([str(head), "--method", "maestro", "--against", "nope"])
    assert "no rows of method 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.csv"), "--method", "maestro", "--against", "fit"])
    assert "no such summary CSV" in capsys.readouterr().err


def test_cli_reads_a_committed_csv_beside_a_labelled_report_summary(tmp_path, capsys):
    """A committed results CSV holds labels in ``method`` and its accuracy in ``accuracy``; a
    report's summary holds the base method there, the label in ``label`` and the accuracy in
    ``accuracy-pct``. Read together, each row keeps its own label and accuracy."""
    committed, report = tmp_path / "committed.csv", tmp_path / "summary.csv"
    frame = summary(ROWS)
    frame[frame.method == "fit"].to_csv(committed, index=False)
    ours = frame[frame.method == "maestro"].rename(columns={"accuracy": "accuracy-pct"})
    ours = ours.assign(label="maestro+split")
    ours.to_csv(report, index=False)
    main([str(committed), str(report), "--method", "maestro+split", "--against", "fit"])
    out = capsys.readouterr().out
    assert "| maestro+split | fit | 1 | 3 | 0,1,2 | +1.00 / +1.10 / +0.90 |" in out


def test_cli_where_keeps_the_rows_of_one_model(tmp_path, capsys):
    path = tmp_path / "c.csv"
    frame = summary(ROWS).assign(model="cnn")
    other = summary(ROWS).assign(model="lenet5", accuracy=50.0)  # same keys, another model
    pd.concat([frame, other]).to_csv(path, index=False)
    main([str(path), "--where", "model=cnn", "--method", "maestro", "--against", "fit"])
    assert "+1.00 / +1.10 / +0.90" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(path), "--where", "arch=cnn", "--method", "maestro", "--against", "fit"])
    assert "give COLUMN=VALUE with a column of the summary" in capsys.readouterr().err


def test_repeats_of_a_method_not_compared_do_not_matter():
    trial = summary({("trial", 1.0, 0): 1.0})  # e.g. two trial runs of one seed at two lrs
    rows = pd.concat([summary(ROWS), trial, trial])
    assert len(paired_differences(rows, "maestro", "fit")) == 2


def test_section_names_a_pair_it_cannot_compare_instead_of_dropping_it():
    twice = pd.concat([summary(ROWS), summary({("maestro", 1.0, 0): 80.0})])
    text = paired_section(twice, ["fit"])
    assert "maestro against fit: not paired:" in text and "more than once" in text


def test_wide_table_gives_a_line_per_method_and_bolds_only_resolved_tiers(tmp_path, capsys):
    rows = dict(ROWS)
    rows[("solo", 1.0, 0)] = 90.0  # one seed at one tier: no interval, no β = 0.2 cell
    path = tmp_path / "s.csv"
    summary(rows).to_csv(path, index=False)
    main([str(path), "--method", "maestro,solo", "--against", "fit", "--wide"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| method − fit (pp) | seeds | β = 0.2 | β = 1 |"
    low = paired_differences(summary(ROWS), "maestro", "fit")[0]
    assert low.verdict == "not resolved"
    # β = 1: +1.00 / +1.10 / +0.90, so 1.00 ± 4.303 · 0.1 / √3: ahead, in bold
    mixed = f"{low.mean:+.2f} ± {low.half_width:.2f}"
    assert out[2] == f"| maestro | 0,1,2 | {mixed} | **+1.00 ± 0.25** |"
    assert out[3] == "| solo | 0 |  | +2.00 |"
    main([str(path), "--method", "maestro", "--against", "fit", "--margin", "2", "--wide"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| method − fit − 2 pp (pp) |")
    assert "**+3.00 ± 0.25**" in out[2]
