"""Built-in demo data sets, generated on the spot in the on-disk formats of the real ones.

    python -m ssast.demo root=data/demo scale=small|full [seed=0] [unlabeled=N]

- ``speechcommands/``: Speech Commands V2 layout: 35 word folders of 1-s 16 kHz WAVs named
  ``<speaker>_nohash_0.wav``, ``validation_list.txt`` and ``testing_list.txt`` (speaker-disjoint), and
  ``_background_noise_/``. Words are spoken by eSpeak NG; each speaker is a voice variant with its own pitch,
  pitch range and rate, jittered per clip, placed at a random offset, half of them over background noise.
- ``esc50/``: ESC-50 layout: ``audio/<fold>-<src>-A-<target>.wav`` (5 s, 44.1 kHz) and ``meta/esc50.csv``;
  25 procedural event classes (`ssast.demo.sounds`), 1-3 events per clip over coloured noise, sometimes with a
  quieter event of another class, 5 folds.
- ``audioset/``: AST data json (``train.json``, ``eval.json``) and ``class_labels_indices.csv``; 10-s 16 kHz
  clips mixing 1-4 sources among the 25 event classes and speech; labels are the mixed sources.
- ``unlabeled/``: 2-4 s 16 kHz clips of 1-3 sources (events and speech) over noise, for pretraining.

Every clip is drawn from its own generator seeded by (seed, set, index), and each utterance re-seeds eSpeak's
noise: the same seed gives the same bytes in any process. Manifests hold paths relative to their folder, so the
data can move. ``.demo.json`` records the scale and seed a folder holds (and ``--unlabeled``, a pretraining set
of another size, whose first clips are the default set's); another is refused unless ``--overwrite`` replaces
the sets whole.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from ssast.config import Positive, cli_args, fail
from ssast.demo import sounds
from ssast.demo.espeak import Speaker

WORDS = [
    "backward",
    "bed",
    "bird",
    "cat",
    "dog",
    "down",
    "eight",
    "five",
    "follow",
    "forward",
    "four",
    "go",
    "happy",
    "house",
    "learn",
    "left",
    "marvin",
    "nine",
    "no",
    "off",
    "on",
    "one",
    "right",
    "seven",
    "sheila",
    "six",
    "stop",
    "three",
    "tree",
    "two",
    "up",
    "visual",
    "wow",
    "yes",
    "zero",
]
VARIANTS = [
    "",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "croak",
    "whisper",
    "Andy",
    "Annie",
    "Denis",
    "Gene",
    "Lee",
    "Mario",
    "Michael",
    "Storm",
    "Tweaky",
    "adam",
    "anika",
    "boris",
    "caleb",
    "david",
    "edward",
    "grandma",
    "grandpa",
    "iven",
    "john",
    "linda",
    "max",
    "norbert",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
]
EVENT_NAMES = list(sounds.EVENTS)
SR = 16000
ESC_SR = 44100
SETS = ("speechcommands", "esc50", "audioset", "unlabeled")


@dataclass(frozen=True)
class Scale:
    """How many clips each built-in set holds."""

    speakers: int  # Speech Commands speakers; each says every word once
    esc_per_class: int  # ESC-50 clips per class (a multiple of 5 keeps folds balanced)
    audioset_train: int
    audioset_eval: int
    unlabeled: int


SCALES = {
    "small": Scale(speakers=10, esc_per_class=5, audioset_train=24, audioset_eval=12, unlabeled=40),
    "full": Scale(speakers=40, esc_per_class=25, audioset_train=400, audioset_eval=100, unlabeled=2000),
}


def _rng(seed: int, set_id: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, set_id, index])


def _write(path: Path, x: np.ndarray, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(x, -1, 1), sr, subtype="PCM_16")


def _place(clip: np.ndarray, x: np.ndarray, offset: int) -> None:
    """Add `x` into `clip` starting at `offset`, cut at the clip's end."""
    end = min(len(clip), offset + len(x))
    clip[offset:end] += x[: end - offset]


def _voice(rng: np.random.Generator) -> dict:
    return dict(
        variant=str(rng.choice(VARIANTS)),
        pitch=int(rng.integers(15, 86)),
        pitch_range=int(rng.integers(10, 90)),
        rate=int(rng.integers(120, 230)),
    )


def _speak(speaker: Speaker, text: str, voice: dict, rng: np.random.Generator) -> np.ndarray:
    """`text` spoken by `voice` with per-utterance jitter, at 16 kHz, peak 1."""
    jitter = dict(
        voice, pitch=np.clip(voice["pitch"] + rng.integers(-6, 7), 0, 99), rate=voice["rate"] + rng.integers(-15, 16)
    )
    x = resample_poly(speaker.say(text, **jitter, seed=int(rng.integers(2**31))), SR, speaker.sample_rate)
    x = x.astype(np.float32)
    return x / (np.abs(x).max() + 1e-9)


