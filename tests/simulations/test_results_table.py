"""The README's result tables: made from headline CSVs; the README matches its CSVs."""

from pathlib import Path

import pandas as pd
import pytest

from simulations.results_table import check_file, main, results_table

ROOT = Path(__file__).resolve().parents[2]


def _csv(tmp_path: Path, rows: list[tuple], name: str = "h.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows, columns=["method", "beta", "seed", "accuracy"]).to_csv(path, index=False)
    return path


def test_cell_is_mean_and_t_half_width(tmp_path):
    # Two seeds, 80 and 82: mean 81, std sqrt(2), half = t(0.975, 1) * sqrt(2) / sqrt(2) = 12.7.
    path = _csv(tmp_path, [("m", 0.5, 0, 80.0), ("m", 0.5, 1, 82.0)])
    table = results_table([path], ["m"])
    assert "| m | 81.0 ± 12.7 | 0,1 |" in table
    assert table.splitlines()[0] == "| method | β = 0.5 | seeds |"


def test_one_seed_shows_a_dash_not_zero(tmp_path):
    path = _csv(tmp_path, [("m", 1.0, 3, 45.26)])
    assert "| m | 45.3 ± – | 3 |" in results_table([path], ["m"])


def test_rows_follow_the_requested_order_and_files_join(tmp_path):
    a = _csv(tmp_path, [("b", 1.0, 0, 50.0), ("a", 1.0, 0, 40.0)], "a.csv")
    b = _csv(tmp_path, [("a", 1.0, 1, 42.0)], "b.csv")
    lines = results_table([a, b], ["a", "b"]).splitlines()
    assert lines[2].startswith("| a | 41.0 ± ") and lines[2].endswith("| 0,1 |")
    assert lines[3] == "| b | 50.0 ± – | 0 |"


def test_reads_todays_summary_columns(tmp_path):
    path = tmp_path / "summary.csv"
    pd.DataFrame(
        {
            "method": ["maestro"] * 2,
            "label": ["maestro+warmup"] * 2,
            "beta": [1.0, 1.0],
            "seed": [0, 1],
            "accuracy-pct": [50.0, 52.0],
        }
    ).to_csv(path, index=False)
    assert "| maestro+warmup | 51.0 ± 12.7 | 0,1 |" in results_table([path], ["maestro+warmup"])


def test_refuses_unknown_method_and_duplicate_seed(tmp_path):
    path = _csv(tmp_path, [("m", 1.0, 0, 50.0)])
    with pytest.raises(ValueError, match=r"no rows for method\(s\) \['x'\]; the files hold: m"):
        results_table([path], ["x"])
    with pytest.raises(ValueError, match="given twice"):
        results_table([path, path], ["m"])


def test_check_file_finds_a_stale_table(tmp_path):
    path = _csv(tmp_path, [("m", 1.0, 0, 50.0)])
    good = results_table([path], ["m"])
    doc = tmp_path / "doc.md"
    doc.write_text(f"x\n<!-- results-table: h.csv | m -->\n{good}<!-- end results-table -->\n")
    assert check_file(doc, root=tmp_path) == []
    doc.write_text(doc.read_text().replace("50.0", "51.0"))
    (problem,) = check_file(doc, root=tmp_path)
    assert "differs from its CSVs" in problem and "50.0 ± –" in problem


def test_cli_check_exits_nonzero_on_a_file_without_tables(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("no tables\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--check", str(doc)])
    assert exit_.value.code == 1
    assert "no results-table mark" in capsys.readouterr().err


def test_readme_tables_match_their_committed_csvs():
    assert check_file(ROOT / "README.md", root=ROOT) == []
