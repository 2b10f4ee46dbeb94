"""A run that stops early is resumed from its checkpoint while each try records new rounds."""

from __future__ import annotations

import json

from simulations.harness.errors import HarnessError
from simulations.harness.plans import Plan, plan_run
from simulations.harness.runner import TAIL_LINES, failure_context, log_tail, run_with_retries
from tests.simulations.harness.runs import harness_request, metrics_row, recorded_run


def flaky(folder, stops: list[int]):
    """An attempt that records rounds from its plan on, stopping after each round in ``stops``
    (a failure), or after round 3 (success); the plans it was given are kept."""
    plans: list[Plan] = []

    def attempt(plan: Plan) -> str | None:
        plans.append(plan)
        last = stops.pop(0) if stops else 3
        with (folder / "metrics.jsonl").open("a") as rows:
            for rnd in range(plan.done + 1, last + 1):
                rows.write(json.dumps(metrics_row(rnd)) + "\n")
        return None if last == 3 else f"{last} of 3 rounds recorded"

    return attempt, plans


def test_a_run_that_stops_early_resumes_from_its_last_round(tmp_path, capsys):
    folder, request = tmp_path / "maestro-seed0", harness_request()
    recorded_run(folder, range(1, 1), request)
    attempt, plans = flaky(folder, stops=[1, 2])
    replan = lambda: plan_run(folder, request, 3)  # noqa: E731
    restarts = []
    restart = lambda: restarts.append(len(plans))  # noqa: E731  (a fresh SuperLink)
    assert run_with_retries(attempt, replan, Plan("new", 0), 2, "maestro-seed0", restart) is None
    assert plans == [Plan("new", 0), Plan("resume", 1), Plan("resume", 2)]
    assert restarts == [1, 2]  # before each retry, none before the first try
    rounds = [json.loads(r)["round"] for r in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3]  # every round once
    out = capsys.readouterr().out
    assert (
        "[maestro-seed0] stopped after round 1 (1 of 3 rounds recorded); resuming from its "
        "checkpoint (retry 1 of 2)" in out
    )
    assert "(retry 2 of 2)" in out
    assert "FAILED" not in out  # the run finished: no try that was retried is called failed


def test_retries_stop_at_the_limit_or_at_a_second_try_that_records_nothing(tmp_path, capsys):
    folder, request = tmp_path / "maestro-seed0", harness_request()
    recorded_run(folder, range(1, 1), request)
    attempt, plans = flaky(folder, stops=[1, 2])
    replan = lambda: plan_run(folder, request, 3)  # noqa: E731
    failure = run_with_retries(attempt, replan, Plan("new", 0), 1, "maestro-seed0")
    assert failure == "2 of 3 rounds recorded" and len(plans) == 2  # the limit
    out = capsys.readouterr().out
    assert out.count("FAILED") == 1 and "FAILED: 2 of 3 rounds recorded" in out  # the last only

    attempt, plans = flaky(folder, stops=[2, 2, 2])  # resumes at round 2, records nothing
    failure = run_with_retries(attempt, replan, Plan("resume", 2), 5, "maestro-seed0")
    assert failure == "2 of 3 rounds recorded" and plans == [Plan("resume", 2)] * 2  # once more
    assert (
        "[maestro-seed0] stopped after round 2 with no new round (2 of 3 rounds recorded); "
        "trying once more on a fresh SuperLink (retry 1 of 5)" in capsys.readouterr().out
    )

    attempt, plans = flaky(folder, stops=[2])
    assert run_with_retries(attempt, replan, Plan("resume", 2), 0, "x") is not None  # 0: never
    assert len(plans) == 1


def test_one_try_that_records_nothing_is_retried_once_in_all(tmp_path, capsys):
    """A start-up that fails for a passing cause gets a second try; a run that then records
    rounds and again stops with none new is not tried a third time from there."""
    folder, request = tmp_path / "maestro-seed0", harness_request()
    recorded_run(folder, range(1, 1), request)
    attempt, plans = flaky(folder, stops=[0])  # the first try fails before round 1
    replan = lambda: plan_run(folder, request, 3)  # noqa: E731
    assert run_with_retries(attempt, replan, Plan("new", 0), 2, "maestro-seed0") is None
    assert plans == [Plan("new", 0)] * 2
    out = capsys.readouterr().out
    assert "[maestro-seed0] stopped before round 1 (0 of 3 rounds recorded); trying once" in out
    assert "FAILED" not in out

    other = tmp_path / "maestro-seed1"
    recorded_run(other, range(1, 1), request)
    attempt, plans = flaky(other, stops=[0, 1, 1, 1])
    replan = lambda: plan_run(other, request, 3)  # noqa: E731
    failure = run_with_retries(attempt, replan, Plan("new", 0), 5, "maestro-seed1")
    assert failure == "1 of 3 rounds recorded"
    assert plans == [Plan("new", 0), Plan("new", 0), Plan("resume", 1)]


def test_a_retry_whose_superlink_fails_to_start_reports_both(tmp_path):
    folder, request = tmp_path / "maestro-seed0", harness_request()
    recorded_run(folder, range(1, 1), request)
    attempt, plans = flaky(folder, stops=[1])

    def broken() -> None:
        raise HarnessError("the SuperLink did not start")

    replan = lambda: plan_run(folder, request, 3)  # noqa: E731
    failure = run_with_retries(attempt, replan, Plan("new", 0), 2, "x", broken)
    assert (
        failure == "1 of 3 rounds recorded; the retry could not start: the SuperLink did not start"
    )
    assert len(plans) == 1


def test_no_retry_when_the_folder_cannot_be_resumed():
    def refused() -> Plan:
        raise HarnessError("holds results of another request")

    calls = []
    failure = run_with_retries(
        lambda plan: calls.append(plan) or "stopped", refused, Plan("new", 0), 3, "x"
    )
    assert failure == "stopped" and calls == [Plan("new", 0)]


def test_a_failed_runs_logs_are_shown_by_their_last_lines(tmp_path):
    """A run that fails shows how its logs end (colour codes and blank lines dropped), so a
    start-up failure's cause is on the screen; a missing log says so instead of raising."""
    run_log = tmp_path / "run.log"
    lines = [f"\x1b[32mINFO\x1b[0m : line {i}" for i in range(20)]
    run_log.write_text("\n".join(lines[:15]) + "\n\n   \n" + "\n".join(lines[15:]) + "\n")
    assert log_tail(run_log, 3) == ["INFO : line 17", "INFO : line 18", "INFO : line 19"]
    assert len(log_tail(run_log)) == TAIL_LINES
    missing = tmp_path / "superlink.log"
    shown = failure_context("m-seed0", {"the run's log": run_log, "the SuperLink's log": missing})
    assert f"[m-seed0] the run's log ({run_log}) ends:\n    INFO : line 12\n" in shown
    assert shown.count("\n    INFO") == TAIL_LINES and "line 11" not in shown
    assert shown.endswith(
        f"[m-seed0] the SuperLink's log ({missing}) ends:\n    (empty or missing)"
    )
