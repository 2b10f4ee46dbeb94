"""The same-seed digest: equal runs print equal lines; one changed bit changes the line."""

import json

import numpy as np
import pytest

from simulations.experiments.same_seed import digests, harness_command, main


def _run(root, name, arrays, accuracy):
    run = root / "runs" / name
    run.mkdir(parents=True)
    np.savez(run / "checkpoint.npz", **{f"arrays/{k}": v for k, v in arrays.items()}, meta=[1])
    rows = [{"round": 1}, {"round": 2, "tiers": {"0.2": {"accuracy": accuracy}}}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_equal_runs_digest_equal_and_a_changed_bit_does_not(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    _run(tmp_path / "a", "maestro-seed0", {"w": w}, 0.5)
    _run(tmp_path / "b", "maestro-seed0", {"w": w.copy()}, 0.5)
    changed = w.copy()
    changed.view(np.uint32)[0, 0] ^= 1  # the last bit of one float
    _run(tmp_path / "c", "maestro-seed0", {"w": changed}, 0.5)
    (a,), (b,), (c,) = (digests(tmp_path / x) for x in "abc")
    assert a == b and a != c
    assert a.startswith("maestro-seed0 round 2 sha256 ") and a.endswith("0.2:0.5")


def test_the_harness_command_is_the_short_demo_run(tmp_path):
    command = harness_command(tmp_path, "maestro")
    assert command[1:3] == ["-m", "simulations.run"]
    assert "num-rounds=2" in command and command[command.index("--out") + 1] == str(tmp_path)


def test_a_folder_without_runs_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no run folder"):
        main(["--digest-only", str(tmp_path)])
