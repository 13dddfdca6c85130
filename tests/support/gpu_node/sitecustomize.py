"""On PYTHONPATH, makes this interpreter look like a GPU node's (torch, timm, numpy, PyYAML and transformers): the
project's other dependencies cannot be imported, and `importlib.util.find_spec` says they are absent."""

import sys

for name in ("fairseq2", "faiss", "scipy", "submitit", "tensorboard", "soundfile", "torchaudio", "sklearn",
             "matplotlib", "espeakng_loader", "selenium"):  # fmt: skip
    sys.modules[name] = None
