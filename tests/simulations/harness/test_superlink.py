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
