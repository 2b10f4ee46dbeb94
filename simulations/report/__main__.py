"""``python -m simulations.report``: see :mod:`simulations.report.cli`."""

from simulations.report.cli import main

main()
