import math

import pytest

from maestro_common.ml.schedules import lr_factor, round_lr


def test_cosine_decays_from_one_to_zero():
    assert lr_factor("cosine", 0.0) == 1.0
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    values = [lr_factor("cosine", t / 10) for t in range(11)]
    assert values == sorted(values, reverse=True)


def test_step_and_constant():
    assert [lr_factor("step", t) for t in (0.0, 0.49, 0.5, 0.74, 0.75, 1.0)] == [
        1.0,
        1.0,
        0.1,
        0.1,
        0.01,
        0.01,
    ]
    assert lr_factor("constant", 0.9) == 1.0


def test_round_lr_starts_at_the_base_and_never_reaches_zero():
    assert round_lr(0.05, "cosine", 1, 100) == 0.05
    last = round_lr(0.05, "cosine", 100, 100)
    assert 0 < last < 0.05 * 0.001
    assert round_lr(0.05, "cosine", 51, 100) == pytest.approx(
        0.05 * 0.5 * (1 + math.cos(0.5 * math.pi))
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: lr_factor("linear", 0.1), "unknown lr schedule"),
        (lambda: lr_factor("cosine", 1.5), "progress"),
        (lambda: round_lr(0.1, "cosine", 0, 10), "server_round"),
        (lambda: round_lr(0.1, "cosine", 11, 10), "server_round"),
    ],
)
def test_bad_schedule_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
