"""Procedural sound events for the built-in data sets.

Each class is a function ``(rng, sr) -> waveform`` that draws its own parameters (pitch, timing, length,
filtering), so two events of one class differ and classes overlap in pitch, bandwidth and rhythm: none is
separable by a single feature. Events are short (0.2-3 s) and peak-normalised; clips place them in time.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import signal


def _t(sr: int, seconds: float) -> np.ndarray:
    return np.arange(int(sr * seconds)) / sr


def _band(rng, n: int, sr: int, lo: float, hi: float, order: int = 4) -> np.ndarray:
    """White noise band-passed to [lo, hi] Hz."""
    hi = min(hi, 0.45 * sr)
    sos = signal.butter(order, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def _lowpass(x: np.ndarray, sr: int, cutoff: float) -> np.ndarray:
    return signal.sosfilt(signal.butter(2, min(cutoff, 0.45 * sr), fs=sr, output="sos"), x)


def _decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (sr * tau))


def _harmonics(f0: np.ndarray, sr: int, n: int, rolloff: float) -> np.ndarray:
    """Sum of `n` harmonics of a (time-varying) fundamental, amplitude k^-rolloff, below Nyquist."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return sum(np.sin(k * phase) * k**-rolloff * (k * f0 < 0.45 * sr) for k in range(1, n + 1))


def _repeat(rng, sr: int, make, count: int, gap: tuple[float, float]) -> np.ndarray:
    """`count` events from `make()` separated by random gaps (seconds)."""
    parts = []
    for _ in range(count):
        parts += [make(), np.zeros(int(sr * rng.uniform(*gap)))]
    return np.concatenate(parts)


def dog_bark(rng, sr):
    """Barks: short harmonic bursts whose pitch rises and falls."""

    def bark():
        t = _t(sr, rng.uniform(0.1, 0.25))
        f0 = rng.uniform(250, 650) * (1 + 0.4 * np.sin(np.pi * t / t[-1]))
        return (_harmonics(f0, sr, 12, 1.0) + 0.3 * _band(rng, len(t), sr, 500, 3000)) * np.sin(np.pi * t / t[-1])

    return _repeat(rng, sr, bark, rng.integers(1, 5), (0.1, 0.4))


def siren(rng, sr):
    """A siren: a tone sweeping up and down."""
    t = _t(sr, rng.uniform(1.5, 3))
    lo, hi, period = rng.uniform(500, 900), rng.uniform(1100, 1800), rng.uniform(0.4, 2.0)
    f = lo + (hi - lo) * (0.5 + 0.5 * np.sin(2 * np.pi * t / period))
    return _harmonics(f, sr, 3, 1.5)


def church_bell(rng, sr):
    """A bell: inharmonic partials with long decays."""
    t = _t(sr, rng.uniform(1.5, 3))
    f0 = rng.uniform(200, 600)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.5, 2.67]) * rng.uniform(0.97, 1.03, 7)
    return sum(np.sin(2 * np.pi * f0 * r * t) * np.exp(-t * rng.uniform(0.8, 3) * r) for r in ratios)


def clock_tick(rng, sr):
    """Ticks: short high clicks at a steady period."""
    period = rng.uniform(0.3, 1.0)

    def tick():
        return _band(rng, int(0.01 * sr), sr, rng.uniform(1500, 3000), 7000) * _decay(int(0.01 * sr), sr, 0.002)

    return _repeat(rng, sr, tick, rng.integers(3, 8), (period, period * 1.02))


def rain(rng, sr):
    """Rain: many small random drops over noise."""
    n = int(sr * rng.uniform(1.5, 3))
    drops = (rng.random(n) < rng.uniform(0.002, 0.02)) * rng.standard_normal(n)
    return _lowpass(drops, sr, rng.uniform(3000, 7000)) + 0.2 * _band(rng, n, sr, 1000, 6000)


def engine(rng, sr):
    """An engine: a low harmonic hum with firing pulses."""
    t = _t(sr, rng.uniform(1.5, 3))
    f0 = rng.uniform(30, 90) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t))
    am = 1 + 0.3 * np.sin(2 * np.pi * f0 * t / 2)
    return _harmonics(f0, sr, 20, 0.7) * am + 0.5 * _band(rng, len(t), sr, 50, 800)


