"""The width baselines' models (FjORD, HeteroFL): width-sliceable layers."""
