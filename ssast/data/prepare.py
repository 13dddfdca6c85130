"""Corpus preparation: validate every clip of a corpus, write its manifests, label csv, statistics and a report.

    python -m ssast.data.prepare audioset root=AUDIOSET out=data/prepared [csv=[unbalanced_train_segments.csv]]
    python -m ssast.data.prepare librispeech root=LibriSpeech out=data/prepared
    python -m ssast.data.prepare esc50 root=ESC-50-master out=data/prepared
    python -m ssast.data.prepare speechcommands root=speech_commands_v0.02 out=data/prepared
    python -m ssast.data.prepare folder root=my_audio out=data/prepared [name=my_audio]

Each clip is decoded and checked (readable, at least ``min_seconds`` long, not silent, no NaN or inf samples; its
sample rate and channels are counted), in parallel over ``workers`` processes. Kept clips go into AST data jsons
(``kind: json``) named ``<layout>_<split>.json`` in ``out``, with ``class_labels_indices.csv`` where the corpus
has labels. AudioSet: one manifest per segment csv, its clips found under every common downloader's naming
(``<ytid>``, ``Y<ytid>``, ``<ytid>_<start>``, ``<ytid>_<start_ms>_<end_ms>``: `ssast.data.sources.match_audioset`),
the files matching no segment or several listed in ``unmatched_audioset.txt``. LibriSpeech: one manifest per
released subset (``train-clean-100``, ..., ``dev-clean``, ``test-other``), and ``librispeech_train960.json``, its
training subsets only, for pretraining. ``flac=DIR`` also converts every kept clip to 16-kHz mono FLAC under DIR
and points the manifests there. Formats libsndfile cannot read (m4a, webm, opus, aac: the usual YouTube downloads)
go through ffmpeg when it is installed, and are otherwise dropped with that reason. AudioSet clips listed in a
segment csv but not on disk are normal: they are counted and listed in ``missing_<csv>.txt``. The fbank statistics
of the first training manifest (``stats_clips`` clips evenly spaced) go into ``stats.json`` as the
``features.mean`` / ``features.std`` of a recipe. A report (clips kept, dropped by reason, hours) is printed and
written to ``report_<layout>.json``. Every output appears whole or not at all (written, then renamed). Every checked
clip is appended to ``.prepare/<layout>.jsonl`` in ``out``: a second run skips them, so an interrupted preparation
resumes where it stopped."""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import multiprocessing
import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import torch

from ssast.cli import run_cli
from ssast.config import NonNegative, NonNegativeFloat, Positive, cli_args
from ssast.data.sources import (
    AUDIO_SUFFIXES,
    Esc50Source,
    JsonSource,
    ManifestError,
    SpeechCommandsSource,
    audio_files,
    match_audioset,
    read_segments,
)
from ssast.features import FeatureConfig, resample, to_mono
from ssast.files import FolderLock, atomic_write, atomic_write_text

FFMPEG_SUFFIXES = (".m4a", ".webm", ".opus", ".aac", ".mp4")
READABLE = AUDIO_SUFFIXES + FFMPEG_SUFFIXES  # what a corpus folder is searched for
Layout = Literal["audioset", "librispeech", "esc50", "speechcommands", "folder"]

AUDIOSET_CSVS = ("balanced_train_segments.csv", "unbalanced_train_segments.csv", "eval_segments.csv")
LIBRISPEECH_TRAIN = ("train-clean-100", "train-clean-360", "train-other-500")  # the paper's 960 h
LIBRISPEECH = (*LIBRISPEECH_TRAIN, "dev-clean", "dev-other", "test-clean", "test-other")
# Manifests that join others, by layout: {name: the splits they hold}; the first is the one for statistics.
SELECTIONS = {"librispeech": {"train960": LIBRISPEECH_TRAIN}}


@dataclasses.dataclass
class PrepareConfig:
    """One corpus to prepare."""

    layout: Layout
    root: str  # the corpus folder
    out: str  # folder for the manifests, label csv, stats and report
    # audioset: segment csvs under root, one manifest each ([]: the releases')
    csv: list[str] = dataclasses.field(default_factory=list)
    name: str = ""  # folder: the manifest's name (default: the folder's)
    flac: str = ""  # convert kept clips to 16-kHz mono FLAC under this folder
    min_seconds: NonNegativeFloat = 0.1  # shorter clips are dropped
    workers: Positive = os.cpu_count() or 1
    stats_clips: NonNegative = 2000  # clips for stats.json (0: none)
    target_length: Positive = 1024  # frames of the statistics' front end


