"""Tests of the character models (LEAF Shakespeare): shapes, causality, LSTM math, factoring."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import decompose, default_skip
from maestro_common.lowrank.layers import LowRankLinear, low_rank_layers
from maestro_common.ml.models import SEQUENCE_MODELS, CharLSTM, build_model
from maestro_common.ml.probe import probe_input

VOCAB, T = 81, 12
# Small geometries keep the file fast on two cores.
CONFIGS: dict[str, dict] = {
    "char-transformer": {"dim": 32, "depth": 2, "heads": 4, "context": T},
    "char-lstm": {"hidden": 24, "context": T},
}


def make(name: str, **extra: object) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=VOCAB, **{**CONFIGS[name], **extra})


def tokens(batch: int = 3, length: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_sequence_models_are_registered() -> None:
    assert SEQUENCE_MODELS == ("char-transformer", "char-lstm")


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_logits_have_the_class_axis_second(name: str) -> None:
    model = make(name)
    x = tokens()
    y = model(x)
    assert y.shape == (3, VOCAB, T)
    assert torch.isfinite(y).all()
    # The training loop's loss and accuracy work unchanged on (B, V, T) logits.
    loss = F.cross_entropy(y, tokens(seed=2))
    assert loss.shape == () and torch.isfinite(loss)
    assert y.argmax(1).shape == (3, T)
    assert model(x[:, :5]).shape == (3, VOCAB, 5)  # shorter sequences run too


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_default_geometry_and_image_arguments_ignored(name: str) -> None:
    model = build_model(name, num_classes=VOCAB, in_channels=3, image_size=32)
    assert model.input_shape == (80,)
    assert model.input_dtype == torch.long
    assert model.head.out_features == VOCAB
    x = probe_input(model, model.input_shape)
    assert x.dtype == torch.long and x.shape == (1, 80)


def test_leaf_lstm_and_default_transformer_sizes() -> None:
    lstm = build_model("char-lstm", num_classes=VOCAB)
    assert lstm.embed.embedding_dim == 8 and len(lstm.layers) == 2
    assert lstm.layers[1].h_i.weight.shape == (256, 256)
    # Same parameter count as LEAF's model: embedding, two nn.LSTM layers, linear head.
    ref = nn.LSTM(8, 256, num_layers=2)
    expected = 81 * 8 + sum(p.numel() for p in ref.parameters()) + 256 * 81 + 81
    assert sum(p.numel() for p in lstm.parameters()) == expected
    gpt = build_model("char-transformer", num_classes=VOCAB)
    assert len(gpt.blocks) == 4 and gpt.blocks[0].attn.heads == 4
    assert gpt.blocks[0].fc1.weight.shape == (512, 128)
    assert gpt.pos_embed.weight.shape == (80, 128)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_causal_a_later_token_never_changes_earlier_logits(name: str) -> None:
    model = make(name)
    model.eval()
    x = tokens()
    for t in (0, 5, T - 1):
        changed = x.clone()
        changed[:, t] = (changed[:, t] + 7) % VOCAB
        with torch.no_grad():
            before, after = model(x), model(changed)
        torch.testing.assert_close(after[..., :t], before[..., :t], rtol=0, atol=1e-6)
        assert not torch.allclose(after[..., t], before[..., t])


def test_transformer_samples_are_independent() -> None:
    model = make("char-transformer")
    model.eval()
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-5, atol=1e-6)


def test_gate_lstm_equals_torch_lstm() -> None:
    torch.manual_seed(0)
    model = CharLSTM(vocab=VOCAB, context=T, embed=8, hidden=16, layers=2).double()
    ref = nn.LSTM(8, 16, num_layers=2, batch_first=True).double()
    for i, layer in enumerate(model.layers):
        layer.load_from_lstm(ref, i)
    x = tokens(batch=4)
    with torch.no_grad():
        expected, _ = ref(model.embed(x))
        got = model(x)
    torch.testing.assert_close(got, model.head(expected).transpose(1, 2), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_decompose_factors_every_projection_and_keeps_head_dense(name: str) -> None:
    model = make(name)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert default_skip(model) == {"head"}
    decompose(model)
    assert set(low_rank_layers(model)) == linears - {"head"}
    assert type(model.head) is nn.Linear
    embeds = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert embeds  # embeddings untouched
    if name == "char-transformer":
        factored = {n.rsplit(".", 1)[-1] for n in low_rank_layers(model)}
        assert factored == {"q", "k", "v", "out", "fc1", "fc2"}
        assert isinstance(model.blocks[0].attn.q, LowRankLinear)
    else:
        assert len(low_rank_layers(model)) == 2 * 8  # x_* and h_* of i, f, g, o per layer


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_full_rank_factored_model_computes_the_dense_one(name: str) -> None:
    model = make(name)
    model.eval()
    factored = decompose(copy.deepcopy(model))
    x = tokens()
    with torch.no_grad():
        expected, got = model(x), factored(x)
    assert (got - expected).norm() / expected.norm() < 1e-4


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_small_budget_runs_a_smaller_sub_model(name: str) -> None:
    model = decompose(make(name))
    model.eval()
    x = tokens()
    with torch.no_grad():
        full = model(x)
        with use_budget(model, 0.25):
            small = model(x)
    assert small.shape == full.shape and torch.isfinite(small).all()
    assert not torch.allclose(small, full, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("factored", [False, True], ids=["dense", "factored"])
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_a_few_training_steps_lower_the_loss(name: str, factored: bool) -> None:
    model = make(name)
    if factored:
        decompose(model)
    x = tokens(batch=8, seed=3)
    y = torch.roll(x, -1, dims=1)  # a learnable target: the next token of a fixed batch
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize(
    ("name", "options", "pattern"),
    [
        ("char-transformer", {"dim": 30, "heads": 4}, "divisible"),
        ("char-transformer", {"patch_size": 4}, "context"),
        ("char-transformer", {"context": 0}, "context"),
        ("char-lstm", {"hidden": 0}, "hidden"),
        ("char-lstm", {"dim": 8}, "embed, hidden, layers, context"),
    ],
)
def test_bad_options_raise(name: str, options: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_model(name, num_classes=VOCAB, **options)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_bad_input_raises(name: str) -> None:
    model = make(name)
    with pytest.raises(ValueError, match="int64 token ids"):
        model(torch.zeros(2, T))
    if name == "char-transformer":
        with pytest.raises(ValueError, match="exceeds the context"):
            model(tokens(length=T + 1))
