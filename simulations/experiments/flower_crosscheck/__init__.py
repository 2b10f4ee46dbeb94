"""Cross-check of this project's ``fjord`` / ``heterofl`` against Flower's own baseline code.

Flower's repository ships FjORD and HeteroFL baselines (``baselines/fjord``,
``baselines/heterofl``), written by other people. This script imports their model and
aggregation code at run time from a local checkout (``--flower PATH``; nothing of theirs is
copied here) and compares it with this project's, on the same weights:

- **FjORD sub-models.** This project's model (``--models``, default LeNet-5 and the FedAvg CNN)
  is rebuilt with Flower's ordered-dropout layers (their ``ODConv2d`` / ``ODLinear`` in place of
  every ``Conv2d`` / ``Linear``, the classifier not dropped, p fed by their ``ODSampler``) and the
  same weights. At every width p: the channels each layer keeps (out, in), the parameter count,
  and the max abs difference of the logits against this project's width-p sub-model.
- **Their rounding rule** over a grid of p (0.01 … 1.00), on the compared models' widths and on
  every width 1 … 512: the output channels their layer keeps against ours.
- **FjORD aggregation.** Their ``strategy.aggregate`` (nested weighted mean) against
  :func:`server.aggregation.aggregate_nested` on the same random client updates.
- **HeteroFL sub-models.** Their ``conv`` model (no normalisation, their scaler) at model rate r,
  built and loaded by their own code (``param_model_rate_mapping``,
  ``param_idx_to_local_params``), against the same global model made width-sliceable here and
  run at width r: kept shapes, parameter counts, logits in eval mode (their scaler idle) and in
  train mode (their scaler dividing by r).
- **HeteroFL aggregation.** Their ``HeteroFL._aggregate_conv`` against ``aggregate_nested`` on
  the same random client updates, every client holding every label (no label masking), with
  equal weights and with num-examples weights.

Their packages need libraries this project does not install (torchvision, hydra, coloredlogs);
only pure-torch / numpy code is run, and the modules their imports name but the compared code
never calls are replaced by empty placeholders, listed in the report.

Run (opt-in; needs a checkout of Flower's repository)::

    python -m simulations.experiments.flower_crosscheck --flower PATH [--json out.json]
"""
