"""Sequential freezing: frozen factors stay bit-identical, the rotation covers every factor, and a
run is reproducible by its seed."""

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
@pytest.mark.parametrize("mode", ["factor", "layer", "stage"])
@pytest.mark.parametrize("period", [0, 1, 2])
def test_frozen_factors_bit_identical_after_training(kind, mode, period):
    m = model(kind)
    schedule = FreezeSchedule(mode, groups=2, seed=3)
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


def test_factor_mode_rotates_through_every_factor():
    m = model("tucker")
    schedule = FreezeSchedule("factor", seed=0)
    seen: dict[str, set[str]] = {}
    for period in range(3):
        for name, factors in schedule.frozen(m, period).items():
            assert len(factors) == 1
            seen.setdefault(name, set()).update(factors)
    layers = low_rank_layers(m)
    for name, layer in layers.items():
        assert seen[name] == set(layer.factor_axes())


def test_one_cycle_freezes_every_factor_of_every_layer_equally_often():
    m = model("tucker")  # Tucker convs (3 factors) and an SVD linear (2): a cycle of 6 periods
    schedule = FreezeSchedule("factor", seed=0)
    assert schedule.cycle(m) == 6
    counts: dict[tuple[str, str], int] = {}
    for period in range(schedule.cycle(m)):
        for name, factors in schedule.frozen(m, period).items():
            for f in factors:
                counts[name, f] = counts.get((name, f), 0) + 1
    for name, layer in low_rank_layers(m).items():
        assert {counts[name, f] for f in layer.factor_axes()} == {6 // len(layer.factor_axes())}
    assert FreezeSchedule("stage", groups=3).cycle(m) == 3
    assert FreezeSchedule("layer", groups=9).cycle(m) == len(low_rank_layers(m))
    assert FreezeSchedule("none").cycle(m) == 1


def test_layer_mode_freezes_each_group_once_per_cycle():
    m = model()
    schedule = FreezeSchedule("layer", groups=3, seed=5)
    frozen = [set(schedule.frozen(m, p)) for p in range(3)]
    assert set().union(*frozen) == set(low_rank_layers(m))
    assert sum(len(f) for f in frozen) == len(low_rank_layers(m))  # disjoint groups
    assert [set(schedule.frozen(m, p)) for p in range(3, 6)] == frozen


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
    # module's output needs no gradient, so autograd computes none below it. Freezing only the
    # factors (layer mode) leaves the first conv training, and its output then needs one.
    m = model()  # modules with parameters: 0 (dense conv), 2, 4 (factored convs), 6, 7
    x, _ = data(4)
    for mode, needs_grad in (("stage", False), ("layer", True)):
        schedule = FreezeSchedule(mode, groups=2, seed=0)
        # stage: the stage of modules 0, 2, 4; layer: the group of factored convs 2 and 4
        period = next(p for p in range(2) if "2" in schedule.frozen(m, p))
        assert ("4" in schedule.frozen(m, period)) and (
            ("0" in schedule.frozen(m, period)) != needs_grad
        )
        seen = []
        hook = m[4].register_forward_hook(lambda mod, i, out, s=seen: s.append(out.requires_grad))
        with freeze(m, schedule, period):
            m(x).sum().backward()
        hook.remove()
        assert seen == [needs_grad], mode
        if not needs_grad:
            assert all(p.grad is None for p in m[0].parameters())
            assert all(p.grad is not None for p in m[7].parameters())
        m.zero_grad(set_to_none=True)


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
        schedule = FreezeSchedule("layer", groups=3, seed=seed)
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
    with pytest.raises(ValueError, match="freeze mode must be one of"):
        FreezeSchedule("all")
    with pytest.raises(ValueError, match="freeze groups must be an int"):
        FreezeSchedule("layer", groups=0)
    with pytest.raises(ValueError, match="period must be"):
        FreezeSchedule("factor").frozen(m, -1)
