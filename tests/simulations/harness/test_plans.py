"""New, resumed or skipped runs, decided from the folder's records; other requests refused."""

import pytest

from simulations import provenance
from simulations.harness.errors import HarnessError
from simulations.harness.plans import Plan, check_folder, plan_run
from tests.simulations.harness.runs import harness_request, recorded_run


def test_same_request_is_skipped_or_resumed_another_is_refused(tmp_path):
    folder = tmp_path / "maestro-seed0"
    assert plan_run(folder, harness_request(), 3).action == "new"
    recorded_run(folder, range(1, 3), harness_request())
    assert plan_run(folder, harness_request(), 3).action == "resume"
    assert (
        plan_run(folder, harness_request(**{"num-rounds": 9}), 9).done == 2
    )  # more rounds: resume
    with pytest.raises(HarnessError, match=r"run-config.lr: 0.1 -> 0.2"):
        plan_run(folder, harness_request(lr=0.2), 3)
    other_fed = provenance.make_request({"num-rounds": 3, "lr": 0.1}, {"num-supernodes": 20})
    with pytest.raises(HarnessError, match=r"federation\.num-supernodes: 10 -> 20"):
        plan_run(folder, other_fed, 3)
    with pytest.raises(HarnessError, match="holds 2 rounds but num-rounds=1"):
        plan_run(folder, harness_request(**{"num-rounds": 1}), 1)
    recorded_run(tmp_path / "done", range(1, 4), harness_request())
    assert plan_run(tmp_path / "done", harness_request(), 3).action == "skip"
    recorded_run(tmp_path / "old", range(1, 4), None)
    with pytest.raises(HarnessError, match=r"without a harness\.json"):
        plan_run(tmp_path / "old", harness_request(), 3)


def test_defaults_count_as_settings(tmp_path):
    # An explicit value equal to the default is the same request; a changed default is not.
    assert not provenance.differences(harness_request(), harness_request(momentum=0.9))
    assert provenance.differences(harness_request(), harness_request(momentum=0.5)) == [
        "run-config.momentum: 0.9 -> 0.5"
    ]


def test_a_key_older_records_lack_reads_as_its_default():
    # A run recorded before compute-match existed ran as its default does now; a new value
    # for it is still a different request.
    old = harness_request()
    del old["run-config"]["compute-match"]
    assert not provenance.differences(old, harness_request())
    assert provenance.differences(old, harness_request(**{"compute-match": "fjord"})) == [
        "run-config.compute-match: '' -> 'fjord'"
    ]


def test_a_moved_out_folder_holds_the_same_runs(tmp_path):
    # Where the folder lies is not a setting: a copied or moved --out is skipped, not refused
    # (records written before output-dir was volatile hold it; it is ignored there too).
    old = harness_request()
    old["run-config"]["output-dir"] = "/elsewhere/runs"
    assert not provenance.differences(
        old, harness_request(**{"output-dir": str(tmp_path / "runs")})
    )


def test_other_runs_in_the_folder_must_share_the_settings(tmp_path):
    runs = tmp_path / "runs"
    recorded_run(runs / "fjord-seed0", range(1, 4), harness_request(method="fjord"))
    check_folder(runs, harness_request(), {"maestro-seed0"})  # another method and seed: fine
    with pytest.raises(HarnessError, match="fjord-seed0 in this --out has other settings"):
        check_folder(runs, harness_request(lr=0.5), {"maestro-seed0"})


def test_tuned_lrs_may_differ_between_methods_in_one_folder(tmp_path):
    runs = tmp_path / "runs"
    recorded_run(runs / "fjord-seed0", range(1, 4), harness_request(method="fjord", lr=0.05))
    with pytest.raises(HarnessError, match=r"run-config\.lr"):
        check_folder(runs, harness_request(lr=0.1), {"maestro-seed0"})
    check_folder(runs, harness_request(lr=0.1), {"maestro-seed0"}, tuned_lr=True)
    with pytest.raises(HarnessError, match="momentum"):
        check_folder(runs, harness_request(lr=0.1, momentum=0.5), {"maestro-seed0"}, tuned_lr=True)


def test_a_folder_with_rounds_out_of_order_or_damaged_is_refused_by_name(tmp_path):
    # What two writers on one folder left (issue 30): a round twice, out of order.
    folder = tmp_path / "twice"
    recorded_run(folder, [1, 2, 3, 2], harness_request())
    with pytest.raises(HarnessError, match=r"line 4 records round 2 after round 3") as err:
        plan_run(folder, harness_request(), 3)
    assert str(folder / "metrics.jsonl") in str(err.value)
    recorded_run(tmp_path / "gap", [1, 3], harness_request())
    with pytest.raises(HarnessError, match=r"records rounds \[1, 3\], not 1..2 in order"):
        plan_run(tmp_path / "gap", harness_request(), 3)
    recorded_run(tmp_path / "cut", [1, 2], harness_request())
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write('{"round": 3, "wall')  # a cut last line: left to the ServerApp to repair
    assert plan_run(tmp_path / "cut", harness_request(), 3) == Plan("resume", 2)
    (tmp_path / "cut" / "metrics.jsonl").write_text('{"round": 1}\n{"rou\n{"round": 2}\n')
    with pytest.raises(HarnessError, match=r"metrics.jsonl: line 2 is not JSON"):
        plan_run(tmp_path / "cut", harness_request(), 3)


def _stored_with(request: dict, **old_keys) -> dict:
    return {**request, "run-config": {**request["run-config"], **old_keys}}


def test_a_record_from_before_a_key_was_removed_still_resumes(tmp_path):
    # Records written before hybrid-width was removed store it at its default (false).
    folder = tmp_path / "maestro-seed0"
    recorded_run(folder, range(1, 3), _stored_with(harness_request(), **{"hybrid-width": False}))
    assert "hybrid-width" not in provenance.read_record(folder)["request"]["run-config"]
    assert plan_run(folder, harness_request(), 3).action == "resume"
    # A run of the removed variant is another request, named as such.
    hybrid = tmp_path / "hybrid"
    recorded_run(hybrid, range(1, 3), _stored_with(harness_request(), **{"hybrid-width": True}))
    with pytest.raises(HarnessError, match=r"run-config.hybrid-width: True -> '<unset>'"):
        plan_run(hybrid, harness_request(), 3)
