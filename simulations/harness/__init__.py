"""The harness behind ``python -m simulations.run``, one concern a module.

- :mod:`~simulations.harness.errors`: :class:`HarnessError`, a refused request or a failed run;
- :mod:`~simulations.harness.configs`: each run's run config and the federation settings, built
  from the command line and the experiment file and checked before Flower starts;
- :mod:`~simulations.harness.plans`: what the output folder already holds decides whether a run is
  new, resumed or skipped (its recorded request must be the same), or is refused;
- :mod:`~simulations.harness.progress`: a run's metrics rows read back and its progress line;
- :mod:`~simulations.harness.superlink`: the managed local SuperLink the runs go through;
- :mod:`~simulations.harness.runner`: one ``flwr run`` per planned run, its log and peak memory;
- :mod:`~simulations.harness.sweep`: the per-method lr sweep (``--lrs``) before the main runs.

The command line, the folder's writer lock and the report stay in :mod:`simulations.run`.
"""
