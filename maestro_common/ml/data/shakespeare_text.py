"""The Shakespeare character alphabet (LEAF's 80 symbols plus an explicit unknown) and windows.

LEAF's ``ALL_LETTERS`` string is kept symbol for symbol, so index ``i < 80`` means the same
character here as in LEAF. LEAF maps a character outside that string to ``find() == -1``,
which Python indexing turns into its last symbol (``}``); here such a character gets its own
index, :data:`UNKNOWN` (80), so :data:`VOCAB_SIZE` is 81 and no real symbol is polluted.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "ALPHABET",
    "CONTEXT",
    "UNKNOWN",
    "VOCAB_SIZE",
    "decode",
    "encode",
    "window_count",
    "windows",
]

ALPHABET = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
UNKNOWN = len(ALPHABET)  # 80
VOCAB_SIZE = UNKNOWN + 1  # 81
CONTEXT = 80
UNKNOWN_CHAR = "\ufffd"  # what decode() writes for UNKNOWN

_LOOKUP = np.full(256, UNKNOWN, dtype=np.uint8)
for _i, _c in enumerate(ALPHABET):
    _LOOKUP[ord(_c)] = _i


def encode(text: str) -> np.ndarray:
    """Map ``text`` to alphabet indices (``uint8``); a symbol outside the alphabet is UNKNOWN."""
    raw = np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)
    ids = _LOOKUP[raw]
    # A character beyond latin-1 became b"?" above; it must still count as unknown.
    if not text.isascii():
        wide = np.fromiter((ord(c) > 255 for c in text), dtype=bool, count=len(text))
        ids[wide] = UNKNOWN
    return ids


def decode(ids: np.ndarray | torch.Tensor | list[int]) -> str:
    """Inverse of :func:`encode`; UNKNOWN comes back as U+FFFD."""
    arr = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > UNKNOWN):
        raise ValueError(f"ids must lie in [0, {UNKNOWN}]; got min {arr.min()}, max {arr.max()}")
    table = ALPHABET + UNKNOWN_CHAR
    return "".join(table[i] for i in arr.ravel())


def window_count(length: int, context: int = CONTEXT, stride: int = 1) -> int:
    """How many windows :func:`windows` cuts from a text of ``length`` symbols."""
    if length <= context:
        return 0
    return (length - context - 1) // stride + 1


def windows(
    text: np.ndarray, context: int = CONTEXT, stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``context``-symbol window of ``text`` and its next-symbol targets.

    Parameters
    ----------
    text
        One segment of encoded text (1-D integer array); windows never leave it.
    context
        Window length (LEAF: 80).
    stride
        Step between window starts; 1 gives LEAF's samples, ``context`` non-overlapping ones.

    Returns
    -------
    inputs, targets
        ``int64`` tensors of shape ``(N, context)``; ``targets[i, t] = text[start_i + t + 1]``,
        so ``targets[:, -1]`` is LEAF's label. ``N = len(text) - context`` for stride 1.
    """
    if context < 1 or stride < 1:
        raise ValueError(f"context and stride must be >= 1; got {context} and {stride}")
    arr = np.asarray(text)
    if arr.ndim != 1:
        raise ValueError(f"text must be 1-D; got shape {arr.shape}")
    n = window_count(len(arr), context, stride)
    if n == 0:
        empty = torch.empty((0, context), dtype=torch.int64)
        return empty, empty.clone()
    view = np.lib.stride_tricks.sliding_window_view(arr, context + 1)[::stride][:n]
    both = torch.from_numpy(np.ascontiguousarray(view, dtype=np.int64))
    return both[:, :-1].contiguous(), both[:, 1:].contiguous()
