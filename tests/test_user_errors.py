"""Every mistake a user makes gets one clear line and a non-zero exit (or works): config values out of range,
entry points without a recipe, wrong checkpoints, broken manifests and recipes."""

import dataclasses
import typing

import pytest
import torch
from support import golden
from support.stages import run_stage

import finetune.__main__ as finetune_stage
import pretrain.__main__ as pretrain_stage
import probes.__main__ as probes_stage
from probes.config import ProbeConfig
from slurm.config import LaunchConfig
from ssast.config import ConfigError, Range, load_config
from ssast.data import stats
from ssast.data.stats import StatsConfig
from ssast.eval import probe_suite
from ssast.models.loading import load_model
from ssast.train.finetuning import FinetuneRunConfig
from ssast.train.pretraining import PretrainConfig

pytestmark = pytest.mark.integration


def bounded_fields(schema: type, prefix: str = ""):
    """(dotted key, Range) of every range-checked value of a schema, nested sections included."""
    hints = typing.get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from bounded_fields(tp, prefix + f.name + ".")
            continue
        args = typing.get_args(tp)
        if typing.get_origin(tp) is typing.Union:  # Optional[...]
            tp, args = args[0], typing.get_args(args[0])
        if typing.get_origin(tp) is typing.Annotated:
            yield prefix + f.name, tp, next(a for a in args if isinstance(a, Range))


def outside(bound: Range, integer: bool) -> list:
    step = 1 if integer else 1e-3
    return (
        ([bound.ge - step] if bound.ge is not None else [])
        + ([bound.gt] if bound.gt is not None else [])
        + ([bound.le + step] if bound.le is not None else [])
        + ([bound.lt] if bound.lt is not None else [])
    )


SCHEMAS = [
    (PretrainConfig, "configs/pretrain/demo.yaml"),
    (ProbeConfig, "configs/probes/demo.yaml"),
    (FinetuneRunConfig, "configs/finetune/demo_esc50.yaml"),
    (StatsConfig, None),
    (LaunchConfig, None),
]
CASES = [
    (schema, recipe, key, value)
    for schema, recipe in SCHEMAS
    for key, tp, bound in bounded_fields(schema)
    for value in outside(bound, typing.get_args(tp)[0] is int)
]


def test_the_walk_covers_every_section():
    keys = {key for _, _, key, _ in CASES}
    assert (
        len(CASES) >= 60
        and {
            "data.batch_size",
            "data.num_parallel_calls",
            "train.log_every",
            "optim.lr",
            "train.max_steps",
            "optim.plateau_factor",
            "data.mixup",
            "ssl.mask_size",
            "features.std",
            "model.depth",
            "fstride",
            "batch_size",
            "slurm.nodes",
            "slurm.time_min",
            "model.decoder_depth",
            "epochs",
            "finetune.layer_decay",
            "optim.decay_factor",
        }
        <= keys
    )


@pytest.mark.parametrize("schema, recipe, key, value", CASES, ids=[f"{s.__name__}:{k}={v}" for s, _, k, v in CASES])
def test_every_bound_of_every_schema_rejects_a_value_outside_it(schema, recipe, key, value):
    with pytest.raises(ConfigError) as e:
        load_config(schema, recipe, [f"{key}={value}"])
    message = str(e.value)
    assert message.startswith(f"config key '{key}' must be ") and float(message.rsplit(", got ", 1)[1]) == value


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.betas=[0.9,1.5]", "config key 'optim.betas[1]' must be >= 0 and < 1, got 1.5"),
        ("optim.betas=[0.9]", "config key 'optim.betas' must be two numbers [beta1, beta2], got [0.9]"),
        (
            "model.input_tdim=256",
            "config key 'features.target_length' must be equal to model.input_tdim (256), got 128",
        ),
        (
            "model.tstride=8",
            "config key 'model.fstride' must be equal to the patch shape [16, 16] (pretraining uses "
            "non-overlapping patches), got [16, 8]",
        ),
        ("ssl.mask_size=65", "config key 'ssl.mask_size' must be <= 64 for a 8x8 patch grid, got 65"),
        ("features.timem=200", "config key 'features.timem' must be <= target_length (128), got 200"),
        ("train.device=gpu", "config key 'train.device' must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        (
            "model.decoder_depth=2 model.decoder_heads=5",
            "config key 'model.decoder_dim' must be a multiple of decoder_heads (5), got 192",
        ),
        (
            "data.train.kind=mp3",
            "config key 'data.train.kind' must be one of ['folder', 'list', 'json', 'csv', 'audioset', 'esc50', "
            "'speechcommands', 'shards'], got 'mp3'",
        ),
    ],
)
def test_checks_across_fields_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, "configs/pretrain/demo.yaml", override.split())
    assert str(e.value) == message


