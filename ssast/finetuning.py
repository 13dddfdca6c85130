"""Supervised fine-tuning of an `ASTClassifier` as a training task: the loss, per-epoch validation with the
clip-level metrics, the optimiser groups (head multiplier, layer-wise decay, a frozen encoder) and the two
averages of the reference: the uniform average of the weights over a range of epochs, and the running ensemble
of every epoch's validation predictions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ssast.config import NonNegative, PositiveFloat, Range, invalid
from ssast.distributed import Dist, gather
from ssast.engine import Task
from ssast.metrics import accuracy, d_prime, mean_auc, mean_average_precision
from ssast.models import ASTClassifier


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


class ClassifyTask(Task):
    """An `ssast.engine.Task` fine-tuning `model` on clip labels; validation runs at the end of every epoch."""

    mode = "max"

    def __init__(
        self,
        model: ASTClassifier,
        cfg: FinetuneConfig,
        epoch_steps: int,
        valid_loader,
        device,
        dist: Optional[Dist] = None,
    ):
        self.model, self.cfg, self.epoch_steps = model, cfg, epoch_steps
        self.valid, self.device, self.dist = valid_loader, device, dist or Dist()
        self.monitor = cfg.monitor if valid_loader is not None else None
        self.epoch = 0  # validations so far = epochs done
        self.ensemble_sum: Optional[torch.Tensor] = None
        self.average_sum: Optional[dict[str, torch.Tensor]] = None
        self.average_count = 0

    # -- training -----------------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE per class, or softmax cross-entropy over (soft) targets."""
        if self.cfg.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits.float(), target)
        # Soft targets (mixup's label mixtures); for one-hot targets this equals the reference's CE on the argmax.
        return F.cross_entropy(logits.float(), target)

    def step(self, model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The loss of one batch."""
        return {"loss": self.loss(model(batch["fbank"]), batch["target"])}

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

    # -- validation ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: ASTClassifier, loader) -> tuple[np.ndarray, np.ndarray, float]:
        """(targets, scores, mean loss) over the whole of `loader`'s data set, gathered from every process.
        Scores are the sigmoid (bce) or softmax (ce) of the logits."""
        model.eval()
        loader.reset()
        targets, scores, loss_sum = [], [], 0.0
        for batch in loader:
            logits = model(batch["fbank"].to(self.device)).float()
            target = batch["target"].to(self.device)
            loss_sum += float(self.loss(logits, target)) * len(target)
            targets.append(target.cpu())
            scores.append((logits.sigmoid() if self.cfg.loss == "bce" else logits.softmax(-1)).cpu())
        parts = gather((torch.cat(targets).numpy(), torch.cat(scores).numpy(), loss_sum), self.dist)
        t, s = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return t, s, sum(p[2] for p in parts) / len(t)

    def evaluate(self, model: ASTClassifier) -> dict[str, float]:
        """Metrics of this epoch's model on the validation set (the same on every process), and of the ensemble
        of the epochs so far; adds the weights to the average when the epoch is in its range."""
        targets, scores, loss = self.predict(model, self.valid)
        self.epoch += 1
        result = {"loss": loss, **clip_metrics(targets, scores)}
        if self.cfg.ensemble:
            self.ensemble_sum = torch.as_tensor(scores, dtype=torch.float64) + (
                0 if self.ensemble_sum is None else self.ensemble_sum
            )
            result.update(
                {f"ensemble_{k}": v for k, v in clip_metrics(targets, (self.ensemble_sum / self.epoch).numpy()).items()}
            )
        first, last = self.cfg.weight_average or (0, -1)
        if first <= self.epoch <= last:
            weights = {k: v.detach().double().cpu() for k, v in model.state_dict().items()}
            self.average_sum = (
                weights if self.average_sum is None else {k: self.average_sum[k] + v for k, v in weights.items()}
            )
            self.average_count += 1
        return result

    def averaged_model(self) -> Optional[ASTClassifier]:
        """A copy of the model holding the uniform average of the weights collected, or None."""
        if not self.average_count:
            return None
        model = ASTClassifier(self.model.cfg, self.model.mlp_head[1].out_features, self.model.pooling).to(self.device)
        model.classes = self.model.classes
        model.load_state_dict({k: (v / self.average_count).float() for k, v in self.average_sum.items()})
        return model

    # -- checkpointed state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The epoch count and the running sums of the ensemble and the weight average."""
        return {
            "epoch": self.epoch,
            "ensemble_sum": self.ensemble_sum,
            "average_sum": self.average_sum,
            "average_count": self.average_count,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`."""
        self.epoch, self.ensemble_sum = state["epoch"], state["ensemble_sum"]
        self.average_sum, self.average_count = state["average_sum"], state["average_count"]
