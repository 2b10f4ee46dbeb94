"""The GPU path: a client trains on CUDA when present. Skips without a GPU (CI has none)."""

import pytest
import torch

from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model, resolve_device
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.samplers import make_sampler
from maestro_common.lowrank.training import TrainSettings, evaluate, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_client_training_runs_on_the_gpu():
    cfg = RunConfig(model="cnn", device="auto")
    device = resolve_device(cfg)
    assert device.type == "cuda"
    model = build_run_model(cfg).to(device)
    ranks = {n: m.rank for n, m in low_rank_layers(model).items()}
    x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    result = train(
        model, x, y, TrainSettings(batch_size=32), make_sampler("maestro", ranks), device=device
    )
    assert result.steps == 8 and next(model.parameters()).is_cuda
    loss, acc = evaluate(model, x, y, 0.5, device=device)
    # The same sub-model on the CPU gives the same answers (up to a near-tie or two).
    loss_cpu, acc_cpu = evaluate(model.cpu(), x, y, 0.5)
    assert abs(acc - acc_cpu) <= 2 / len(y) and loss == pytest.approx(loss_cpu, rel=1e-3)