@dataclasses.dataclass
class Clip:
    """A candidate clip: the manifest it goes to, its path and its label names."""

    split: str
    path: str
    labels: tuple[str, ...] = ()


@dataclasses.dataclass
class Corpus:
    """What a layout lists: candidate clips, missing clips by split, label csv rows, files left out (with why)."""

    clips: list[Clip]
    missing: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    label_rows: list[list[str]] = dataclasses.field(default_factory=list)
    left_out: list[str] = dataclasses.field(default_factory=list)


def audioset_corpus(root: Path, csvs: list[str] | None) -> Corpus:
    """Clips of AudioSet segment csvs under ``root`` (default: whichever of the three releases are there), the
    missing YTIDs of each, the rows of ``root/class_labels_indices.csv``, and the files matching no segment or
    several."""
    labels = root / "class_labels_indices.csv"
    if not labels.is_file():
        raise ManifestError(f"AudioSet label csv not found: {labels}")
    csvs = csvs or [c for c in AUDIOSET_CSVS if (root / c).is_file()] or list(AUDIOSET_CSVS)
    segments = {Path(name).stem: read_segments(root / name) for name in csvs}
    files, _ = audio_files(root, READABLE)
    found, left_out = match_audioset(files, [s for split in segments.values() for s in split])
    with open(labels, newline="") as f:
        corpus = Corpus([], {}, list(csv.reader(f)), left_out)
    for split, rows in segments.items():
        corpus.missing[split] = [s.ytid for s in rows if s.key not in found]
        corpus.clips += [
            Clip(split, str(found[s.key]), tuple(m.strip() for m in s.labels.split(",") if m.strip()))
            for s in rows
            if s.key in found
        ]
    return corpus


def librispeech_corpus(root: Path) -> Corpus:
    """LibriSpeech's clips by released subset (``root`` is the LibriSpeech folder or one subset's)."""
    files, _ = audio_files(root, READABLE)
    corpus = Corpus([])
    for f in files:
        subset = next((p for p in (root.name, *f.relative_to(root).parts) if p in LIBRISPEECH), None)
        if subset:
            corpus.clips.append(Clip(subset, str(f)))
        else:
            corpus.left_out.append(f"{f}: not in a LibriSpeech subset folder ({', '.join(LIBRISPEECH)})")
    return corpus


def layout_corpus(layout: str, root: Path, args) -> Corpus:
    """The candidate clips of a corpus layout."""
    if not root.is_dir():
        raise ManifestError(f"{layout} root is not a folder: {root}")
    if layout == "audioset":
        return audioset_corpus(root, args.csv)
    if layout == "librispeech":
        return librispeech_corpus(root)
    if layout in ("esc50", "speechcommands"):  # their sources know the splits; names become the label csv's mids
        whole = Esc50Source(path=str(root)) if layout == "esc50" else SpeechCommandsSource(path=str(root))
        parts = (
            {f"fold{k}": str(k) for k in whole.folds()}
            if layout == "esc50"
            else {s: s for s in ("training", "validation", "testing")}
        )
        clips, classes = [], []
        for split, value in parts.items():
            listing = whole.with_split(value).read()
            classes = listing.classes
            clips += [
                Clip(split, p, tuple(classes[i] for i in ls))
                for p, ls in zip(listing.paths, listing.labels, strict=True)
            ]
        rows = [["index", "mid", "display_name"]] + [[str(i), c, c] for i, c in enumerate(classes)]
        return Corpus(clips, label_rows=rows)
    files, _ = audio_files(root, READABLE)
    return Corpus([Clip(args.name or root.name, str(f)) for f in files])