def crickets(rng, sr):
    """Crickets: fast trains of high chirps."""
    t = _t(sr, rng.uniform(1, 3))
    carrier = np.sin(2 * np.pi * rng.uniform(3000, 5500) * t)
    pulses = (np.sin(2 * np.pi * rng.uniform(20, 60) * t) > 0.3) * (np.sin(2 * np.pi * rng.uniform(1, 3) * t) > 0)
    return carrier * pulses


def door_knock(rng, sr):
    """Knocks: a few low thumps."""

    def knock():
        n = int(0.12 * sr)
        tone = np.sin(2 * np.pi * rng.uniform(90, 260) * np.arange(n) / sr)
        return (tone + 0.5 * _band(rng, n, sr, 100, 1500)) * _decay(n, sr, 0.02)

    return _repeat(rng, sr, knock, rng.integers(2, 6), (0.08, 0.3))


def whistle(rng, sr):
    """A whistle: a pure high tone with vibrato."""
    t = _t(sr, rng.uniform(0.5, 2))
    f = rng.uniform(900, 3000) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 8) * t))
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.sin(np.pi * t / t[-1]).clip(0) ** 0.5


def wind(rng, sr):
    """Wind: slowly swelling low-passed noise."""
    n = int(sr * rng.uniform(2, 3))
    gust = _lowpass(np.abs(rng.standard_normal(n // 1000 + 2)), 1, 0.2)
    return _lowpass(rng.standard_normal(n), sr, rng.uniform(300, 1200)) * np.interp(
        np.arange(n), np.arange(len(gust)) * 1000, gust
    )


def bird_chirp(rng, sr):
    """Bird chirps: quick upward sweeps."""

    def chirp():
        t = _t(sr, rng.uniform(0.04, 0.15))
        f = np.linspace(rng.uniform(2000, 4500), rng.uniform(2500, 7000), len(t))
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(len(t))

    return _repeat(rng, sr, chirp, rng.integers(3, 12), (0.02, 0.2))


def footsteps(rng, sr):
    """Footsteps: low thuds at a walking pace."""
    period = rng.uniform(0.4, 0.7)

    def step():
        return _band(rng, int(0.08 * sr), sr, 60, rng.uniform(400, 1200)) * _decay(int(0.08 * sr), sr, 0.02)

    return _repeat(rng, sr, step, rng.integers(3, 7), (period, period * 1.1))


def glass_breaking(rng, sr):
    """Breaking glass: a crash and high shards."""
    n = int(sr * rng.uniform(0.6, 1.5))
    t = np.arange(n) / sr
    crash = _band(rng, n, sr, 1000, 8000) * _decay(n, sr, 0.08)
    ring = sum(
        np.sin(2 * np.pi * rng.uniform(2500, 7000) * t) * _decay(n, sr, rng.uniform(0.05, 0.4)) for _ in range(6)
    )
    return crash + 0.3 * ring


def helicopter(rng, sr):
    """A helicopter: low noise pulsed by the rotor."""
    t = _t(sr, rng.uniform(2, 3))
    blades = (np.sin(2 * np.pi * rng.uniform(8, 22) * t) > 0.6).astype(float)
    return _band(rng, len(t), sr, 60, rng.uniform(500, 1500)) * (0.3 + blades)


def water_drops(rng, sr):
    """Water drops: short plinks whose pitch sweeps upward."""

    def drop():
        t = _t(sr, rng.uniform(0.03, 0.08))
        f = np.linspace(rng.uniform(500, 1200), rng.uniform(1500, 3500), len(t))
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * _decay(len(t), sr, 0.015)

    return _repeat(rng, sr, drop, rng.integers(3, 10), (0.05, 0.5))


def hand_saw(rng, sr):
    """A hand saw: rasping noise bursts back and forth."""

    def stroke():
        n = int(sr * rng.uniform(0.25, 0.5))
        lo = rng.uniform(800, 2000)
        return _band(rng, n, sr, lo, lo * 3) * np.hanning(n)

    return _repeat(rng, sr, stroke, rng.integers(2, 6), (0.0, 0.1))


def alarm_beep(rng, sr):
    """An alarm: a square-wave beep repeated."""
    f, on = rng.uniform(800, 2500), rng.uniform(0.08, 0.3)

    def beep():
        return signal.square(2 * np.pi * f * _t(sr, on)) * 0.5

    return _repeat(rng, sr, beep, rng.integers(2, 8), (on * 0.5, on * 1.5))


def crackling_fire(rng, sr):
    """A fire: random crackles over a low rumble."""
    n = int(sr * rng.uniform(1.5, 3))
    pops = (rng.random(n) < rng.uniform(3e-4, 2e-3)) * rng.standard_normal(n) * 4
    return _lowpass(pops, sr, 6000) + 0.3 * _lowpass(rng.standard_normal(n), sr, 200)


def drum(rng, sr):
    """A drum: a pitched thump with a quick decay."""

    def hit():
        n = int(0.3 * sr)
        f = np.linspace(rng.uniform(120, 220), rng.uniform(40, 80), n)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * _decay(n, sr, rng.uniform(0.04, 0.12))

    return _repeat(rng, sr, hit, rng.integers(2, 7), (0.05, 0.35))


def vacuum_cleaner(rng, sr):
    """A vacuum cleaner: band-limited noise with a steady low hum."""
    t = _t(sr, rng.uniform(2, 3))
    return _band(rng, len(t), sr, rng.uniform(300, 900), rng.uniform(2000, 5000)) + 0.4 * np.sin(
        2 * np.pi * rng.uniform(100, 250) * t
    )


def cow_moo(rng, sr):
    """A moo: a long low harmonic call."""
    t = _t(sr, rng.uniform(0.8, 2))
    f0 = rng.uniform(90, 180) * (1 + 0.25 * np.sin(np.pi * t / t[-1]))
    return _harmonics(f0, sr, 25, 1.2) * np.sin(np.pi * t / t[-1])


def cat_meow(rng, sr):
    """A meow: a rising then falling harmonic call."""
    t = _t(sr, rng.uniform(0.4, 1.0))
    f0 = rng.uniform(400, 700) * (1 + 0.5 * np.sin(np.pi * t / t[-1]))
    return _harmonics(f0, sr, 8, 1.0) * np.sin(np.pi * t / t[-1])


def keyboard_typing(rng, sr):
    """Typing: irregular clicks."""

    def key():
        return _band(rng, int(0.015 * sr), sr, rng.uniform(1000, 2500), 6000) * _decay(int(0.015 * sr), sr, 0.004)

    return _repeat(rng, sr, key, rng.integers(6, 20), (0.05, 0.2))


def airplane(rng, sr):
    """An airplane: a slow swelling roar."""
    n = int(sr * rng.uniform(2, 3))
    sweep = np.linspace(rng.uniform(0.2, 1), rng.uniform(1, 2), n)
    return _lowpass(rng.standard_normal(n), sr, rng.uniform(400, 1500)) * sweep + 0.2 * _band(rng, n, sr, 2000, 4000)


def phone_ring(rng, sr):
    """A phone ring: two-tone bursts."""
    f1 = rng.uniform(400, 1000)

    def ring():
        t = _t(sr, rng.uniform(0.4, 1.0))
        trill = np.sin(2 * np.pi * rng.uniform(15, 25) * t) > 0
        return (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f1 * 1.1 * t)) * trill

    return _repeat(rng, sr, ring, rng.integers(1, 3), (0.2, 0.5))


EVENTS: dict[str, Callable] = {
    f.__name__: f
    for f in (
        dog_bark,
        siren,
        church_bell,
        clock_tick,
        rain,
        engine,
        crickets,
        door_knock,
        whistle,
        wind,
        bird_chirp,
        footsteps,
        glass_breaking,
        helicopter,
        water_drops,
        hand_saw,
        alarm_beep,
        crackling_fire,
        drum,
        vacuum_cleaner,
        cow_moo,
        cat_meow,
        keyboard_typing,
        airplane,
        phone_ring,
    )
}


def event(name: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    """One peak-normalised float32 event of class `name`."""
    x = np.asarray(EVENTS[name](rng, sr), np.float64)
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Coloured noise (white to brown, random tilt), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / sr), 20.0)
    x = np.fft.irfft(spec / freqs ** rng.uniform(0, 1), n)
    return (x / (x.std() + 1e-9)).astype(np.float32)
