"""The benchmark suite (``python -m simulations.bench``): measured step time and inference latency
per tier, dense against factored against width, one concern a module.

- :mod:`~simulations.bench.variants`: the models measured, their inputs, the factorization kinds
  and the model each kind of client holds at a tier;
- :mod:`~simulations.bench.timing`: the clocks, the timer and :class:`Row`, one measured figure set;
- :mod:`~simulations.bench.sections`: the sections (whole models, layers, the Maestro step against
  a dense one, sequential freezing, the branched Tucker core);
- :mod:`~simulations.bench.verdict`: the targets, judged on the measured rows;
- :mod:`~simulations.bench.render`: the markdown report (``docs/performance.md``);
- :mod:`~simulations.bench.cli`: the command line, the JSON figures and re-rendering from them.

The names below were the single module's; they stay importable from ``simulations.bench``.
"""

from simulations.bench.cli import load_line, main, parse_args, rerender, write
from simulations.bench.render import (
    _fmt,
    _ratio,
    render,
    settings_line,
    simple_table,
    tier_table,
)
from simulations.bench.sections import (
    BRANCHES,
    CYCLE,
    LAYERS,
    OBJECTIVES,
    ONE_PASS_NESTED,
    SECTIONS,
    Context,
    Loss,
    _layer_step,
    _narrow,
    _nested,
    _no_grad_call,
    _per_layer,
    measure_branched,
    measure_freezing,
    measure_layers,
    measure_model,
    measure_overhead,
    tucker_layer,
)
from simulations.bench.timing import CLOCKS, Row, Timer, infer_fn, train_step_fn
from simulations.bench.variants import (
    _FACTORED,
    CONV_ONLY_KINDS,
    IMAGE,
    KIND_OPTIONS,
    MODEL_KINDS,
    MODELS,
    MODELS_SECTION_ONLY,
    SHAPE,
    TIERS,
    WIDTH_MODELS,
    Geometry,
    dense_model,
    factored_tier,
    geometry,
    model_kinds,
    width_variant,
)
from simulations.bench.verdict import _find, branched_summary, targets

__all__ = [
    "BRANCHES",
    "CLOCKS",
    "CONV_ONLY_KINDS",
    "CYCLE",
    "IMAGE",
    "KIND_OPTIONS",
    "LAYERS",
    "MODELS",
    "MODELS_SECTION_ONLY",
    "MODEL_KINDS",
    "OBJECTIVES",
    "ONE_PASS_NESTED",
    "SECTIONS",
    "SHAPE",
    "TIERS",
    "WIDTH_MODELS",
    "_FACTORED",
    "Context",
    "Geometry",
    "Loss",
    "Row",
    "Timer",
    "_find",
    "_fmt",
    "_layer_step",
    "_narrow",
    "_nested",
    "_no_grad_call",
    "_per_layer",
    "_ratio",
    "branched_summary",
    "dense_model",
    "factored_tier",
    "geometry",
    "infer_fn",
    "load_line",
    "main",
    "measure_branched",
    "measure_freezing",
    "measure_layers",
    "measure_model",
    "measure_overhead",
    "model_kinds",
    "parse_args",
    "render",
    "rerender",
    "settings_line",
    "simple_table",
    "targets",
    "tier_table",
    "train_step_fn",
    "tucker_layer",
    "width_variant",
    "write",
]