def check_clip(task: tuple[str, float, str, str, str]) -> dict:
    """Decode and check one clip (through ffmpeg into `converted` for the formats that need it; to FLAC under
    `flac` when asked); its record: "kept" (the path the manifest lists) or "dropped" (the reason)."""
    path, min_seconds, root, converted, flac = task
    record, source = {"path": path, "kept": path}, path
    try:
        if Path(path).suffix.lower() in FFMPEG_SUFFIXES:
            if not shutil.which("ffmpeg"):
                return {**record, "dropped": f"{Path(path).suffix.lower()[1:]}: needs ffmpeg, not installed"}
            target = Path(converted) / Path(path).relative_to(root).with_suffix(".flac")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")  # renamed when whole
            cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", path, "-ac", "1", "-ar", "16000"]
            done = subprocess.run([*cmd, "-f", "flac", str(tmp)], capture_output=True, text=True)
            if done.returncode:
                tmp.unlink(missing_ok=True)
                return {**record, "dropped": "ffmpeg: " + (done.stderr.strip().splitlines() or ["failed"])[-1]}
            os.replace(tmp, target)
            source = record["kept"] = str(target)
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return {**record, "dropped": f"unreadable: {str(e).splitlines()[0]}"}
    record.update(seconds=len(audio) / rate, sample_rate=rate, channels=audio.shape[1])
    if not np.isfinite(audio).all():
        return {**record, "dropped": "NaN or inf samples"}
    if record["seconds"] < min_seconds:
        return {**record, "dropped": f"shorter than {min_seconds} s"}
    if np.abs(audio).max() == 0:
        return {**record, "dropped": "silent"}
    if flac and source == path:
        target = Path(flac) / Path(path).relative_to(root).with_suffix(".flac")
        target.parent.mkdir(parents=True, exist_ok=True)
        mono = resample(to_mono(torch.from_numpy(audio), None), rate, 16000).numpy()
        atomic_write(target, lambda f: sf.write(f, np.clip(mono, -1, 1), 16000, "PCM_16", format="FLAC"))
        record["kept"] = str(target)
    return record


def prepare(args: PrepareConfig) -> dict:
    """Check the corpus, write its manifests, label csv, statistics and report; returns the report. One
    preparation at a time writes into an `out` folder."""
    with FolderLock(args.out, f"a preparation of {args.layout}", "wait for it to end, or choose another out"):
        return _prepare(args)


