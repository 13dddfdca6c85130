"""Supervised fine-tuning of an `ASTClassifier`: the loss and the optimiser groups (head multiplier, layer-wise
decay, a frozen encoder) as a training unit, and per-epoch validation with the clip-level metrics and the two
averages of the reference: the uniform average of the weights over a range of epochs, and the running ensemble of
every epoch's validation predictions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ssast.config import NonNegative, PositiveFloat, Range, invalid
from ssast.distributed import Dist, gather
from ssast.eval.metrics import accuracy, d_prime, mean_auc, mean_average_precision
from ssast.models import ASTClassifier
from ssast.train.engine import TrainUnit, Validator


@dataclass
class FinetuneConfig:
    """The fine-tuning task: loss, validation metric, pooling, optimiser groups and the averages."""

    loss: Literal["bce", "ce"] = "bce"  # bce: sigmoid per class (multi-label); ce: softmax over soft targets
    monitor: Literal["accuracy", "mAP"] = "mAP"  # the validation metric that selects the epoch (best.pt)
    pooling: Literal["avgtok", "cls"] = "avgtok"
    head_lr_multiplier: PositiveFloat = 1.0  # the head's learning rate = lr * this
    layer_decay: Annotated[float, Range(gt=0, le=1)] = 1.0  # block i's lr *= layer_decay ** (depth - i); 1 = off
    freeze_epochs: NonNegative = 0  # train only the head for this many epochs
    # Uniform average of the weights at the end of epochs [first, last] (1-based, inclusive), evaluated after
    # training; empty: none.
    weight_average: list[Annotated[int, Range(ge=1)]] = field(default_factory=list)
    ensemble: bool = False  # also score the mean of every epoch's validation predictions so far

    def __post_init__(self):
        if self.weight_average and (len(self.weight_average) != 2 or self.weight_average[0] > self.weight_average[1]):
            raise invalid("weight_average", self.weight_average, "[first epoch, last epoch] with first <= last, or []")


def clip_metrics(targets: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Accuracy, mAP, mAUC and d' of one set of predictions."""
    auc = mean_auc(targets, scores)
    return {
        "accuracy": accuracy(targets, scores),
        "mAP": mean_average_precision(targets, scores),
        "mAUC": auc,
        "d_prime": d_prime(auc),
    }


