"""Peak resident memory of one client training round, by data source and malloc setting.

Each measurement is a fresh process that runs the ClientApp's train handler once, as a deployed
SuperNode's ClientApp process does, and reports its peak RSS: ``VmHWM`` of ``/proc/self/status``
(Linux). ``getrusage``'s ``ru_maxrss`` is printed beside it but is not this process's own peak: it
survives ``fork`` and ``exec``, so a child reports at least its parent's peak at the fork (this
script's parent holds the whole training set while it writes the partition file).

- ``partition``: the node reads the whole training set and trains on partition 0 of
  ``--partitions`` (``partition-id``/``num-partitions`` in its node config);
- ``data-path``: the node's node config points at an ``.npz`` holding exactly that partition's
  images (``data-path``), so it holds only its own data.

Each is run with glibc malloc tuning off and on (``tune-malloc``)::

    python -m simulations.experiments.client_memory --models lenet5,cnn --partitions 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from maestro_common.app.config import RunConfig
from maestro_common.ml.data import DATASET_INFO, load_dataset, partition_indices

CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
from flwr.supercore.task_identity import TaskIdentity
# Messages read run/node/task ids that only Flower's runtime sets.
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from client import client_app
from maestro_common.app.codec import model_arrays
from maestro_common.app.methods import METHODS
from maestro_common.ml.prefix import array_shapes, take_prefix
from maestro_common.app.config import RunConfig
from maestro_common.app.task import build_run_model
from server.strategy import to_record
cfg = RunConfig.from_run_config(json.loads(sys.argv[1]))
node_config = json.loads(sys.argv[2])
beta = float(sys.argv[3])
model = build_run_model(cfg)
global_arrays = model_arrays(model)
shapes = METHODS['maestro'].shapes(model, array_shapes(global_arrays), beta, input_shape=())
arrays = take_prefix(global_arrays, shapes)
config = ConfigRecord({"server-round": 1, "rank-fraction": beta, "budget": beta})
msg = Message(
    RecordDict({"arrays": to_record(arrays), "config": config}),
    dst_node_id=1,
    message_type=MessageType.TRAIN,
)
context = Context(1, 1, node_config, RecordDict(), cfg.to_run_config())
reply = client_app.train_fn(msg, context)
metrics = reply.content["metrics"]
hwm = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({
    "peak-rss-mb": int(hwm.split()[1]) / 1024,
    "ru-maxrss-mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "num-examples": int(metrics["num-examples"]),
}))
"""


def measure(cfg: RunConfig, node_config: dict, beta: float) -> dict:
    """Run one client round in a fresh process; its peak RSS and example count."""
    done = subprocess.run(
        [
            *(sys.executable, "-c", CHILD),
            *(json.dumps(cfg.to_run_config()), json.dumps(node_config), str(beta)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"client process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def own_partition(cfg: RunConfig, partitions: int, folder: Path) -> Path:
    """Partition 0's training images and labels as an .npz (what a device would hold)."""
    train = load_dataset(cfg.dataset, "train", cfg.data_dir or None)
    idx = partition_indices(
        train.labels.numpy(),
        partitions,
        cfg.partitioning,
        cfg.alpha,
        cfg.classes_per_partition,
        cfg.seed,
    )[0]
    # Back to uint8 pixels, as a device stores them.
    info = DATASET_INFO[cfg.dataset]
    images = train.images[idx, 0].numpy() * info.std[0] + info.mean[0]
    pixels = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    path = folder / "partition0.npz"
    np.savez(path, images=pixels, labels=train.labels[idx].numpy().astype(np.uint8))
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(
        prog="python -m simulations.experiments.client_memory", description=__doc__
    )
    p.add_argument("--models", default="lenet5,cnn")
    p.add_argument("--partitions", type=int, default=100, help="num-partitions of the set")
    p.add_argument("--beta", type=float, default=1.0, help="budget trained")
    p.add_argument("--data-dir", default="", help="Fashion-MNIST folder (default: search)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            cfg = RunConfig(model=model, data_dir=args.data_dir, device="cpu")
            npz = own_partition(cfg, args.partitions, Path(tmp))
            sources = {
                "partition": {"partition-id": 0, "num-partitions": args.partitions},
                "data-path": {"data-path": str(npz)},
            }
            for source, node in sources.items():
                for tune in (False, True):
                    node_config = {**node, "rank-fraction": args.beta, "tune-malloc": tune}
                    row = {"model": model, "data": source, "tune-malloc": tune}
                    row.update(measure(cfg, node_config, args.beta))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(
        "\n| model | data | tune-malloc | examples | peak RSS MB (VmHWM) |\n|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['model']} | {r['data']} | {r['tune-malloc']} | {r['num-examples']} "
            f"| {r['peak-rss-mb']:.0f} |"
        )
    return rows


if __name__ == "__main__":
    main()
