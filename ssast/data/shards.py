"""Tar shards: a data set as a few large files, read with large sequential reads.

    python -m ssast.data.shards write source.kind=json source.path=data.json source.labels=labels.csv out=shards/ \\
        [shard_mb=1024]

Any data set the sources take becomes numbered tar shards in the WebDataset convention (``<key>.<audio suffix>``,
the clip's bytes as they are, and ``<key>.json`` with its labels and source path), written in an order shuffled
by ``seed``, with ``index.json`` (classes, shard names) and ``index.tsv`` (per clip: shard, key, byte offset and
size of the audio member, label indices). Read them with the ``shards`` source kind: each member is decoded in
place (fairseq2 maps ``shard.tar:offset:size``), and training walks the shards in a new order each epoch and
shuffles clips within windows of ``data.shard_window`` shards (`ssast.data.sampling.ShardSampler`). Unreadable
source files are skipped, counted and listed.

Every file appears whole or not at all: a shard is written under a temporary name and renamed when complete, and
each complete shard is recorded in ``.shards/progress.jsonl``; ``index.json``, written last, marks a finished
write (and the journal goes). An interrupted write run again with the same settings goes on after its last
complete shard.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Literal

import numpy as np

from ssast.cli import run_cli
from ssast.config import PositiveFloat, cli_args, invalid
from ssast.data.index import read_dataset
from ssast.data.sources import FolderSource, ManifestError, Source, SourceConfig
from ssast.files import FolderLock, WriteError, atomic_write_text, no_space


def write_shards(data: Source, root: str, out: Path, shard_mb: float, seed: int) -> dict:
    """Write the shards of a data set into `out` (going on from an interrupted write of the same settings);
    returns a report (clips, shards, bytes, skipped). One write at a time goes into a folder."""
    with FolderLock(out, "a shard write", "wait for it to end, or choose another out"):
        try:
            return _write_shards(data, root, out, shard_mb, seed)
        except OSError as e:
            partial = list(out.glob("*.tmp"))
            full = no_space(e, partial[0] if partial else out, sum(p.stat().st_size for p in partial))
            if full is None:
                raise
            for p in partial:  # the shard being written: written anew when the write goes on
                p.unlink()
            raise WriteError(f"{full}; the shards before it are complete: free some space and run it again") from None


def _write_shards(data: Source, root: str, out: Path, shard_mb: float, seed: int) -> dict:
    dataset = read_dataset(data, root)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "index.json").exists():
        raise ManifestError(f"{out} already holds shards (index.json): choose an empty folder")
    settings = {"source": dataclasses.asdict(data), "root": str(root), "shard_mb": shard_mb, "seed": seed}
    journal = out / ".shards" / "progress.jsonl"
    shards = _completed(journal, settings)
    order = np.random.default_rng(seed).permutation(len(dataset.examples))
    shard, tar = _shard(), None
    for key in range(shards[-1]["next"] if shards else 0, len(order)):
        example = dataset.examples[int(order[key])]
        try:
            audio = Path(example.path).read_bytes()
        except OSError as e:
            shard["skipped"].append(f"{example.path}: {e.strerror or e}")
            continue
        if tar is None:
            shard["shard"] = f"shard-{len(shards):06d}.tar"
            tar = tarfile.open(out / f"{shard['shard']}.tmp", "w", format=tarfile.USTAR_FORMAT)
        info = tarfile.TarInfo(f"{key:09d}{Path(example.path).suffix.lower()}")
        info.size = len(audio)
        offset = tar.offset + tarfile.BLOCKSIZE  # a USTAR header of a short name is one block
        tar.addfile(info, io.BytesIO(audio))
        shard["rows"].append(f"{len(shards)}\t{key:09d}\t{offset}\t{len(audio)}\t{','.join(map(str, example.labels))}")
        meta = json.dumps({"labels": list(example.labels), "source": example.path}).encode()
        info = tarfile.TarInfo(f"{key:09d}.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        shard["bytes"] += len(audio)
        if tar.offset >= shard_mb * 2**20:
            _complete(tar, out, shard, key + 1, journal)
            shards.append(shard)
            shard, tar = _shard(), None
    if tar is not None:
        _complete(tar, out, shard, len(order), journal)
        shards.append(shard)
        shard = _shard()
    rows = [r for s in shards for r in s["rows"]]
    skipped = [line for s in [*shards, shard] for line in s["skipped"]]
    if not rows:
        raise ManifestError(f"no readable clip in the data set: {skipped[:3]}")
    atomic_write_text(out / "index.tsv", "\n".join(rows) + "\n")
    index = {"classes": dataset.classes, "multi_label": dataset.multi_label, "shards": [s["shard"] for s in shards]}
    atomic_write_text(out / "index.json", json.dumps(index, indent=1))
    shutil.rmtree(journal.parent)  # the write is complete: nothing left to resume
    written = sum(s["bytes"] for s in shards)
    return {"clips": len(rows), "shards": len(shards), "audio_mb": written / 2**20, "skipped": skipped}


def _shard() -> dict:
    """A shard's record: its name, index rows, skipped clips, audio bytes, and the key its successor starts at."""
    return {"shard": "", "rows": [], "skipped": [], "bytes": 0, "next": 0}


