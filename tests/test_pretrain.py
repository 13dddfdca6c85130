"""The pretraining stage's own options: the periodic probe of the encoder, and the demo recipes on small data."""

import pytest

import pretrain.__main__ as pretrain_stage
from ssast.config import load_config
from ssast.eval.probe_suite import ProbeConfig, probe_tasks
from ssast.models.loading import encoder_and_front_end
from ssast.train.logs import read_metrics

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_pretraining_logs_a_fair_probe_every_n_steps(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        f"data.root={demo_root}",
        "model.depth=1",
        "embed.layers=[1]",
        "embed.poolings=[avgtok]",
        "cs=[1.0]",
        "tasks=[{name: events, dataset: {kind: esc50, path: esc50}, protocol: folds, target_length: 128}]",
    ]
    pretrain_stage.main(
        [
            "--config",
            "configs/pretrain/demo.yaml",
            f"data.root={demo_root}",
            f"run_dir={run_dir}",
            "data.valid_holdout=8",
            "data.batch_size=8",
            "model.depth=1",
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "train.keep_last=4",
            "train.tensorboard=false",
            "probe.every=2",
            "probe.recipe=configs/probes/demo.yaml",
            f"probe.overrides=[{','.join(repr(o) for o in overrides)}]",
        ]
    )
    lines = read_metrics(run_dir, "probe")
    probed = {line["step"]: line["events"] for line in lines}
    assert sorted(probed) == [0, 2, 4]  # step 0: the initialisation
    assert set(lines[0]) == {"step", "events", "events_held_out", "events_map"}
    # the logged value is the fair probe of that step's encoder
    cfg = load_config(ProbeConfig, "configs/probes/demo.yaml", overrides)
    for step in (2, 4):
        encoder, trained = encoder_and_front_end(run_dir / f"checkpoints/step_{step:08d}.pt")
        assert probe_tasks(cfg, encoder, str(tmp_path / f"s{step}"), trained) == pytest.approx(
            {k: v for k, v in lines[step // 2].items() if k != "step"}, abs=1e-12
        )
    assert not list(run_dir.glob(".probe-stores-*"))  # the probes' stores are removed


def test_a_probe_store_dir_keeps_the_stores_for_later_probes_of_the_same_encoders(demo_root, tmp_path):
    overrides = [f"data.root={demo_root}", "model.depth=1", "embed.layers=[1]", "embed.poolings=[avgtok]", "cs=[1.0]"]
    overrides.append("tasks=[{name: ev, dataset: {kind: esc50, path: esc50}, protocol: folds, target_length: 128}]")
    stores = tmp_path / "stores"
    pretrain_stage.main(
        ["--config", "configs/pretrain/demo.yaml", f"data.root={demo_root}", f"run_dir={tmp_path / 'run'}"]
        + ["data.valid_holdout=8", "data.batch_size=8", "model.depth=1", "train.max_steps=2", "train.tensorboard=false"]
        + ["probe.every=2", "probe.recipe=configs/probes/demo.yaml", f"probe.store_dir={stores}"]
        + [f"probe.overrides=[{','.join(repr(o) for o in overrides)}]"]
    )
    kept = sorted(p.name for p in stores.iterdir())
    assert len(kept) == 2 * 5  # steps 0 and 2, five folds each
    logged = read_metrics(tmp_path / "run", "probe")[-1]
    cfg = load_config(ProbeConfig, "configs/probes/demo.yaml", overrides)
    encoder, trained = encoder_and_front_end(tmp_path / "run/checkpoints/last.pt")
    again = probe_tasks(cfg, encoder, str(stores), trained)
    assert sorted(p.name for p in stores.iterdir()) == kept  # found, not extracted again
    assert again["ev"] == logged["ev"]


def test_an_encoder_pretrained_on_longer_crops_is_probed_resized_to_the_recipes_input(demo_root, tmp_path):
    """A probe recipe's input_tdim: the periodic probe of a 256-frame encoder is that of the encoder resized to
    128-frame inputs, as `encoder_and_front_end` gives it to `probes linear`."""
    overrides = [f"data.root={demo_root}", "model.depth=1", "embed.layers=[1]", "embed.poolings=[avgtok]", "cs=[1.0]"]
    overrides += ["input_tdim=128", "tasks=[{name: kw, dataset: {kind: speechcommands, path: speechcommands}}]"]
    run_dir = tmp_path / "run"
    pretrain_stage.main(
        ["--config", "configs/pretrain/demo.yaml", f"data.root={demo_root}", f"run_dir={run_dir}"]
        + ["features.target_length=256", "model.input_tdim=256", "ssl.mask_size=96", "ssl.valid_mask_size=96"]
        + ["data.valid_holdout=8", "data.batch_size=8", "model.depth=1", "train.max_steps=2", "train.tensorboard=false"]
        + ["probe.every=2", "probe.start=false", "probe.recipe=configs/probes/demo.yaml"]
        + [f"probe.overrides=[{','.join(repr(o) for o in overrides)}]"]
    )
    logged = read_metrics(run_dir, "probe")[-1]
    encoder, trained = encoder_and_front_end(run_dir / "checkpoints/last.pt", input_tdim=128)
    assert encoder.cfg.input_tdim == 128 and logged["step"] == 2
    cfg = load_config(ProbeConfig, "configs/probes/demo.yaml", overrides)
    assert probe_tasks(cfg, encoder, str(tmp_path / "stores"), trained) == pytest.approx(
        {k: v for k, v in logged.items() if k != "step"}, abs=1e-12
    )


def test_a_probe_recipe_that_does_not_fit_stops_pretraining_at_start(demo_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pretrain_stage.main(
            [
                "--config",
                "configs/pretrain/demo.yaml",
                f"data.root={demo_root}",
                f"run_dir={tmp_path}",
                "data.valid_holdout=8",
                "probe.every=2",
                "probe.recipe=configs/probes/demo.yaml",
                "probe.overrides=['tasks=[{name: x, dataset: {kind: esc50, path: esc50}, target_length: 100}]']",
            ]
        )
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and err.endswith(
        "config key 'tasks[0].target_length' must be a multiple of the encoder input (128 frames), got 100"
    )
    assert not (tmp_path / "metrics.jsonl").exists()


def test_the_demo_recipes_run_on_the_small_built_in_data_with_a_smaller_holdout(demo_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pretrain_stage.main(
            ["--config", "configs/pretrain/demo_fast.yaml", f"data.root={demo_root}", f"run_dir={tmp_path}/a"]
        )
    assert e.value.code == 1 and capsys.readouterr().err.strip().splitlines()[-1] == (
        "python -m pretrain: error: cannot hold out 64 of the 40 examples for validation: set data.valid_holdout "
        "below 40"
    )
    result = pretrain_stage.main(
        [
            "--config",
            "configs/pretrain/demo_fast.yaml",
            f"data.root={demo_root}",
            f"run_dir={tmp_path}/b",
            "data.valid_holdout=8",
            "train.max_steps=2",
            "data.batch_size=4",
            "train.tensorboard=false",
        ]
    )
    assert set(result) == {"mpc_acc", "mpc_loss", "mpg_loss", "loss"}
