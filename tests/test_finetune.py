import json

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.__main__ import main
from finetune.predict import Predictor
from finetune.predict import main as predict_main
from ssast.config import load_config
from ssast.data.index import read_dataset
from ssast.data.loader import AudioLoader
from ssast.data.sources import source
from ssast.eval.metrics import accuracy, mean_average_precision
from ssast.models import ASTClassifier, CheckpointError, ModelConfig, SSASTModel, model_state
from ssast.models.formats import load_classifier, read
from ssast.train.classification import ClassifyUnit, ClassifyValidator, FinetuneConfig
from ssast.train.finetuning import FinetuneRunConfig
from ssast.train.finetuning import finetune as run
from ssast.train.optim import OptimConfig, Schedule

pytestmark = pytest.mark.integration

TINY = ["model.size=tiny", "model.depth=1", "train.tensorboard=false", "data.num_parallel_calls=1"]


def recipe(name, *overrides):
    return load_config(FinetuneRunConfig, f"configs/finetune/{name}.yaml", [*TINY, *overrides])


def evaluate(model: ASTClassifier, dataset, cfg: FinetuneRunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(targets, logits) of a data set, computed here without the task's code."""
    model.eval()
    targets, logits = [], []
    with torch.no_grad():
        for batch in AudioLoader(dataset, cfg.features, cfg.data, train=False):
            targets.append(batch["target"].numpy())
            logits.append(model(batch["fbank"]).numpy())
    return np.concatenate(targets), np.concatenate(logits)


def test_multistep_schedule_is_torch_multisteplr_per_epoch_with_staircase_warmup_and_group_scales():
    cfg = OptimConfig(lr=0.1, schedule="multistep", warmup_steps=100, decay_start=3, decay_every=2, decay_factor=0.5)
    w = torch.nn.Parameter(torch.zeros(1))
    head, encoder = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [encoder], "frozen_until": 40}, {"params": [head], "lr_scale": 10.0}], lr=0.1)
    schedule = Schedule(cfg, opt, max_steps=200, epoch_steps=20)
    reference = torch.optim.lr_scheduler.MultiStepLR(torch.optim.SGD([w], lr=0.1), milestones=[3, 5, 7, 9], gamma=0.5)
    for epoch in range(10):
        for step in range(epoch * 20, (epoch + 1) * 20):
            schedule.before_step(step)
            warm = min(1.0, step // 50 * 50 / 100)
            expected = reference.get_last_lr()[0] * warm
            assert opt.param_groups[1]["lr"] == pytest.approx(10 * expected, rel=1e-12)
            assert opt.param_groups[0]["lr"] == (pytest.approx(expected, rel=1e-12) if step >= 40 else 0.0)
        reference.optimizer.step()
        reference.step()
    assert reference.get_last_lr()[0] == 0.1 / 16


def test_param_groups_decay_by_depth_and_freeze_the_encoder():
    model = ASTClassifier(ModelConfig(size="tiny", depth=3, input_tdim=64), 5)
    unit = ClassifyUnit(model, FinetuneConfig(layer_decay=0.5, head_lr_multiplier=3.0, freeze_epochs=2), 7)
    groups = unit.param_groups()
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert [g["lr_scale"] for g in groups] == [0.5**4, 0.5**3, 0.5**2, 0.5, 1.0, 3.0]
    assert [g.get("frozen_until", 0) for g in groups] == [14] * 5 + [0]
    assert groups[1]["params"] == list(model.v.blocks[0].parameters())
    assert groups[4]["params"] == list(model.v.norm.parameters())


@pytest.mark.slow
def test_esc50_protocol_selects_the_epoch_on_the_fold_averaged_curve(demo_root, tmp_path):
    cfg = recipe(
        "demo_esc50",
        f"data.root={demo_root}/esc50",
        "init=scratch",
        "epochs=3",
        f"run_dir={tmp_path}",
        "train.keep_last=3",
        "data.batch_size=25",
    )
    results = run(cfg)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    curves = []
    for k in range(1, 6):
        lines = [json.loads(line) for line in (tmp_path / f"fold{k}/metrics.jsonl").read_text().splitlines()]
        curves.append([line["valid_accuracy"] for line in lines if "valid_accuracy" in line])
    assert np.array(curves).shape == (5, 3)
    assert not (tmp_path / "fold1/images").exists()  # fine-tuning draws no images: no empty folder
    epoch = int(np.argmax(np.mean(curves, 0)))
    assert results["epoch"] == epoch + 1 and results["mean_curve"] == pytest.approx(np.mean(curves, 0).tolist())
    assert results["fold_accuracy"] == [c[epoch] for c in curves]
    assert results["mean_accuracy"] == pytest.approx(np.mean([c[epoch] for c in curves]), abs=1e-12)
    # Each fold's accuracy at that epoch, recomputed from its checkpoint on its own fold (100 training clips
    # of 25 per step: 4 steps an epoch).
    for k in range(1, 6):
        model = load_classifier(tmp_path / f"fold{k}/checkpoints/step_{4 * (epoch + 1):08d}.pt")
        data = read_dataset(source(kind="esc50", path="", split=str(k)), cfg.data.root)
        targets, logits = evaluate(model, data, cfg)
        assert len(targets) == 25 and accuracy(targets, logits) == pytest.approx(results["fold_accuracy"][k - 1])
        assert model.classes == read_dataset(cfg.data.train, cfg.data.root).classes


def test_speech_commands_selects_on_validation_and_reports_test(demo_root, tmp_path):
    torch.manual_seed(0)
    init = tmp_path / "pretrained.pt"
    torch.save(model_state(SSASTModel(ModelConfig(size="tiny", depth=1, input_tdim=128))), init)
    cfg = recipe(
        "demo_speechcommands",
        f"data.root={demo_root}/speechcommands",
        f"init={init}",
        "epochs=3",
        f"run_dir={tmp_path}/run",
        "data.batch_size=64",
    )
    results = run(cfg)
    curve = [c["accuracy"] for c in results["valid_curve"]]
    assert len(curve) == 3 and results["epoch"] == int(np.argmax(curve)) + 1
    model = load_classifier(tmp_path / "run/checkpoints/best.pt")
    for split in ("validation", "testing"):
        data = read_dataset(source(kind="speechcommands", path="", split=split), cfg.data.root)
        targets, logits = evaluate(model, data, cfg)
        reported = results["valid"]["accuracy"] if split == "validation" else results["test"]["accuracy"]
        assert accuracy(targets, logits) == pytest.approx(reported, abs=1e-12)
    assert (tmp_path / "run/per_class_ap.csv").read_text().splitlines()[0] == "index,name,positives,ap"
    # Prediction on a file of the test list: the Python API equals the model on the pipeline's features, and a
    # 3-s file (298 frames) gives three windows of 128 frames whose mean the CLI ranks.
    predictor = Predictor(tmp_path / "run/checkpoints/best.pt")
    clip = data.examples[0].path
    wave, rate = sf.read(clip, dtype="float32")
    assert torch.allclose(
        predictor.scores(torch.from_numpy(wave), rate)[0], torch.sigmoid(torch.from_numpy(logits[0])), atol=1e-5
    )
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([wave, wave, wave]), rate)
    windows = predictor.scores(torch.from_numpy(sf.read(long, dtype="float32")[0]), rate)
    assert windows.shape == (3, 35)
    top = predict_main([f"checkpoint={tmp_path / 'run/checkpoints/best.pt'}", str(long), "top_k=3"])
    expected = predictor.top_k(windows.mean(0), 3)
    assert [name for name, _ in top[str(long)]] == [name for name, _ in expected]
    assert all(name in predictor.classes for name, _ in expected)


