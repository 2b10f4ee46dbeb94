"""``python -m simulations.centralized``."""

from simulations.centralized.command import main

main()
