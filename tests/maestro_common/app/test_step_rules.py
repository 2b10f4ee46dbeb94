"""``auto`` resolution of Maestro's transmission and nested step."""

import pytest

from maestro_common.app.step_rules import resolve_sub_models, resolve_transmission


@pytest.mark.parametrize(
    ("transmission", "factorization", "expected"),
    [
        ("auto", "svd", "collective"),
        ("auto", "tucker", "prefix"),
        ("prefix", "svd", "prefix"),
        ("collective", "tucker", "collective"),
    ],
)
def test_resolve_transmission(transmission, factorization, expected):
    assert resolve_transmission(transmission, factorization) == expected


@pytest.mark.parametrize(
    ("sub_models", "transmission_rule", "expected"),
    [
        ("auto", "collective", "split"),
        ("auto", "prefix", "sandwich"),
        ("sandwich", "collective", "sandwich"),
        ("alternate", "prefix", "alternate"),
    ],
)
def test_resolve_sub_models(sub_models, transmission_rule, expected):
    assert resolve_sub_models(sub_models, transmission_rule) == expected
