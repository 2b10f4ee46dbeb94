"""The core shared by server, client and harness, in four floors (docs/architecture.md).

From the bottom up; a module imports only from its own floor or those below it:

- ``ml``: the machine-learning substrate (models, datasets and partitioning, learning-rate
  schedules, the prefix rule, dry forward passes);
- ``width``: the width baselines' models (FjORD, HeteroFL): width-sliceable layers;
- ``lowrank``: the method library (factored layers, decomposition, samplers, regularisers,
  shrinking, budgets, accounting, freezing, merging, inference forms, width matching,
  the training loop);
- ``app``: what the Flower apps share (the run config, the method registry, the wire protocol and
  codec, tiers, checkpoints, device self-measurement).
"""
