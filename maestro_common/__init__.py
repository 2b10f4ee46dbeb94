"""The core shared by server, client and harness, in four parts (docs/architecture.md).

- ``lowrank``: the method library (factored layers, the prefix rule, decomposition, samplers,
  regularisers, shrinking, budgets, accounting, freezing, merging, inference forms);
- ``width``: the width baselines (FjORD, HeteroFL): width-sliceable models and width matching;
- ``ml``: the machine-learning substrate (models, datasets and partitioning, the training loop,
  learning-rate schedules);
- ``app``: what the Flower apps share (the run config, the method registry, the wire protocol and
  codec, tiers, checkpoints, device self-measurement).
"""