def test_weight_average_and_ensemble_equal_their_definitions(demo_root, tmp_path):
    cfg = recipe(
        "demo_audioset",
        f"data.root={demo_root}/audioset",
        "init=scratch",
        "epochs=2",
        "finetune.weight_average=[1,2]",
        f"run_dir={tmp_path}",
        "data.batch_size=50",
        "features.target_length=256",
        "model.input_tdim=256",
        "train.keep_last=2",
    )
    results = run(cfg)
    steps = sorted((tmp_path / "checkpoints").glob("step_*.pt"))
    assert len(steps) == 2
    snapshots = [read(p)["model"] for p in steps]
    valid = read_dataset(cfg.data.valid, cfg.data.root)
    model = load_classifier(steps[0])
    model.load_state_dict({k: (snapshots[0][k] + snapshots[1][k]) / 2 for k in snapshots[0]})
    targets, logits = evaluate(model, valid, cfg)
    assert results["weight_average"]["mAP"] == pytest.approx(mean_average_precision(targets, logits), abs=1e-6)
    scores = [torch.sigmoid(torch.from_numpy(evaluate(load_classifier(p), valid, cfg)[1])).numpy() for p in steps]
    assert results["ensemble_valid"]["mAP"] == pytest.approx(
        mean_average_precision(targets, np.mean(scores, 0)), abs=1e-6
    )
    # The averages travel in the checkpoint: a validator restored from last.pt rebuilds the same averaged weights.
    validator = ClassifyValidator(cfg.finetune, None, 1, "cpu")
    validator.load_state_dict(read(tmp_path / "checkpoints/last.pt")["validator"])
    averaged = validator.averaged_model(load_classifier(steps[1]))
    assert validator.epoch == 2 and all(
        torch.allclose(a, model.state_dict()[k], atol=1e-6) for k, a in averaged.state_dict().items()
    )


