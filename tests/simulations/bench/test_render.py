"""The report's tables."""

from __future__ import annotations

from simulations.bench import tier_table
from tests.simulations.bench.test_verdict import rows


def test_tier_table_ratios():
    table = tier_table(rows())
    assert "| svd | 0.25 | 0.30 | 4.00 | 0.40 |" in table
    assert table.count("\n") == 6  # header, rule and one line a row
