"""Masked spectrogram patch modeling as a training task: steps, validation with fixed masks, and images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ssast.config import NonNegative
from ssast.engine import Task
from ssast.models import ASTEncoder, SSASTModel
from ssast.spectrograms import figure_rgb, reconstruction_panels, reconstruction_plot


@dataclass
class ProbeHookConfig:
    """A fair linear probe of the encoder every so many pretraining steps."""

    every: NonNegative = 0  # steps between linear probes of the encoder during pretraining; 0: none
    start: bool = True  # also probe the initialisation (step 0 of a fresh run): a learning curve's first point
    recipe: str = ""  # a probe recipe (configs/probes/...): its tasks, features and C grid
    overrides: list[str] = field(default_factory=list)  # key=value overrides of that recipe, e.g. data.root=...
    # Where the probes' embedding stores go and stay, for a later `probes linear` over the same encoders to reuse;
    # empty: a folder of the run, removed after each probe.
    store_dir: str = ""


class PretrainTask(Task):
    """Validation computes what the objective trains and follows MPC accuracy (joint, mpc) or the MPG loss
    (mpg); without a validation loader the run has no validation."""

    def __init__(
        self,
        model: SSASTModel,
        valid_loader: Optional[object],
        device: torch.device,
        seed: int = 0,
        prober: Optional[Callable[[ASTEncoder], dict[str, float]]] = None,
        probe_every: int = 0,
        probe_start: bool = False,
    ):
        self.model, self.ssl, self.valid, self.device, self.seed = model, model.ssl, valid_loader, device, seed
        self.prober, self.probe_every = prober, probe_every if prober else 0
        self.probe_start = probe_start and bool(self.probe_every)
        self.monitor = None if valid_loader is None else "mpg_loss" if self.ssl.objective == "mpg" else "mpc_acc"
        self.mode = "min" if self.ssl.objective == "mpg" else "max"

    def step(self, model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The objective on the batch's fbank, masks drawn from the run's generator."""
        return model(batch["fbank"], generator=generator)

    def _valid_batches(self):
        self.valid.reset()
        for batch in self.valid:
            yield batch["fbank"].to(self.device)

    def evaluate(self, model: SSASTModel) -> dict[str, float]:
        """The objective's losses, each head with its own masks, drawn from the same seed at every validation."""
        generator = torch.Generator().manual_seed(self.seed + 7919)
        totals, count = {}, 0
        for fbank in self._valid_batches():
            out = model(fbank, generator=generator, mask_size=self.ssl.valid_mask_size)
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(fbank)
            count += len(fbank)
        return {k: v / count for k, v in totals.items()}

    def probe(self, model: SSASTModel) -> dict[str, float]:
        """The linear-probe metric of the encoder on each task of the probe recipe."""
        return self.prober(model.v)

    def images(self, model: SSASTModel) -> dict[str, torch.Tensor]:
        """Input, masked input, reconstruction and per-patch error of the first validation clip, with the masks
        of validation (`ssast.spectrograms`)."""
        fbank = next(iter(self._valid_batches()))[0]
        generator = torch.Generator().manual_seed(self.seed + 7919)
        mask = model.draw_mask(1, self.ssl.valid_mask_size, generator)[0].to(fbank.device)
        figure = figure_rgb(reconstruction_plot(reconstruction_panels(model, fbank, mask)))
        return {"valid/reconstruction": torch.from_numpy(figure)}
