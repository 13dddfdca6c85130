from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
from support.stages import run_stage

from ssast.config import ConfigError, load_config, save_config

pytestmark = pytest.mark.unit


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    name: Literal["adam", "adamw"] = "adam"


@dataclass
class Stage:
    root: str
    steps: int = 10
    amp: bool = False
    seed: Optional[int] = None
    optim: Optim = field(default_factory=Optim)


def test_recipe_and_nested_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("root: /data\nsteps: 5\noptim:\n  lr: 0.1\n")
    cfg = load_config(Stage, recipe, ["optim.lr=2e-4", "optim.betas=[0.95,0.999]", "amp=true", "seed=3"])
    assert cfg == Stage(root="/data", steps=5, amp=True, seed=3, optim=Optim(lr=2e-4, betas=[0.95, 0.999]))
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == pytest.approx(2e-4)


def test_int_is_accepted_for_float_and_round_trips(tmp_path):
    cfg = load_config(Stage, None, ["root=x", "optim.lr=1"])
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Stage, tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["root=x", "optim.lrr=1"], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (["root=x", "bogus.key=1"], "unknown config key 'bogus'"),
        (["root=x", "steps=ten"], "config key 'steps' must be int, got 'ten'"),
        (["root=x", "steps=true"], "config key 'steps' must be int, got True"),
        (["root=x", "optim.name=sgd"], "config key 'optim.name' must be one of ['adam', 'adamw'], got 'sgd'"),
        (["root=x", "optim=3"], "config key 'optim' must be a mapping, got 3"),
        (["steps=1"], "missing required config value 'root'"),
        (["root"], "override 'root' is not of the form key=value"),
        (["root=x", "optim.lr=.inf"], "config key 'optim.lr' must be a finite number, got inf"),
        (["root=x", "optim.lr=.nan"], "config key 'optim.lr' must be a finite number, got nan"),
    ],
)
def test_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(Stage, None, overrides)
    assert str(e.value) == message


def test_cli_exits_2_with_one_line_naming_the_key():
    out = run_stage("pretrain", "--config", "configs/pretrain/demo.yaml", "bogus.key=1", check=False)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "bogus" in lines[0], out.stderr


def test_cli_suggests_the_closest_key():
    out = run_stage("pretrain", "--config", "configs/pretrain/demo.yaml", "train.max_stepz=3", check=False)
    assert out.returncode == 2
    assert "did you mean 'train.max_steps'?" in out.stderr


def test_every_recipe_parses():
    from pathlib import Path

    from ssast.train.pretraining import PretrainConfig

    recipes = sorted(Path("configs/pretrain").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        load_config(PretrainConfig, recipe)


def test_missing_data_ends_with_one_line_and_exit_1(tmp_path):
    args = ["--config", "configs/pretrain/demo.yaml", f"data.root={tmp_path}/nowhere", f"run_dir={tmp_path}/run"]
    out = run_stage("pretrain", *args, check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        (f"python -m pretrain: error: audio folder not found: {tmp_path}/nowhere/unlabeled")
    ]


def test_a_data_source_takes_its_kind_s_options_only():
    from ssast.data.sources import AudioSetSource, FolderSource
    from ssast.train.pretraining import PretrainConfig

    cfg = load_config(
        PretrainConfig,
        "configs/pretrain/demo.yaml",
        ["data.train={kind: audioset, path: s.csv, labels: l.csv, audio_dir: clips}", "data.mix_with=[{path: more}]"],
    )
    assert cfg.data.train == AudioSetSource(path="s.csv", labels="l.csv", audio_dir="clips")
    assert cfg.data.mix_with == [FolderSource(path="more")]  # a mapping without a kind is a folder
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, "configs/pretrain/demo.yaml", ["data.train.labels=l.csv"])
    assert str(e.value) == (
        "config key 'data.train.labels' is not an option of kind folder (its options: kind, path, weight)"
    )
    with pytest.raises(ConfigError, match=r"'data.train.kind' must be one of \['folder', 'list', 'json', 'csv'"):
        load_config(PretrainConfig, "configs/pretrain/demo.yaml", ["data.train.kind=tsv"])


def test_no_shipped_pretraining_recipe_reads_evaluation_data():
    """Pretraining (its training mixture and its validation) never reads a corpus's dev, test or eval split."""
    import re
    from pathlib import Path

    from ssast.train.pretraining import PretrainConfig

    evaluation = re.compile(r"(^|[_.-])(dev|test|testing|eval|evaluation|valid|validation)([_.-]|$)")
    recipes = sorted(Path("configs/pretrain").glob("*.yaml"))
    for recipe in recipes:
        data = load_config(PretrainConfig, recipe).data
        for source in [data.train, *data.mix_with, data.valid]:
            assert not evaluation.search(Path(source.path).name), (recipe.name, source.path)
            assert source.kind not in ("esc50", "speechcommands") or source.split == "training", recipe.name
    released = [r for r in recipes if r.name.startswith("ssast_")]
    assert len(released) == 6
    for recipe in released:  # LibriSpeech enters as its 960 h of training subsets
        paths = [s.path for s in load_config(PretrainConfig, recipe).data.mix_with]
        assert "data/prepared/librispeech_train960.json" in paths, recipe.name
    assert evaluation.search("audioset_eval_segments.json") and evaluation.search("librispeech_dev-clean.json")
    assert evaluation.search("librispeech_test-other.json") and not evaluation.search("librispeech_train960.json")


def test_probe_stores_go_beside_the_output_unless_placed():
    from ssast.eval.probe_suite import ProbeConfig

    recipe = "configs/probes/demo.yaml"
    assert load_config(ProbeConfig, recipe, ["output=/elsewhere/probes.json"]).store_dir == "/elsewhere/embeddings"
    assert load_config(ProbeConfig, recipe).store_dir == "runs/embeddings"
    placed = ["output=/elsewhere/probes.json", "store_dir=/stores"]
    assert load_config(ProbeConfig, recipe, placed).store_dir == "/stores"
