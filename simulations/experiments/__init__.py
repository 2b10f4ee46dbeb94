"""One-off measurements: each answers one question the docs cite, run by hand, not by the harness.

- ``malloc_bench``: glibc malloc tuning against training and evaluation steps (docs/results.md);
- ``client_memory``: one client's peak memory per model and partition count (docs/deployment.md);
- ``plain_flower`` with the Flower app ``plain_fedavg/``: Flower's own FedAvg on the same data, to
  time the harness against (docs/scale.md).

Each runs as ``python -m simulations.experiments.<name>``.
"""