def _complete(tar: tarfile.TarFile, out: Path, shard: dict, next_key: int, journal: Path) -> None:
    """Close the shard's tar, fsync, rename it into place, then record it in the journal."""
    tar.close()
    tmp = out / f"{shard['shard']}.tmp"
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out / shard["shard"])
    shard["next"] = next_key
    with open(journal, "a") as f:
        f.write(json.dumps(shard) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _completed(journal: Path, settings: dict) -> list[dict]:
    """The shards an interrupted write of the same `settings` completed (none for a new write, whose settings
    start the journal); a journal of other settings is refused."""
    if not journal.is_file():
        journal.parent.mkdir(exist_ok=True)
        atomic_write_text(journal, json.dumps(settings) + "\n")
        return []
    header, *lines = journal.read_text().splitlines()
    if json.loads(header) != settings:
        raise ManifestError(
            f"{journal.parent.parent} holds an interrupted write with other settings ({header}): "
            "run it again with those, or choose an empty folder"
        )
    shards = []
    for line in lines:
        try:
            shards.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a record torn by a kill: its shard is written again
    atomic_write_text(journal, "".join(json.dumps(r) + "\n" for r in [settings, *shards]))  # drop a torn record
    return shards


@dataclasses.dataclass
class ShardsConfig:
    """A data set to write as shards."""

    command: Literal["write"]
    source: SourceConfig = dataclasses.field(default_factory=FolderSource)  # as data.train
    root: str = ""  # prefix of relative paths, as data.root
    out: str = ""  # an empty folder for the shards (or one this write was interrupted in)
    shard_mb: PositiveFloat = 1024.0  # start a new shard past this size
    seed: int = 0  # of the order the clips are written in

    def __post_init__(self):
        if not self.out:
            raise invalid("out", self.out, "a folder for the shards")
        if self.source.kind == "shards":
            raise invalid("source.kind", "shards", "a source other than shards")


def main(argv: list[str] | None = None) -> None:
    """The command line: ``write``."""
    prog = "python -m ssast.data.shards"
    args = cli_args(ShardsConfig, argv, prog=prog, doc=__doc__, positional="command")
    report = run_cli(prog, lambda: write_shards(args.source, args.root, Path(args.out), args.shard_mb, args.seed))
    print(
        f"{report['clips']} clips ({report['audio_mb']:.1f} MB) in {report['shards']} shards in {args.out}; "
        f"{len(report['skipped'])} skipped"
    )
    for line in report["skipped"]:
        print(f"  skipped {line}")


if __name__ == "__main__":
    main()
