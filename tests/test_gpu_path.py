"""The GPU path's switches, checked where they run on a CPU: the filterbank on the model's device equals the
loader's, the fused optimiser equals the per-parameter loop, a compiled run's losses equal eager ones, and srun's
tasks meet at the first host of the node list. ``benchmarks/gpu.sh`` measures them on a GPU."""

import itertools
import os

import pytest
import torch
from support.stages import DEMO_PRETRAIN, QUIET, run_stage

from ssast.config import ConfigError, load_config
from ssast.data.index import read_dataset
from ssast.data.loader import AudioLoader
from ssast.data.sampling import DataConfig
from ssast.data.sources import source
from ssast.distributed import init_distributed
from ssast.features import FeatureConfig
from ssast.models import ModelConfig, SSASTModel
from ssast.models.ast import SSLConfig
from ssast.train.finetuning import FinetuneRunConfig
from ssast.train.logs import read_metrics
from ssast.train.optim import OptimConfig, build_optimizer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clips(demo_root):
    return read_dataset(source(kind="esc50", path="esc50", split="1,2,3,4"), demo_root)


@pytest.mark.parametrize(
    "target_length, crop", [(128, "random"), (128, "start"), (1024, "start")], ids=["crop", "start", "padded"]
)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_filterbank_on_the_model_device_is_the_loaders(clips, target_length, crop, train):
    """The loader sends each view's window of samples; its filterbank, computed after the copy, is the model input
    the loader computes itself: the same crops (the same draws), padding rows and normalisation."""
    data = DataConfig(batch_size=8, views=2 if train else 1, mixup=0.5 if train else 0.0)
    batches = {}
    for device in ("cpu", "model"):
        features = FeatureConfig(target_length=target_length, crop=crop, mean=-6.6, std=5.4, device=device)
        batches[device] = list(itertools.islice(iter(AudioLoader(clips, features, data, train, seed=3)), 3))
    for loader, model in zip(batches["cpu"], batches["model"], strict=True):
        assert loader["path"] == model["path"] and torch.equal(loader["target"], model["target"])
        assert model["fbank"].shape == loader["fbank"].shape == (8, target_length, 128)
        assert "wave" not in model and (model["fbank"] - loader["fbank"]).abs().max() < 1e-5
    if target_length == 1024:  # 5-s clips: rows past the end hold the padding's normalised zero
        assert torch.all(batches["model"][0]["fbank"][:, -1] == (0 + 6.6) / (2 * 5.4))


def test_the_filterbank_on_the_model_device_refuses_the_loaders_random_steps():
    with pytest.raises(ConfigError) as error:
        load_config(FinetuneRunConfig, "configs/finetune/esc50.yaml", ["features.device=model"])
    assert "'features.device' must be cpu with SpecAugment (freqm, timem) or noise" in str(error.value)


def test_the_fused_optimiser_steps_as_the_per_parameter_loop():
    """The same update to float32 rounding; after it, parameters whose gradient is zero in exact arithmetic (the
    InfoNCE head's bias, the key bias) follow rounding noise that Adam scales up, so later steps compare losses."""
    for name in ("adam", "adamw"):
        torch.manual_seed(0)
        cfg = ModelConfig(size="tiny", depth=1, input_tdim=128)
        models = [SSASTModel(cfg, SSLConfig(mask_size=48, cluster=False)) for _ in range(2)]
        models[1].load_state_dict(models[0].state_dict())
        optims = [
            build_optimizer(OptimConfig(name=name, lr=1e-3), m, fused=f)
            for m, f in zip(models, (False, True), strict=True)
        ]
        assert optims[1].defaults["fused"] and not optims[0].defaults["fused"]
        x, losses = torch.randn(4, 128, 128), [[], []]
        for step in range(3):
            for m, opt, seen in zip(models, optims, losses, strict=True):
                opt.zero_grad()
                loss = m(x, generator=torch.Generator().manual_seed(step))["loss"]
                loss.backward()
                opt.step()
                seen.append(loss.item())
            if step == 0:
                pairs = zip(models[0].parameters(), models[1].parameters(), strict=True)
                assert max((a - b).abs().max() for a, b in pairs) < 1e-7
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)  # measured: 5.3e-6 at step 3


def test_srun_tasks_meet_at_the_first_host_of_the_node_list(monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(SLURM_NTASKS="4", SLURM_PROCID="3", SLURM_LOCALID="1", SLURM_JOB_ID="4242",
               SLURM_JOB_NODELIST="gpu[07-08],cpu3")  # fmt: skip
    monkeypatch.setattr(os, "environ", env)  # what the process group set-up writes stays in the test
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # the environment, not a real group
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: int(env["RANK"]))
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: int(env["WORLD_SIZE"]))
    d = init_distributed(torch.device("cpu"))
    assert (d.rank, d.world, d.local_rank) == (3, 4, 1)
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("gpu07", str(20000 + 4242))


@pytest.mark.slow
def test_a_compiled_run_has_the_eager_runs_losses(demo_root, tmp_path):
    """train.compile: the same steps through torch.compile's graphs; the losses agree to float32 rounding."""
    args = [*DEMO_PRETRAIN, *QUIET, "model.depth=1", "data.batch_size=8", "train.max_steps=3", "train.eval_every=3"]
    runs = {}
    for mode in ("false", "true"):
        run_stage("pretrain", *args, f"data.root={demo_root}", f"run_dir={tmp_path / mode}", f"train.compile={mode}")
        runs[mode] = read_metrics(tmp_path / mode)
    for eager, compiled in zip(runs["false"], runs["true"], strict=True):
        assert eager["step"] == compiled["step"]
        for key in ("loss", "mpc_loss", "mpg_loss"):
            assert compiled[key] == pytest.approx(eager[key], rel=1e-4), (eager["step"], key)
    assert runs["false"][0]["loss"] == pytest.approx(runs["true"][0]["loss"], rel=1e-6)  # step 1: same weights
