"""Tar shards: a data set as a few large files, read with large sequential reads.

    python -m ssast.data.shards write --kind json --path data.json --labels labels.csv --out shards/ [--shard-mb 1024]

Any data set the readers take becomes numbered tar shards in the WebDataset convention (``<key>.<audio suffix>``,
the clip's bytes as they are, and ``<key>.json`` with its labels and source path), written in an order shuffled
by ``--seed``, with ``index.json`` (classes, shard names) and ``index.tsv`` (per clip: shard, key, byte offset and
size of the audio member, label indices). Read them with the ``shards`` data set kind: each member is decoded in
place (fairseq2 maps ``shard.tar:offset:size``), and training walks the shards in a new order each epoch and
shuffles clips within windows of ``data.shard_window`` shards (`ssast.data.pipeline.ShardSampler`). Unreadable
source files are skipped, counted and listed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from ssast.data.readers import READERS, DatasetConfig, ManifestError, read_dataset


def write_shards(dataset_cfg: DatasetConfig, root: str, out: Path, shard_mb: float, seed: int) -> dict:
    """Write the shards of a data set into `out`; returns a report (clips, shards, bytes, skipped)."""
    dataset = read_dataset(dataset_cfg, root)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "index.json").exists():
        raise ManifestError(f"{out} already holds shards (index.json): choose an empty folder")
    order = np.random.default_rng(seed).permutation(len(dataset.examples))
    names, rows, skipped, tar, written = [], [], [], None, 0
    for key, position in enumerate(order.tolist()):
        example = dataset.examples[position]
        try:
            audio = Path(example.path).read_bytes()
        except OSError as e:
            skipped.append(f"{example.path}: {e.strerror or e}")
            continue
        if tar is None or tar.offset >= shard_mb * 2**20:
            if tar is not None:
                tar.close()
            names.append(f"shard-{len(names):06d}.tar")
            tar = tarfile.open(out / names[-1], "w", format=tarfile.USTAR_FORMAT)
        info = tarfile.TarInfo(f"{key:09d}{Path(example.path).suffix.lower()}")
        info.size = len(audio)
        offset = tar.offset + tarfile.BLOCKSIZE  # a USTAR header of a short name is one block
        tar.addfile(info, io.BytesIO(audio))
        rows.append(f"{len(names) - 1}\t{key:09d}\t{offset}\t{len(audio)}\t{','.join(map(str, example.labels))}")
        meta = json.dumps({"labels": list(example.labels), "source": example.path}).encode()
        info = tarfile.TarInfo(f"{key:09d}.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        written += len(audio)
    if tar is not None:
        tar.close()
    if not rows:
        raise ManifestError(f"no readable clip in the data set: {skipped[:3]}")
    (out / "index.tsv").write_text("\n".join(rows) + "\n")
    index = {"classes": dataset.classes, "multi_label": dataset.multi_label, "shards": names}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return {"clips": len(rows), "shards": len(names), "audio_mb": written / 2**20, "skipped": skipped}


def main(argv: list[str] | None = None) -> None:
    """The command line: ``write``."""
    parser = argparse.ArgumentParser(prog="python -m ssast.data.shards", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write a data set as tar shards")
    write.add_argument("--kind", choices=sorted(k for k in READERS if k != "shards"), required=True)
    write.add_argument("--path", required=True, help="as data.train.path")
    write.add_argument("--labels", default="", help="as data.train.labels")
    write.add_argument("--audio-dir", default="", help="as data.train.audio_dir")
    write.add_argument("--split", default="", help="as data.train.split")
    write.add_argument("--root", default="", help="prefix of relative paths, as data.root")
    write.add_argument("--out", type=Path, required=True, help="an empty folder for the shards")
    write.add_argument("--shard-mb", type=float, default=1024.0, help="start a new shard past this size")
    write.add_argument("--seed", type=int, default=0, help="of the order the clips are written in")
    args = parser.parse_args(argv)
    cfg = DatasetConfig(args.kind, args.path, args.labels, args.audio_dir, args.split)
    try:
        report = write_shards(cfg, args.root, args.out, args.shard_mb, args.seed)
    except ManifestError as e:
        sys.exit(f"{parser.prog}: error: {e}")
    print(
        f"{report['clips']} clips ({report['audio_mb']:.1f} MB) in {report['shards']} shards in {args.out}; "
        f"{len(report['skipped'])} skipped"
    )
    for line in report["skipped"]:
        print(f"  skipped {line}")


if __name__ == "__main__":
    main()
