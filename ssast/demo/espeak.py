"""Synthetic speech from eSpeak NG (the library bundled by ``espeakng-loader``), through its C API.

A `Speaker`'s output is deterministic for the same sequence of calls (with the same seeds) since its creation.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from pathlib import Path

import numpy as np

_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: AUDIO_OUTPUT_SYNCHRONOUS
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Speaker:
    """Speaks words into float32 waveforms at `sample_rate` (22050 Hz for eSpeak NG)."""

    def __init__(self) -> None:
        import espeakng_loader

        # eSpeak's output depends on everything synthesised before in the process (static state in the
        # library). A private copy of the library starts from a clean state, so a Speaker is reproducible.
        with tempfile.TemporaryDirectory() as tmp:
            private = shutil.copy(espeakng_loader.get_library_path(), Path(tmp) / "libespeak-ng-private.so")
            self._lib = ctypes.CDLL(private)
        path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(_SYNCHRONOUS, 0, path, 0)
        if self.sample_rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):  # called by eSpeak for each synthesised chunk
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: eSpeak holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]

    def say(
        self, text: str, variant: str = "", rate: int = 175, pitch: int = 50, pitch_range: int = 50, seed: int = 0
    ) -> np.ndarray:
        """Waveform in [-1, 1] of `text` spoken by voice ``en`` with an optional variant (e.g. ``f3``, ``klatt``).
        Voices with breath noise (f2, f3, f5, whisper) draw it from eSpeak's own generator, which it seeds from the
        clock: `seed` re-seeds it, so the same call gives the same samples in every process."""
        voice = f"en+{variant}" if variant else "en"
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        data = text.encode() + b"\0"
        self._lib.espeak_ng_SetRandSeed(seed)
        self._lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
        self._lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0
