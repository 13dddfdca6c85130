"""Dataset normalisation statistics, computed the way the reference does.

    python -m ssast.data.stats --config configs/pretrain/X.yaml [data.train.path=...] [batch_size=1000]

Reads the recipe's ``data`` and ``features`` sections, runs the training set through the evaluation front end
without normalisation (zero padding to ``target_length`` included), and prints the mean over batches of each
batch's mean and standard deviation: the numbers to put in ``features.mean`` / ``features.std``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from ssast.cli import progress, run_cli, setup_logging
from ssast.config import Positive, cli_config
from ssast.data.index import read_dataset
from ssast.data.loader import AudioLoader
from ssast.data.sampling import DataConfig
from ssast.features import FeatureConfig


@dataclass
class StatsConfig:
    """What to measure: a pretraining recipe's data and front end, and how many batches."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    batch_size: Positive = 1000


def dataset_stats(cfg: StatsConfig) -> tuple[float, float]:
    """(mean, std) of the un-normalised fbank, averaged over batches as the reference's tool does."""
    dataset = read_dataset(cfg.data.train, cfg.data.root)
    raw = dataclasses.replace(cfg.features, mean=0.0, std=0.5)  # (x - 0) / (2 * 0.5) leaves features as they are
    means, stds = [], []
    with progress(len(dataset.examples), "reading") as advance:
        for batch in AudioLoader(dataset, raw, cfg.data, train=False, batch_size=cfg.batch_size):
            means.append(batch["fbank"].mean().item())
            stds.append(batch["fbank"].std().item())
            advance(len(batch["path"]))
    return float(np.mean(means)), float(np.mean(stds))


def main(argv: list[str] | None = None) -> None:
    """The command line: print the statistics to put into a recipe's features section."""
    prog = "python -m ssast.data.stats"
    cfg = cli_config(StatsConfig, argv, prog=prog, sections=("data", "features"), doc=__doc__, recipes="pretrain")
    torch.set_num_threads(1)
    setup_logging(True)
    mean, std = run_cli(prog, lambda: dataset_stats(cfg))
    print(f"features.mean={mean:.7g} features.std={std:.7g}")


if __name__ == "__main__":
    main()
