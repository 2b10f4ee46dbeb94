"""``python -m simulations.bench``: the benchmark suite's command line (:mod:`.cli`)."""

from simulations.bench.cli import main

main()