def _mix(rng: np.random.Generator, sources: list[np.ndarray], n: int, snr_db: tuple[float, float]) -> np.ndarray:
    """Sources at random offsets and gains over coloured noise, peak-normalised to a random level."""
    clip = np.zeros(n, np.float32)
    for x in sources:
        _place(clip, x * rng.uniform(0.3, 1.0), int(rng.integers(0, max(1, n - len(x) // 2))))
    rms = np.sqrt(np.mean(clip**2)) + 1e-6
    clip += sounds.background(rng, n, SR) * rms * 10 ** (-rng.uniform(*snr_db) / 20)
    return clip / (np.abs(clip).max() + 1e-9) * rng.uniform(0.3, 0.95)


def make_speechcommands(root: Path, scale: Scale, seed: int, speaker: Speaker) -> int:
    """The keyword set in the Speech Commands V2 layout; returns the clip count."""
    root = root / "speechcommands"
    n_held = max(1, scale.speakers // 10)  # 10% validation, 10% test speakers
    splits: dict[str, list[str]] = {"validation": [], "testing": []}
    for s in range(scale.speakers):
        rng = _rng(seed, 0, s)
        speaker_id, voice = f"{rng.integers(16**8):08x}", _voice(rng)
        split = "validation" if s < n_held else "testing" if s < 2 * n_held else "training"
        for w, word in enumerate(WORDS):
            crng = _rng(seed, 1, s * len(WORDS) + w)
            x = _speak(speaker, word, voice, crng)[:SR] * crng.uniform(0.2, 0.9)
            clip = np.zeros(SR, np.float32)
            _place(clip, x, int(crng.integers(0, SR - len(x) + 1)))
            if crng.random() < 0.5:
                clip += sounds.background(crng, SR, SR) * crng.uniform(0.002, 0.03)
            name = f"{word}/{speaker_id}_nohash_0.wav"
            _write(root / name, clip, SR)
            if split != "training":
                splits[split].append(name)
    for split, names in splits.items():
        (root / f"{split}_list.txt").write_text("".join(n + "\n" for n in sorted(names)))
    for i, colour in enumerate(["white_noise", "pink_noise"]):
        rng = _rng(seed, 2, i)
        _write(root / "_background_noise_" / f"{colour}.wav", sounds.background(rng, 10 * SR, SR) * 0.1, SR)
    return scale.speakers * len(WORDS)


def make_esc50(root: Path, scale: Scale, seed: int) -> int:
    """The sound-event set in the ESC-50 layout; returns the clip count."""
    root = root / "esc50"
    rows = []
    for target, name in enumerate(EVENT_NAMES):
        for j in range(scale.esc_per_class):
            index = target * scale.esc_per_class + j
            rng = _rng(seed, 3, index)
            sources = [sounds.event(name, rng, ESC_SR) for _ in range(rng.integers(1, 4))]
            if rng.random() < 0.3:  # a quieter event of another class
                other = EVENT_NAMES[(target + rng.integers(1, len(EVENT_NAMES))) % len(EVENT_NAMES)]
                sources.append(sounds.event(other, rng, ESC_SR) * 0.2)
            clip = _mix(rng, sources, 5 * ESC_SR, (5, 30))
            fold, src = j % 5 + 1, f"{index:06d}"
            filename = f"{fold}-{src}-A-{target}.wav"
            _write(root / "audio" / filename, clip, ESC_SR)
            rows.append([filename, fold, target, name, target < 10, src, "A"])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        csv.writer(f).writerows([["filename", "fold", "target", "category", "esc10", "src_file", "take"], *rows])
    return len(rows)


def _sources(rng: np.random.Generator, speaker: Speaker, count: int) -> tuple[list[np.ndarray], list[str]]:
    """`count` distinct sources among the event classes and speech (a phrase of 2-5 words)."""
    names = list(rng.choice(EVENT_NAMES + ["speech"], size=count, replace=False))
    waves = [
        _speak(speaker, " ".join(rng.choice(WORDS, rng.integers(2, 6))), _voice(rng), rng)
        if n == "speech"
        else sounds.event(n, rng, SR)
        for n in names
    ]
    return waves, names


def make_audioset(root: Path, scale: Scale, seed: int, speaker: Speaker) -> int:
    """The tagging set as AST data json with a label csv; returns the clip count."""
    root = root / "audioset"
    classes = EVENT_NAMES + ["speech"]
    mids = {name: f"/m/demo{i:02d}" for i, name in enumerate(classes)}
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "class_labels_indices.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [
                ["index", "mid", "display_name"],
                *[[i, mids[n], n.replace("_", " ").capitalize()] for i, n in enumerate(classes)],
            ]
        )
    index = 0
    for split, count in (("train", scale.audioset_train), ("eval", scale.audioset_eval)):
        data = []
        for _ in range(count):
            rng = _rng(seed, 4, index)
            waves, names = _sources(rng, speaker, int(rng.integers(1, 5)))
            path = root / "audio" / split / f"Y{index:07d}.wav"
            _write(path, _mix(rng, waves, 10 * SR, (10, 30)), SR)
            data.append({"wav": str(path.relative_to(root)), "labels": ",".join(mids[n] for n in names)})
            index += 1
        (root / f"{split}.json").write_text(json.dumps({"data": data}, indent=1))
    return index


def make_unlabeled(root: Path, scale: Scale, seed: int, speaker: Speaker) -> int:
    """The unlabelled pretraining folder; returns the clip count."""
    for i in range(scale.unlabeled):
        rng = _rng(seed, 5, i)
        waves, _ = _sources(rng, speaker, int(rng.integers(1, 4)))
        _write(root / "unlabeled" / f"clip_{i:05d}.wav", _mix(rng, waves, int(SR * rng.uniform(2, 4)), (5, 30)), SR)
    return scale.unlabeled


def build(root: str | Path, scale: str | Scale = "small", seed: int = 0) -> dict[str, tuple[int, float]]:
    """Generate all four sets under `root`; returns {set: (clips, seconds)}."""
    root, speaker = Path(root), Speaker()
    sc = SCALES[scale] if isinstance(scale, str) else scale
    makers = {
        "speechcommands": lambda: make_speechcommands(root, sc, seed, speaker),
        "esc50": lambda: make_esc50(root, sc, seed),
        "audioset": lambda: make_audioset(root, sc, seed, speaker),
        "unlabeled": lambda: make_unlabeled(root, sc, seed, speaker),
    }
    report = {}
    for name, make in makers.items():
        start = time.perf_counter()
        report[name] = (make(), time.perf_counter() - start)
    return report


@dataclass
class DemoDataConfig:
    """Where the built-in data go, at which scale and seed."""

    root: str = "data/demo"
    scale: Literal["small", "full"] = "small"
    seed: int = 0
    unlabeled: Optional[Positive] = None  # clips in the unlabelled set (default: the scale's)
    overwrite: bool = False  # replace built-in data of another scale or seed


def main(argv: list[str] | None = None) -> None:
    """The command line: write the four sets into `root`, or find them there."""
    prog = "python -m ssast.demo"
    cfg = cli_args(DemoDataConfig, argv, prog=prog, doc=__doc__)
    root, wanted = Path(cfg.root), {"scale": cfg.scale, "seed": cfg.seed}
    scale = SCALES[cfg.scale]
    if cfg.unlabeled is not None and cfg.unlabeled != scale.unlabeled:
        scale, wanted["unlabeled"] = replace(scale, unlabeled=cfg.unlabeled), cfg.unlabeled
    marker = root / ".demo.json"  # what the folder holds; "complete" once every set is written
    found = json.loads(marker.read_text()) if marker.exists() else None
    if found == {**wanted, "complete": True}:
        print(f"demo data already in {root} ({_holding(wanted)})")
        return
    if not cfg.overwrite:
        if found and {k: v for k, v in found.items() if k != "complete"} != wanted:
            fail(
                prog,
                f"{root} holds built-in data of scale {_holding(found)}: pass overwrite=true to replace it, or "
                f"choose another root",
            )
        if not found and root.is_dir() and any(root.iterdir()):
            fail(prog, f"{root} is not empty and holds no built-in data: choose another root, or pass overwrite=true")
    for name in SETS:  # replaced whole: no mix of scales, seeds or an unfinished generation
        shutil.rmtree(root / name, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**wanted, "complete": False}))
    for name, (clips, seconds) in build(root, scale, cfg.seed).items():
        print(f"{name:15s} {clips:5d} clips  {seconds:6.1f} s")
    marker.write_text(json.dumps({**wanted, "complete": True}))


def _holding(marker: dict) -> str:
    """What a marker says a folder holds, in words."""
    size = f", {marker['unlabeled']} unlabelled clips" if "unlabeled" in marker else ""
    return f"{marker['scale']}, seed {marker['seed']}{size}"


if __name__ == "__main__":
    main()