def run(module, *args):
    return run_stage(module, *args, check=False)


@pytest.mark.parametrize(
    "module, args", [("pretrain", []), ("finetune", []), ("probes", ["linear"]), ("ssast.data.stats", [])]
)
def test_help_lists_the_recipes_and_no_config_stops_with_the_usage(module, args, capsys):
    main = {
        "pretrain": pretrain_stage.main,
        "finetune": finetune_stage.main,
        "probes": probes_stage.main,
        "ssast.data.stats": stats.main,
    }[module]
    with pytest.raises(SystemExit) as e:
        main([*args, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: python -m {module}{' linear' if args else ''} --config FILE")
    assert "--print-config" in out and "recipes in configs/" in out and ("demo" in out)
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage:")
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith("error: --config FILE is required (a recipe from the list above, or your own)")
    )


def test_print_config_lists_every_key_with_its_value_and_type(capsys):
    with pytest.raises(SystemExit) as e:
        pretrain_stage.main(["--config", "configs/pretrain/demo.yaml", "train.max_steps=7", "--print-config"])
    lines = capsys.readouterr().out.splitlines()
    assert e.value.code == 0
    assert "train.max_steps: 7  # int, >= 1" in lines and "ssl.objective: joint  # joint | mpc | mpg" in lines
    assert "features.channel: 0  # int, >= 0 | null" in lines

    def leaves(cfg):  # a data source counts the options of its kind
        values = [getattr(cfg, f.name) for f in dataclasses.fields(cfg)]
        return sum(leaves(v) if dataclasses.is_dataclass(v) else 1 for v in values)

    assert len(lines) == leaves(load_config(PretrainConfig, "configs/pretrain/demo.yaml")) == 87
    assert "features.device: cpu  # cpu | model" in lines and "train.compile: false  # bool" in lines
    assert "data.train.kind: folder  # folder | list | json | csv | audioset | esc50 | speechcommands | shards" in lines


def test_the_demo_generator_and_the_probes_answer_help():
    out = run("ssast.demo", "--help")
    assert out.returncode == 0 and "overwrite: false  # bool" in out.stdout
    out = run("probes", "--help")
    assert out.returncode == 0 and out.stdout.startswith(
        "usage: python -m probes linear|extract|retrieval --config FILE"
    )


def one_line(capsys, main, args, code=1) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == code and len(lines) == 1, lines
    return lines[0]


def test_a_key_written_as_an_option_says_how_to_write_it(capsys):
    args = ["--config", "configs/pretrain/demo.yaml", "--train.max_steps=10"]
    assert one_line(capsys, pretrain_stage.main, args, code=2) == (
        "python -m pretrain: error: '--train.max_steps=10' is not an option: keys go without dashes, as "
        "train.max_steps=10"
    )


def test_a_yaml_syntax_error_names_the_line(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("data:\n  batch_size: 4\n  train: {kind: folder\nmodel: {}\n")
    line = one_line(capsys, pretrain_stage.main, ["--config", str(tmp_path / "r.yaml")], code=2)
    assert line == (
        f"python -m pretrain: error: config file {tmp_path}/r.yaml is not valid YAML: line 4, column 6: "
        "expected ',' or '}', but got ':'"
    )


def test_resume_from_released_weights_says_to_use_init_and_init_works(demo_root, tmp_path, capsys):
    from ssast.models import SSASTModel

    torch.manual_seed(5)
    weights = SSASTModel(load_config(PretrainConfig, "configs/pretrain/demo.yaml").model)
    released = {f"module.{k}": v for k, v in weights.state_dict().items()} | {
        "module.p_input_fdim": torch.tensor(128),
        "module.p_input_tdim": torch.tensor(128),
    }
    torch.save(released, tmp_path / "released.pth")
    base = [
        "--config",
        "configs/pretrain/demo.yaml",
        f"data.root={demo_root}",
        "train.max_steps=1",
        "train.tensorboard=false",
        "model.depth=4",
        "data.batch_size=4",
        "data.valid_holdout=8",
    ]
    line = one_line(capsys, pretrain_stage.main, [*base, f"run_dir={tmp_path}/a", f"resume={tmp_path}/released.pth"])
    assert line == (
        f"python -m pretrain: error: {tmp_path}/released.pth holds model weights only, not a run to "
        f"resume: start from its weights with init={tmp_path}/released.pth"
    )
    line = one_line(
        capsys, pretrain_stage.main, [*base, f"run_dir={tmp_path}/b", f"init={tmp_path}/released.pth", "model.depth=2"]
    )
    assert line == (
        f"python -m pretrain: error: init checkpoint {tmp_path}/released.pth has another architecture: "
        f"set model.depth=4"
    )
    pretrain_stage.main([*base, f"run_dir={tmp_path}/c", f"init={tmp_path}/released.pth"])
    after = load_model(tmp_path / "c" / "checkpoints" / "last.pt", "pretraining").model
    moved = max((a - b).abs().max().item() for a, b in zip(after.parameters(), weights.parameters(), strict=True))
    assert 0 < moved < 1e-3  # one Adam step of lr 1e-5 (the warm-up's first) from the released weights
    line = one_line(capsys, pretrain_stage.main, [*base, f"run_dir={tmp_path}/d", f"resume={tmp_path}/c/config.yaml"])
    assert (
        line
        == f"python -m pretrain: error: cannot read checkpoint {tmp_path}/c/config.yaml: not a PyTorch checkpoint file"
    )


def test_probe_errors_come_before_any_clip_is_read_and_released_geometry_is_passed(demo_root, tmp_path, capsys):
    base = ["linear", "--config", "configs/probes/demo.yaml", f"data.root={demo_root}"]
    line = one_line(capsys, probes_stage.main, [*base, "random_init_seeds=[0]", "model.input_tdim=96"])
    assert line == (
        "python -m probes: error: config key 'tasks[0].target_length' must be a multiple of the encoder "
        "input (96 frames), got 128"
    )
    assert "clip/s" not in capsys.readouterr().err  # no progress bar: nothing was read
    torch.save(golden.released_finetuned("16x16"), tmp_path / "finetuned.pth")
    line = one_line(capsys, probes_stage.main, [*base, f"checkpoints=[{tmp_path}/finetuned.pth]"])
    assert line == (
        "python -m probes: error: a released fine-tuned checkpoint does not store fstride, tstride, "
        "input_tdim: pass them"
    )
    line = one_line(capsys, probes_stage.main, [*base, "random_init_seeds=[0]", "embed.layers=[5]"])
    assert line == "python -m probes: error: config key 'embed.layers': layer 5 does not exist in a 4-layer encoder"
    encoders = probe_suite.encoders(
        load_config(
            ProbeConfig,
            "configs/probes/demo.yaml",
            [
                f"checkpoints=[{tmp_path}/finetuned.pth]",
                "fstride=10",
                "tstride=10",
                "input_tdim=512",
                "embed.layers=[-1]",
                "tasks=[{name: events, dataset: {kind: esc50, path: esc50}, protocol: folds, target_length: 512}]",
            ],
        )
    )
    assert encoders["pretrained"][0][0].grid == (12, 50)


def test_stats_with_a_wrong_root_is_one_line(tmp_path, capsys):
    line = one_line(capsys, stats.main, ["--config", "configs/pretrain/demo.yaml", f"data.root={tmp_path}/none"])
    assert line == f"python -m ssast.data.stats: error: audio folder not found: {tmp_path}/none/unlabeled"


def test_the_stages_run_from_the_folder_above_a_clone_named_like_the_package(tmp_path):
    """From the parent of a clone named ``ssast`` (its ``runs/`` inside), the clone folder is importable as a
    namespace package; the installed package must still win."""
    (tmp_path / "ssast" / "runs").mkdir(parents=True)
    (tmp_path / "ssast" / "pretrain").mkdir()
    for module in ("pretrain", "finetune", "probes"):
        out = run_stage(module, "--help", check=False, cwd=tmp_path)
        assert out.returncode == 0 and out.stdout.startswith(f"usage: python -m {module}"), out.stderr[-500:]