def test_the_esc50_interface_on_any_esc50_folder(demo_root, tmp_path, capsys):
    """The reference recipe on a folder in the ESC-50 layout (25 classes, 44.1 kHz here), one fold."""
    main(
        [
            "--config",
            "configs/finetune/esc50.yaml",
            f"data.root={demo_root}/esc50",
            "init=scratch",
            f"run_dir={tmp_path}",
            "folds=[2]",
            "epochs=1",
            *TINY,
            "data.batch_size=50",
            "model.fstride=16",
            "model.tstride=16",
        ]
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["fold_accuracy"]) == 1 and 0 <= results["mean_accuracy"] <= 1
    assert results["mean_accuracy"] == results["fold_accuracy"][0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("init=BAD", "checkpoint not found: BAD"),
        ("data.root=NOWHERE", "ESC-50 metadata not found: NOWHERE/meta/esc50.csv"),
        ("folds=[9]", "config key 'folds' must be folds of the data set ([1, 2, 3, 4, 5]), got [9]"),
        ("train.max_steps=10", "config key 'train.max_steps' must be left unset: fine-tuning counts in epochs"),
        ("train.eval_every=800", "config key 'train.eval_every' must be left unset"),  # the engine's default too
    ],
)
def test_bad_input_fails_at_start_with_one_line(demo_root, tmp_path, capsys, override, message):
    args = [
        "--config",
        "configs/finetune/demo_esc50.yaml",
        f"data.root={demo_root}/esc50",
        "init=scratch",
        f"run_dir={tmp_path}",
        override,
    ]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code in (1, 2) and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "fold1").exists()


def test_wrong_checkpoints_and_unknown_recipes_fail_with_one_line(demo_root, tmp_path, capsys):
    classifier = tmp_path / "classifier.pt"
    torch.save(model_state(ASTClassifier(ModelConfig(size="tiny", depth=1, input_tdim=512), 7)), classifier)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    cases = [
        ([f"init={classifier}"], "is a classifier of 7 classes, the data have 25: pass new_head=true"),
        ([f"init={foreign}"], "not an SSAST checkpoint"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit):
            main(
                [
                    "--config",
                    "configs/finetune/demo_esc50.yaml",
                    f"data.root={demo_root}/esc50",
                    f"run_dir={tmp_path}/r",
                    *TINY,
                    *extra,
                ]
            )
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    with pytest.raises(SystemExit) as e:
        main(["--config", "configs/finetune/esc5O.yaml", "init=scratch"])
    err = capsys.readouterr().err.strip()
    assert (
        e.value.code == 2
        and "config file not found: configs/finetune/esc5O.yaml (recipes in configs/finetune/: "
        "as20k, as2m, demo_audioset, demo_esc50, demo_speechcommands, esc50, speechcommands)"
        in err
    )


def test_a_hugging_face_directory_initialises_fine_tuning(tmp_path):
    from ssast.models.hf import export_hf
    from ssast.train.finetuning import build_model

    torch.manual_seed(0)
    source = ASTClassifier(ModelConfig("tiny", 1, 16, 16, 16, 16, 128, 128), 4, "cls")
    source.classes = ["a", "b", "c", "d"]
    export_hf(source, tmp_path / "hf")
    cfg = recipe("demo_speechcommands", f"init={tmp_path}/hf", "finetune.pooling=cls")
    model = build_model(cfg, ["a", "b", "c", "d"])
    x = torch.randn(2, 128, 128)
    with torch.no_grad():  # the same encoder and head (eps 1e-6 in every norm after the round trip)
        assert (model.eval()(x) - source.eval()(x)).abs().max() < 2e-5 * source(x).abs().max()
    with pytest.raises(CheckpointError, match="is a classifier of 4 classes, the data have 35"):
        build_model(cfg, [str(i) for i in range(35)])
    assert (
        build_model(recipe("demo_speechcommands", f"init={tmp_path}/hf", "new_head=true"), ["x"] * 35)
        .mlp_head[1]
        .out_features
        == 35
    )


def test_results_of_a_finished_run_are_not_overwritten_by_a_run_of_other_folds(demo_root, tmp_path, capsys):
    args = [
        "--config",
        "configs/finetune/demo_esc50.yaml",
        *TINY,
        "init=scratch",
        f"data.root={demo_root}/esc50",
        f"run_dir={tmp_path}/run",
        "epochs=1",
        "features.target_length=128",
        "model.input_tdim=128",
    ]
    main([*args, "folds=[1]"])
    before = (tmp_path / "run" / "results.json").read_text()
    with pytest.raises(SystemExit) as e:
        main([*args, "folds=[2]"])
    assert e.value.code == 1 and capsys.readouterr().err.strip().splitlines()[-1] == (
        f"python -m finetune: error: {tmp_path / 'run'} already holds fine-tuning results (results.json): continue the "
        f"run with resume=auto, choose another run_dir, or pass overwrite=true to replace it"
    )
    assert (tmp_path / "run" / "results.json").read_text() == before and not (tmp_path / "run" / "fold2").exists()
    assert main([*args, "folds=[2]", "overwrite=true"])["folds"] == [2]
