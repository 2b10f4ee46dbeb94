"""The harness's own local SuperLink."""

from simulations.harness.superlink import LocalSuperLink


def test_ray_starts_locally_unless_a_cluster_is_named(tmp_path):
    """A stale /tmp/ray/ray_current_cluster (left by `ray start`) must not capture the run."""
    local = LocalSuperLink(tmp_path, fast_malloc=False, base_env={"PATH": "/usr/bin"})
    named = LocalSuperLink(
        tmp_path, fast_malloc=False, base_env={"PATH": "/usr/bin", "RAY_ADDRESS": "10.0.0.1:6379"}
    )
    assert local.env["RAY_ADDRESS"] == "local"
    assert named.env["RAY_ADDRESS"] == "10.0.0.1:6379"


def test_ray_workers_run_at_the_callers_priority_unless_told_otherwise(tmp_path):
    """Ray's default worker niceness (15) leaves the clients only what the engine's polling
    loop does not take; the harness starts them at 0 unless the caller sets it."""
    default = LocalSuperLink(tmp_path, fast_malloc=False, base_env={"PATH": "/usr/bin"})
    chosen = LocalSuperLink(
        tmp_path, fast_malloc=False, base_env={"PATH": "/usr/bin", "RAY_worker_niceness": "10"}
    )
    assert default.env["RAY_worker_niceness"] == "0"
    assert chosen.env["RAY_worker_niceness"] == "10"