def _prepare(args: PrepareConfig) -> dict:
    layout, root, out = args.layout, Path(args.root).resolve(), Path(args.out)
    corpus = layout_corpus(layout, root, args)
    if not corpus.clips:
        raise ManifestError(f"no audio found for {layout} under {root}")
    state = out / ".prepare" / f"{layout}.jsonl"
    state.parent.mkdir(parents=True, exist_ok=True)
    done, torn = {}, False
    if state.is_file() and state.stat().st_size:
        with open(state, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        for line in state.read_text().splitlines():
            try:
                record = json.loads(line)
                done[record["path"]] = record
            except (json.JSONDecodeError, KeyError):
                continue  # a line torn by a kill: that clip is checked again
    flac = str(Path(args.flac).resolve()) if args.flac else ""
    converted = flac or str((out / "converted").resolve())  # what ffmpeg decodes is kept as FLAC
    paths = sorted({c.path for c in corpus.clips} - done.keys())
    tasks = [(p, args.min_seconds, str(root), converted, flac) for p in paths]
    # spawn: a forked worker of a process whose OpenMP threads already ran (torch) hangs in its first parallel op;
    # one torch thread per worker: the workers are the parallelism (a thread per core each would oversubscribe)
    pool = multiprocessing.get_context("spawn").Pool(args.workers, torch.set_num_threads, (1,))
    with open(state, "a") as log, pool:
        if torn:
            log.write("\n")  # end the line a kill tore, so that the next record starts its own
        for record in pool.imap_unordered(check_clip, tasks, 16):
            log.write(json.dumps(record) + "\n")
            log.flush()
            done[record["path"]] = record
    return write_outputs(layout, out, corpus, done, args)


def write_outputs(layout: str, out: Path, corpus: Corpus, records: dict, args) -> dict:
    """Manifests (and the selections joining them), label csv, missing and left-out lists, statistics and the
    report of checked clips, each written whole or not at all."""
    manifests = collections.defaultdict(list)
    for clip in corpus.clips:
        record = records[clip.path]
        if "dropped" not in record:
            manifests[clip.split].append({"wav": record["kept"], "labels": ",".join(clip.labels)})
    selections = {
        name: [entry for split in splits for entry in manifests.get(split, [])]
        for name, splits in SELECTIONS.get(layout, {}).items()
    }
    written = {**manifests, **{name: data for name, data in selections.items() if data}}
    for split, data in written.items():
        atomic_write_text(out / f"{layout}_{split}.json", json.dumps({"data": data}, indent=0))
    if corpus.label_rows:
        text = io.StringIO()
        csv.writer(text).writerows(corpus.label_rows)
        atomic_write_text(out / "class_labels_indices.csv", text.getvalue())
    for split, ids in corpus.missing.items():
        atomic_write_text(out / f"missing_{split}.txt", "".join(f"{i}\n" for i in ids))
    if corpus.left_out:
        atomic_write_text(out / f"unmatched_{layout}.txt", "".join(f"{line}\n" for line in corpus.left_out))
    checked = [records[p] for p in dict.fromkeys(c.path for c in corpus.clips)]
    kept = [r for r in checked if "dropped" not in r]
    report = {
        "layout": layout,
        "clips_kept": len(kept),
        "hours_kept": round(sum(r["seconds"] for r in kept) / 3600, 3),
        "dropped": dict(collections.Counter(r["dropped"] for r in checked if "dropped" in r).most_common()),
        "missing": {split: len(ids) for split, ids in corpus.missing.items()},
        "unmatched": len(corpus.left_out),
        "sample_rates": dict(collections.Counter(r["sample_rate"] for r in kept)),
        "channels": dict(collections.Counter(r["channels"] for r in kept)),
        "manifests": {f"{layout}_{s}.json": len(d) for s, d in written.items()},
    }
    report["selections"] = {
        f"{layout}_{name}.json": [s for s in splits if s in manifests]
        for name, splits in SELECTIONS.get(layout, {}).items()
    }  # the splits each holds
    if written:  # the manifest to train on: the first selection, else the first split
        first = next((n for n, data in selections.items() if data), next(iter(manifests)))
        report["train_manifest"] = f"{layout}_{first}.json"
        if args.stats_clips:
            report["stats"] = write_stats(out / report["train_manifest"], out, args)
    atomic_write_text(out / f"report_{layout}.json", json.dumps(report, indent=1))
    return report


def write_stats(manifest: Path, out: Path, args) -> dict:
    """``features.mean`` / ``features.std`` of the reference's fbank over clips evenly spaced in `manifest`."""
    # Imported here: the spawned check workers import this module, and the loader below stats (fairseq2) would add
    # 2 s and 180 MB to each of them.
    from ssast.data.stats import StatsConfig, dataset_stats

    data = json.loads(manifest.read_text())["data"]
    picked = data[:: max(1, len(data) // args.stats_clips)][: args.stats_clips]
    sample = out / ".prepare" / f"stats_{manifest.name}"
    atomic_write_text(sample, json.dumps({"data": picked}))
    cfg = StatsConfig(batch_size=100, features=FeatureConfig(target_length=args.target_length))
    cfg.data.train = JsonSource(path=str(sample))
    mean, std = dataset_stats(cfg)
    stats = {"manifest": manifest.name, "clips": len(picked), "features.mean": mean, "features.std": std}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1))
    return stats


def main(argv: list[str] | None = None) -> None:
    """The command line: one corpus layout."""
    prog = "python -m ssast.data.prepare"
    args = cli_args(PrepareConfig, argv, prog=prog, doc=__doc__, positional="layout")
    report = run_cli(prog, lambda: prepare(args))
    dropped = sum(report["dropped"].values())
    print(f"{args.layout}: {report['clips_kept']} clips kept ({report['hours_kept']:.2f} h), {dropped} dropped")
    for reason, n in report["dropped"].items():
        print(f"  dropped {n}: {reason}")
    for split, n in report["missing"].items():
        print(f"  missing {n} of {split} (listed in {Path(args.out) / f'missing_{split}.txt'})")
    if report["unmatched"]:
        where = Path(args.out) / f"unmatched_{args.layout}.txt"
        print(f"  left out {report['unmatched']} files matching no segment or several (listed in {where})")
    for name, n in report["manifests"].items():
        print(f"  {Path(args.out) / name}: {n} clips")
    stats = report.get("stats", {})
    if stats:
        print(f"  stats.json: features.mean={stats['features.mean']:.7g} features.std={stats['features.std']:.7g}")
    if "train_manifest" in report:  # the overrides that read it
        out = Path(args.out).resolve()
        use = f"data.train.kind=json data.train.path={out / report['train_manifest']}"
        if (out / "class_labels_indices.csv").is_file():
            use += f" data.train.labels={out / 'class_labels_indices.csv'}"
        if stats:
            use += f" features.mean={stats['features.mean']:.7g} features.std={stats['features.std']:.7g}"
        print(f"to train on it: {use}")


if __name__ == "__main__":
    main()
