"""The width baselines (FjORD, HeteroFL): width-sliceable models and width matching."""
