"""Sequential freezing by stages: frozen parameters stay bit-identical, the rotation covers every
parameter, and a run is reproducible by its seed."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.freezing import FreezeSchedule, freeze
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.samplers import make_sampler
from maestro_common.lowrank.training import TrainSettings, train
from tests.small_nets import three_conv_net


def model(kind: str = "svd") -> nn.Module:
    return three_conv_net(kind, channels=(4, 8, 8), hidden=16)


def data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 10, (n,), generator=g)


SETTINGS = TrainSettings(
    epochs=1, batch_size=8, lr=0.1, momentum=0.9, weight_decay=1e-3, lasso=1e-3
)


@pytest.mark.parametrize("kind", ["svd", "tucker"])
@pytest.mark.parametrize("period", [0, 1, 2])
def test_frozen_parameters_bit_identical_after_training(kind, period):
    m = model(kind)
    schedule = FreezeSchedule("stage", groups=2, seed=3)
    frozen = schedule.frozen(m, period)
    assert frozen
    before = copy.deepcopy(m.state_dict())
    x, y = data()
    sampler = make_sampler("maestro", {n: layer.rank for n, layer in low_rank_layers(m).items()})
    train(m, x, y, SETTINGS, sampler, seed=0, freezing=schedule, period_offset=period)
    after = m.state_dict()
    frozen_keys = {f"{n}.{f}" if n else f for n, factors in frozen.items() for f in factors}
    for key in frozen_keys:
        assert torch.equal(after[key], before[key]), key
    changed = [k for k in after if k not in frozen_keys and not torch.equal(after[k], before[k])]
    assert changed  # everything else still trains
    assert all(p.requires_grad for p in m.parameters())  # flags restored


def test_a_cycle_is_the_stages_and_one_without_freezing():
    m = model("tucker")
    assert FreezeSchedule("stage", groups=3).cycle(m) == 3
    assert FreezeSchedule("stage", groups=99).cycle(m) == len(_holders(m))  # one module a stage
    assert FreezeSchedule("none").cycle(m) == 1
    assert FreezeSchedule("stage").cycle(nn.Linear(2, 2)) == 1  # no factored layer: no freezing


def _holders(m: nn.Module) -> list[str]:
    return [n for n, mod in m.named_modules() if list(mod.parameters(recurse=False))]


@pytest.mark.parametrize("kind", ["svd", "tucker"])
def test_stage_mode_covers_every_parameter_once_per_cycle(kind):
    m = model(kind)
    schedule = FreezeSchedule("stage", groups=2, seed=1)
    stages = [schedule.frozen(m, p) for p in range(2)]
    keys = [{f"{n}.{p}" for n, params in st.items() for p in params} for st in stages]
    assert not keys[0] & keys[1]  # disjoint stages
    assert keys[0] | keys[1] == set(dict(m.named_parameters()))  # dense layers and biases too
    holders = _holders(m)
    for st in stages:  # each stage is a contiguous run of modules in forward order
        index = sorted(holders.index(n) for n in st)
        assert index == list(range(index[0], index[-1] + 1))
    assert [schedule.frozen(m, p) for p in range(2, 4)] == stages


def test_frozen_input_stage_stops_backward_above_it():
    # The input-side stage (the dense first conv and the next factored convs) frozen: its last
    # module's output needs no gradient, so autograd computes none below it.
    m = model()  # modules with parameters: 0 (dense conv), 2, 4 (factored convs), 6, 7
    x, _ = data(4)
    schedule = FreezeSchedule("stage", groups=2, seed=0)
    period = next(p for p in range(2) if "0" in schedule.frozen(m, p))
    assert {"0", "2", "4"} <= set(schedule.frozen(m, period))
    seen = []
    hook = m[4].register_forward_hook(lambda mod, i, out, s=seen: s.append(out.requires_grad))
    with freeze(m, schedule, period):
        m(x).sum().backward()
    hook.remove()
    assert seen == [False]
    assert all(p.grad is None for p in m[0].parameters())
    assert all(p.grad is not None for p in m[7].parameters())


def normed_net() -> nn.Module:
    # Modules with parameters: 0 conv, 1 norm, 3 conv, 4 norm, 6 conv, 7 norm, 9, 10 linears. A
    # split of the eight into three stages would start the second at the norm 4.
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.GroupNorm(2, 8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.GroupNorm(2, 8),
        nn.Flatten(),
        nn.Linear(8 * 36, 16),
        nn.Linear(16, 10),
    )
    return decompose(m, conv_factorization="tucker")


@pytest.mark.parametrize("seed", [0, 1])
def test_a_stage_never_starts_with_a_norm(seed):
    m = normed_net()
    schedule = FreezeSchedule("stage", groups=3, seed=seed)
    stages = [list(schedule.frozen(m, p)) for p in range(3)]
    assert sorted(stages) == [["0", "1", "3", "4"], ["10"], ["6", "7", "9"]]
    # The input-side stage frozen, on a channels-last input: the first trainable module is the
    # conv 6, not a GroupNorm fed without gradient (which crashes torch 2.13's CPU backward).
    period = next(p for p in range(3) if "0" in stages[p])
    x = torch.randn(4, 1, 6, 6).contiguous(memory_format=torch.channels_last)
    with freeze(m, schedule, period):
        m(x).sum().backward()
    assert m[7].weight.grad is not None and m[4].weight.grad is None


def test_periods_per_epoch_split_each_epoch_by_batches():
    schedule = FreezeSchedule("stage", per_epoch=2)
    assert [schedule.period(0, b, 5) for b in range(5)] == [0, 0, 0, 1, 1]
    assert [schedule.period(3, b, 4) for b in range(4)] == [6, 6, 7, 7]
    assert [FreezeSchedule("stage").period(3, b, 4) for b in range(4)] == [3, 3, 3, 3]
    # fewer batches than periods: one period a batch, consecutive (not 0 and 2, one stage twice)
    assert [FreezeSchedule("stage", per_epoch=4).period(1, b, 2) for b in range(2)] == [4, 5]
    with pytest.raises(ValueError, match="batch must be in"):
        schedule.period(0, 5, 5)
    with pytest.raises(ValueError, match="freeze per epoch must be an int"):
        FreezeSchedule("stage", per_epoch=0)


@pytest.mark.parametrize("per_epoch", [1, 2])
def test_one_epoch_trains_every_stage_only_with_several_periods(per_epoch):
    m = model()
    before = copy.deepcopy(m.state_dict())
    x, y = data()  # 24 examples, batch 8: 3 batches
    schedule = FreezeSchedule("stage", groups=2, seed=0, per_epoch=per_epoch)
    train(m, x, y, SETTINGS, None, seed=0, freezing=schedule)
    unchanged = {k for k, v in m.state_dict().items() if torch.equal(v, before[k])}
    frozen_first = {f"{n}.{p}" for n, ps in schedule.frozen(m, 0).items() for p in ps}
    assert unchanged == (frozen_first if per_epoch == 1 else set())


def test_reproducible_by_seed():
    x, y = data()
    results = []
    for seed in (7, 7, 8):
        m = model()
        schedule = FreezeSchedule("stage", groups=3, seed=seed)
        for epoch in range(2):
            train(m, x, y, SETTINGS, None, seed=epoch, freezing=schedule, period_offset=epoch)
        results.append(m.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    assert not all(torch.equal(results[0][k], results[2][k]) for k in results[0])


def test_none_mode_and_bad_settings():
    m = model()
    assert FreezeSchedule("none").frozen(m, 0) == {}
    with freeze(m, None, 0):
        assert all(p.requires_grad for p in m.parameters())
    for mode in ("all", "factor", "layer"):  # factor and layer: removed modes
        with pytest.raises(ValueError, match="freeze mode must be one of"):
            FreezeSchedule(mode)
    with pytest.raises(ValueError, match="freeze groups must be an int"):
        FreezeSchedule("stage", groups=0)
    with pytest.raises(ValueError, match="period must be"):
        FreezeSchedule("stage").frozen(m, -1)
