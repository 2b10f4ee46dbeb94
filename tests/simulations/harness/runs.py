"""Fake run folders and parsed arguments that the harness's tests share."""

from __future__ import annotations

import json

from simulations import provenance
from simulations.run import parse_args


def metrics_row(rnd: int, wall: float = 10.0, acc: dict | None = None, clients: int = 2) -> dict:
    """One metrics.jsonl row: the round, its wall time, its clients, the tiers' accuracy."""
    row = {"round": rnd, "wall-seconds": wall, "clients": [{"dropped": False}] * clients}
    if acc:
        row["tiers"] = {t: {"accuracy": a} for t, a in acc.items()}
    return row


def harness_request(**changes) -> dict:
    """The request of a 3-round maestro run on 10 nodes, with ``changes`` to its run config."""
    cfg = {"num-rounds": 3, "lr": 0.1, "method": "maestro", "seed": 0, **changes}
    return provenance.make_request(cfg, {"num-supernodes": 10, "malloc": "fast"})


def recorded_run(folder, rounds: int, request: dict | None) -> None:
    """A run folder with ``rounds`` recorded, and ``request`` recorded as what trained it."""
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps(metrics_row(r)) + "\n" for r in rounds)
    )
    if request is not None:
        provenance.write_record(folder, request, "python -m simulations.run ...", "abc", 1)


def harness_args(tmp_path, conf: str, *extra: str):
    """The harness's parsed arguments for experiment file text ``conf`` and ``extra`` flags."""
    path = tmp_path / "s.toml"
    path.write_text(conf)
    return parse_args(["--conf", str(path), "--out", str(tmp_path / "out"), *extra])
