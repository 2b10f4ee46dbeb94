"""Centralized training of the registry's methods, driven by the federation's run config.

The same experiment files and keys as the federated harness (``--conf``, ``--set``), the
methods of :data:`~maestro_common.app.methods.METHODS`, image and character tasks, and a
``summary.csv`` in the federated report's schema. Modules:

- :mod:`~simulations.centralized.options`: the command line and its checks;
- :mod:`~simulations.centralized.data`: the training pool, validation and test splits;
- :mod:`~simulations.centralized.trainer`: one model trained as its method trains;
- :mod:`~simulations.centralized.runner`: its rows per tier, and the lr trial;
- :mod:`~simulations.centralized.rows`: rows, the markdown table and ``summary.csv``;
- :mod:`~simulations.centralized.command`: ``main``.

Example (Fashion-MNIST, the federated headline's keys; Shakespeare in docs/centralized.md)::

    python -m simulations.centralized --conf simulations/conf/fmnist-100.toml \\
        --methods maestro,fjord,fedavg-all --seeds 0,1,2 --epochs 5 --out runs/cent/fmnist
"""

from simulations.centralized.command import main
from simulations.centralized.data import split_validation
from simulations.centralized.options import parse_args
from simulations.centralized.rows import Row

__all__ = ["Row", "main", "parse_args", "split_validation"]