def classification_loss(kind: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE per class, or softmax cross-entropy over (soft) targets."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), target)
    # Soft targets (mixup's label mixtures); for one-hot targets this equals the reference's CE on the argmax.
    return F.cross_entropy(logits.float(), target)


@torch.no_grad()
def predict(
    model: ASTClassifier, loader, loss: str, device, dist: Optional[Dist] = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(targets, scores, mean loss) over the whole of `loader`'s data set, gathered from every process. Scores are
    the sigmoid (bce) or softmax (ce) of the logits."""
    model.eval()
    loader.reset()
    targets, scores, loss_sum = [], [], 0.0
    for batch in loader:
        logits = model(batch["fbank"].to(device)).float()
        target = batch["target"].to(device)
        loss_sum += float(classification_loss(loss, logits, target)) * len(target)
        targets.append(target.cpu())
        scores.append((logits.sigmoid() if loss == "bce" else logits.softmax(-1)).cpu())
    parts = gather((torch.cat(targets).numpy(), torch.cat(scores).numpy(), loss_sum), dist or Dist())
    t, s = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return t, s, sum(p[2] for p in parts) / len(t)


class ClassifyUnit(TrainUnit):
    """Fine-tuning `model` on clip labels: the loss of a batch and the optimiser groups."""

    def __init__(self, model: ASTClassifier, cfg: FinetuneConfig, epoch_steps: int):
        self.model, self.cfg, self.epoch_steps = model, cfg, epoch_steps

    def step(self, model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The loss of one batch."""
        return {"loss": classification_loss(self.cfg.loss, model(batch["fbank"]), batch["target"])}

    def param_groups(self) -> list[dict]:
        """Encoder parameters by depth (patch embedding and prefix tokens 0, block i i + 1, final norm depth + 1)
        scaled by layer_decay ** (depth + 1 - layer), and the head at head_lr_multiplier; the encoder's groups
        are frozen (lr 0) for the first freeze_epochs epochs."""
        depth, frozen = self.model.cfg.depth, self.cfg.freeze_epochs * self.epoch_steps
        layers: dict[int, list] = {}
        for name, p in self.model.v.named_parameters():
            layer = (
                int(name.split(".")[1]) + 1
                if name.startswith("blocks.")
                else depth + 1
                if name.startswith("norm.")
                else 0
            )
            layers.setdefault(layer, []).append(p)
        groups = [
            {"params": ps, "lr_scale": self.cfg.layer_decay ** (depth + 1 - layer), "frozen_until": frozen}
            for layer, ps in sorted(layers.items())
        ]
        return groups + [{"params": list(self.model.mlp_head.parameters()), "lr_scale": self.cfg.head_lr_multiplier}]


class ClassifyValidator(Validator):
    """The clip-level metrics of the model at the end of each epoch (the same on every process), and the reference's
    two averages over epochs: the running ensemble of the epochs' validation predictions, and the uniform average
    of the weights over the epochs of `weight_average`. An epoch counts once in them, however often it is scored."""

    def __init__(self, cfg: FinetuneConfig, loader, epoch_steps: int, device, dist: Optional[Dist] = None):
        self.cfg, self.loader, self.epoch_steps, self.device, self.dist = cfg, loader, epoch_steps, device, dist
        self.monitor, self.mode = cfg.monitor, "max"
        self.epoch = 0  # the last epoch added to the averages
        self.ensemble_sum: Optional[torch.Tensor] = None
        self.ensemble_count = 0
        self.average_sum: Optional[dict[str, torch.Tensor]] = None
        self.average_count = 0

    def validate(self, model: ASTClassifier, step: int) -> dict[str, float]:
        """This epoch's metrics, and those of the ensemble of the epochs so far."""
        targets, scores, loss = predict(model, self.loader, self.cfg.loss, self.device, self.dist)
        epoch = -(-step // self.epoch_steps)  # a validation ends an epoch (a last, partial one too)
        if epoch > self.epoch:
            self._add(epoch, model, scores)
        result = {"loss": loss, **clip_metrics(targets, scores)}
        if self.cfg.ensemble:
            mean = (self.ensemble_sum / self.ensemble_count).numpy()
            result.update({f"ensemble_{k}": v for k, v in clip_metrics(targets, mean).items()})
        return result

    def _add(self, epoch: int, model: ASTClassifier, scores: np.ndarray) -> None:
        """Count epoch `epoch` in the ensemble and, when in its range, in the weight average."""
        self.epoch = epoch
        if self.cfg.ensemble:
            scores = torch.as_tensor(scores, dtype=torch.float64)
            self.ensemble_sum = scores if self.ensemble_sum is None else self.ensemble_sum + scores
            self.ensemble_count += 1
        first, last = self.cfg.weight_average or (0, -1)
        if first <= epoch <= last:
            weights = {k: v.detach().double().cpu() for k, v in model.state_dict().items()}
            self.average_sum = (
                weights if self.average_sum is None else {k: self.average_sum[k] + v for k, v in weights.items()}
            )
            self.average_count += 1

    def averaged_model(self, model: ASTClassifier) -> Optional[ASTClassifier]:
        """A copy of `model` holding the uniform average of the weights collected, or None."""
        if not self.average_count:
            return None
        average = ASTClassifier(model.cfg, model.mlp_head[1].out_features, model.pooling).to(self.device)
        average.classes = model.classes
        average.load_state_dict({k: (v / self.average_count).float() for k, v in self.average_sum.items()})
        return average

    def state_dict(self) -> dict:
        """The last epoch counted and the running sums of the ensemble and the weight average."""
        keys = ("epoch", "ensemble_sum", "ensemble_count", "average_sum", "average_count")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`."""
        for k, v in state.items():
            setattr(self, k, v)
