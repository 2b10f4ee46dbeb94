"""The targets judged on measured rows: met, missed, within timing noise."""

from __future__ import annotations

from simulations.bench import Row, targets


def rows() -> list[Row]:
    return [
        Row("cnn", "dense", 1.0, 100, 10.0, 1.0, 8.0),
        Row("cnn", "svd", 0.25, 30, 4.0, 0.9, 3.0, merged1_ms=0.8, merged64_ms=3.0),
        Row("cnn", "tucker", 0.25, 20, 6.0, 1.5, 5.0, merged1_ms=1.2, merged64_ms=5.0),
        Row("cnn", "width", 0.25, 30, 5.0, 0.5, 2.0),
        Row("cnn", "width@tucker", 0.25, 20, 5.0, 0.5, 2.0),
    ]


def test_targets_report_met_and_missed():
    overhead = [
        Row("cnn", "dense step", 1.0, 100, 10.0),
        Row("cnn", "factored step, no sampler", 1.0, 110, 11.0),
        Row("cnn", "maestro step: od", 1.0, 110, 12.0),
        Row("cnn", "maestro step: nested: sandwich (3 passes)", 1.0, 110, 22.0),
    ]
    freezing = [
        Row("cnn", "svd freeze=none", 0.25, 30, 10.0),
        Row("cnn", "svd freeze=stage", 0.25, 30, 8.0),
        Row("cnn", "svd every-factor-frozen", 0.25, 30, 9.5),  # an older run's reference row
    ]
    lines = targets(rows(), overhead, freezing)
    text = "\n".join(lines)
    assert "cnn svd β=0.25: train step 2.50× faster, inference b64 2.67× faster" in text
    assert "cnn tucker β=0.25: train step 1.67× faster" in text and "MISSED" in text
    assert (
        "MISSED by 1 beyond timing noise; above 1.00 among the others (factors kept): "
        "cnn tucker β=0.25 b1 (1.20)" in text
    )
    assert "MISSED by 1: cnn tucker β=0.25 (1.20×)" in text
    assert "maestro step: od: 1.20× a dense step" in text
    assert "against dense" not in text
    assert "sampling itself 1.09× the factored step; target ≤ 1.2×" in text
    # A multi-pass objective's extra passes are its own, not sampling overhead.
    assert "(3 passes): 2.20× a dense step (2.00× the factored step: the objective's own" in text
    assert "svd freeze=stage β=0.25: +25 %" in text
    assert "every-factor-frozen" not in text  # a reference, not a schedule: not judged


def test_slower_than_dense_is_judged_against_the_paired_dense_and_the_noise_floor():
    models = rows()
    models[0].extra.update({"self-ratio-1": 1.03, "self-ratio-64": 0.99})
    # tucker b1: 1.2 ms merged against 1.18 ms dense timed with it: 1.02, inside the 0.03 floor.
    models[2].extra["dense1-paired-ms"] = 1.18
    text = "\n".join(targets(models, [], []))
    assert (
        "with dense): met within timing noise; above 1.00 among the others (factors kept): "
        "cnn tucker β=0.25 b1 (1.02)" in text
    )
    assert "of the tiers in the dense form): cnn b1 0.03, cnn b64 0.01" in text
    models[2].extra["dense1-paired-ms"] = 1.0
    assert "MISSED by 1 beyond timing noise" in "\n".join(targets(models, [], []))
    models[2].merged1_ms = 0.9
    assert "(merged by measurement, timed interleaved with dense): met" in "\n".join(
        targets(models, [], [])
    )


def test_tiers_in_the_dense_form_are_timing_noise_and_widen_the_floor():
    """A tier with every factored layer merged runs the dense model's layers: its ratio to dense
    is noise, never a miss, and it measures the noise for the tiers that keep factors."""
    models = rows()
    models[0].extra.update({"self-ratio-1": 1.0, "self-ratio-64": 1.0})
    # svd b1 merged in full: 1.05 against dense; tucker b1 keeps a factor: 1.04 against dense.
    models[1].merged1_ms = 1.05
    models[1].extra.update({"layers": 2, "merged-layers-1": 2, "merged-layers-64": 1})
    models[2].merged1_ms = 1.04
    models[2].extra.update({"layers": 2, "merged-layers-1": 1, "merged-layers-64": 0})
    text = "\n".join(targets(models, [], []))
    assert "with dense): met within timing noise; 1 tier figures run the dense model's" in text
    assert "their ratios to dense 1.05–1.05 being timing noise" in text
    assert "(factors kept): cnn tucker β=0.25 b1 (1.04)" in text and "svd β=0.25 b1" not in text
    assert "cnn b1 0.05" in text
    # Without the dense-form tier, the noise floor is the dense model's own (0): a miss.
    models[1].extra["merged-layers-1"] = 1
    text = "\n".join(targets(models, [], []))
    assert "MISSED by 2 beyond timing noise" in text and "svd β=0.25 b1 (1.05)" in text


def test_targets_say_nothing_about_sections_not_measured():
    assert targets([], [], []) == []


def test_each_kind_is_judged_against_the_width_tier_of_its_own_macs():
    models = [
        *rows()[:3],
        Row("cnn", "width", 0.25, 30, 3.0, 0.5, 2.0),  # matched to svd: tucker is not judged by it
        Row("cnn", "width@tucker", 0.25, 20, 7.0, 0.5, 2.0),
        Row("cnn", "tucker", 1.0, 190, 18.0, 1.5, 5.0),  # above dense MACs: no width tier
    ]
    (line,) = [x for x in targets(models, [], []) if "width tier" in x]
    assert "MISSED by 1: cnn svd β=0.25 (1.33×)" in line
    assert "tucker β=0.25" not in line
    assert "against dense: cnn tucker β=1 (1.80×)" in line
