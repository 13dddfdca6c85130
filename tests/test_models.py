import math

import pytest
import torch
from support import golden
from support import spec_reference as spec
from support.golden import GOLDEN, VARIANTS

from ssast.models import (
    ASTClassifier,
    CheckpointError,
    ModelConfig,
    SSASTModel,
    export_official,
    grid_size,
    load_model,
    model_state,
)
from ssast.models.ast import SSLConfig

pytestmark = pytest.mark.unit


def geometry(g):
    return dict(fstride=g["fstride"], tstride=g["tstride"], input_tdim=g["input_tdim"])


def save(sd, path):
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("fused", [True, False])
def test_pretraining_losses_match_the_reference_golden_values(name, fused, tmp_path):
    g = GOLDEN["variants"][name]["pretrain"]
    path = save(golden.released_pretraining(name), tmp_path / "pretrain.pth")
    model = load_model(path, "pretraining", fused_attn=fused).model.eval()
    assert model.cfg.depth == 2 and model.cfg.size == "tiny"
    assert model.cfg.input_tdim == 1024 and (model.cfg.fshape, model.cfg.tshape) == tuple(map(int, name.split("x")))
    x, mask_mpc, mask_mpg = golden.pretraining_input(name), g["mask_mpc"].long(), g["mask_mpg"].long()
    with torch.no_grad():
        acc, loss = model.mpc(x, mask_mpc)
        mpg = model.mpg(x, mask_mpg)
        joint = model(x, mask_mpc=mask_mpc, mask_mpg=mask_mpg)
    tol = 1e-5 if fused else 2e-6  # explicit attention: within float32 rounding of the reference's kernels
    assert abs(loss.item() - g["mpc_loss"]) <= tol
    assert acc.item() == pytest.approx(g["mpc_acc"], abs=1e-9)  # 1 or 2 hits of 800
    assert abs(mpg.item() - g["mpg_loss"]) <= tol
    assert joint["loss"].item() == pytest.approx(loss.item() + 10 * mpg.item(), abs=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_pretraining_matches_a_plain_reading_of_the_spec(name):
    g = GOLDEN["variants"][name]["pretrain"]
    sd = golden.strip(golden.released_pretraining(name))
    x, m1, m2 = golden.pretraining_input(name)[:1], g["mask_mpc"][:1, :64].long(), g["mask_mpg"][:1, :64].long()
    model = load_model(sd, "pretraining").model.eval()
    with torch.no_grad():
        ours = (*model.mpc(x, m1), model.mpg(x, m2))
        plain = spec.mpc_mpg(sd, x, m1, m2)
    for a, b in zip(ours, plain, strict=True):
        assert abs(float(a) - float(b)) <= 1e-5


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("pooling", ["avgtok", "cls"])
@pytest.mark.parametrize("fused", [True, False])
def test_released_finetuned_checkpoint_gives_the_reference_logits(name, pooling, fused, tmp_path):
    g = GOLDEN["variants"][name]["finetuned"]
    path = save(golden.released_finetuned(name), tmp_path / "finetuned.pth")
    model = load_model(path, "classifier", pooling=pooling, fused_attn=fused, **geometry(g)).model.eval()
    x = golden.finetuning_input(name)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, g["n_classes"])
    assert (logits - g[f"logits_{pooling}"]).abs().max() <= 1e-5
    plain = spec.classify(golden.strip(golden.released_finetuned(name)), x, (g["fstride"], g["tstride"]), pooling)
    assert (logits - plain).abs().max() <= 1e-5


@pytest.mark.parametrize("name", VARIANTS)
def test_classifier_from_pretraining_checkpoint_adapts_positions_like_the_reference(name, tmp_path):
    g = GOLDEN["variants"][name]["adapt"]
    path = save(golden.released_pretraining(name), tmp_path / "pretrain.pth")
    model = load_model(path, "classifier", n_classes=g["n_classes"], **geometry(g)).model
    pos = model.v.pos_embed.detach()
    assert tuple(pos.shape) == tuple(g["pos_embed_shape"])
    assert pos.double().sum().item() == pytest.approx(g["pos_embed_sum"], abs=1e-4)
    assert (pos.flatten()[::13] - g["pos_embed_every13"]).abs().max() <= 1e-6
    model.mlp_head.load_state_dict({k.removeprefix("mlp_head."): v for k, v in golden.mlp_head(name).items()})
    with torch.no_grad():
        assert (model.eval()(golden.finetuning_input(name)) - g["logits_avgtok"]).abs().max() <= 1e-5


@pytest.mark.parametrize("name", VARIANTS)
def test_checkpoints_load_without_module_prefix_and_round_trip(name, tmp_path):
    official = golden.released_pretraining(name)
    model = load_model(golden.strip(official), "pretraining").model
    exported = export_official(model)
    assert exported.keys() == official.keys()
    for k, v in official.items():
        if ".head" not in k:
            assert torch.equal(exported[k], v), k
    torch.save(model_state(model), tmp_path / "own.pt")
    again = load_model(tmp_path / "own.pt", "pretraining").model
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))
    ft = golden.released_finetuned(name)
    clf = load_model(ft, "classifier", **geometry(GOLDEN["variants"][name]["finetuned"])).model
    assert export_official(clf).keys() == ft.keys()


def test_checkpoint_errors_are_one_line_and_name_the_keys(tmp_path):
    sd = golden.strip(golden.released_pretraining("16x16"))
    broken = {k: v for k, v in sd.items() if k != "v.blocks.1.attn.proj.bias"} | {"v.extra": torch.zeros(1)}
    with pytest.raises(CheckpointError) as e:
        load_model(broken, "pretraining")
    assert "missing: v.blocks.1.attn.proj.bias" in str(e.value) and "unexpected: v.extra" in str(e.value)
    assert "\n" not in str(e.value)
    finetuned = save(golden.released_finetuned("16x16"), tmp_path / "finetuned.pth")
    pretrained = save(golden.released_pretraining("16x16"), tmp_path / "pretrain.pth")
    with pytest.raises(CheckpointError, match="does not store fstride, tstride, input_tdim"):
        load_model(finetuned, "classifier")
    with pytest.raises(CheckpointError, match="v.pos_embed has 602 tokens but stride"):
        load_model(finetuned, "classifier", fstride=16, tstride=16, input_tdim=512)
    with pytest.raises(CheckpointError, match="fine-tuned"):
        load_model(finetuned, "pretraining")
    with pytest.raises(CheckpointError, match="needs n_classes"):
        load_model(pretrained, "classifier")
    (tmp_path / "torn.pth").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(tmp_path / "torn.pth", "pretraining")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pth", "pretraining")


# Released pretraining models count the unused timm heads (2 x (1000 d + 1000)) and two int64 buffers.
@pytest.mark.parametrize(
    "size, dim, reference_count", [("tiny", 192, 6_046_290), ("small", 384, 22_854_354), ("base", 768, 88_763_346)]
)
def test_parameter_counts_of_the_pretraining_models(size, dim, reference_count):
    model = SSASTModel(ModelConfig(size=size))
    ours = sum(p.numel() for p in model.parameters())
    assert ours + 2 * (1000 * dim + 1000) + 2 == reference_count


@pytest.mark.parametrize(
    "shape, stride, tdim, grid, n_classes, reference_count",
    [
        ((16, 16), (10, 10), 1024, (12, 101), 527, 88_132_063),
        ((16, 16), (10, 10), 512, (12, 50), 50, None),
        ((16, 16), (10, 10), 128, (12, 12), 35, 86_933_491),
        ((128, 2), (128, 1), 1024, (1, 1023), 527, None),
        ((128, 2), (128, 1), 512, (1, 511), 50, None),
        ((128, 2), (128, 1), 128, (1, 127), 35, None),
    ],
)
def test_token_and_parameter_counts_of_the_finetuning_recipes(shape, stride, tdim, grid, n_classes, reference_count):
    cfg = ModelConfig("base", 12, *shape, *stride, 128, tdim)
    assert grid_size(cfg) == grid
    if reference_count:
        model = ASTClassifier(cfg, n_classes)
        assert model.v.pos_embed.shape[1] == 2 + grid[0] * grid[1]
        assert sum(p.numel() for p in model.parameters()) + 2 * (1000 * 768 + 1000) == reference_count


def test_all_zero_input_at_initialisation_gives_ln_m_and_one_over_m():
    torch.manual_seed(0)
    model = SSASTModel(ModelConfig(size="tiny", depth=2))
    out = model(torch.zeros(2, 1024, 128), mask_size=400, generator=torch.Generator().manual_seed(0))
    assert out["mpc_loss"].item() == pytest.approx(math.log(400), abs=1e-6)
    assert out["mpc_acc"].item() == pytest.approx(1 / 400, abs=1e-9)


def test_masked_patches_are_replaced_before_positions_are_added():
    torch.manual_seed(0)
    model = SSASTModel(ModelConfig(size="tiny", depth=1, input_tdim=64)).eval()
    fbank, mask = torch.randn(1, 64, 128), torch.tensor([[0, 5, 31]])
    seen = {}
    model.v.blocks[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    model.v(fbank, mask, model.mask_embed)
    x, pos = seen["x"][0], model.v.pos_embed[0]
    expected = model.mask_embed[0, 0] + pos[2 + mask[0]]
    assert torch.allclose(x[2 + mask[0]], expected, atol=1e-6)
    unmasked = model.v.patch_embed(fbank)[0, 1] + pos[3]
    assert torch.allclose(x[3], unmasked, atol=1e-6)


def test_pooling_and_train_eval_equality():
    torch.manual_seed(0)
    model = ASTClassifier(ModelConfig(size="tiny", depth=2, fstride=10, tstride=10, input_tdim=128), 5)
    fbank = torch.randn(2, 128, 128)
    tokens = model.v(fbank)
    assert tokens.shape == (2, 2 + 12 * 12, 192)
    assert torch.allclose(model.v.pool(tokens, "avgtok"), tokens[:, 2:].mean(1))
    assert torch.allclose(model.v.pool(tokens, "cls"), (tokens[:, 0] + tokens[:, 1]) / 2)
    assert torch.equal(model.train()(fbank), model.eval()(fbank))


def test_mpc_targets_carry_no_gradient_and_shared_mask_feeds_both_heads():
    torch.manual_seed(0)
    model = SSASTModel(ModelConfig(size="tiny", depth=1, input_tdim=64))
    fbank = torch.randn(2, 64, 128, requires_grad=True)
    mask = model.draw_mask(2, 20, generator=torch.Generator().manual_seed(1))
    h, target = model.masked_outputs(fbank, mask)
    assert h.requires_grad and not target.requires_grad
    model.ssl = SSLConfig(shared_mask=True)
    shared = model(fbank, mask_size=20, mask_mpc=mask)
    acc, mpc = model.mpc(fbank, mask)
    assert shared["mpc_loss"].item() == pytest.approx(mpc.item(), abs=1e-6)
    assert shared["mpg_loss"].item() == pytest.approx(model.mpg(fbank, mask).item(), abs=1e-6)
    assert shared["loss"].item() == pytest.approx(mpc.item() + 10 * shared["mpg_loss"].item(), abs=1e-5)


def test_base_nokd_has_one_prefix_token_and_loads_back(tmp_path):
    model = ASTClassifier(ModelConfig(size="base_nokd", depth=1, input_tdim=64), 3)
    assert model.v.pos_embed.shape[1] == 1 + 8 * 4 and model.v.dist_token is None
    sd = export_official(model)
    assert "module.v.dist_token" not in sd and "module.v.head_dist.weight" not in sd
    again = load_model(sd, "classifier", fstride=16, tstride=16, input_tdim=64).model
    assert again.cfg.size == "base_nokd"
    fbank = torch.randn(1, 64, 128)
    assert torch.equal(again(fbank), model(fbank))


def test_models_engine_and_masking_import_without_fairseq2():
    import subprocess
    import sys

    code = (
        "import sys; import ssast.models, ssast.models.masking, ssast.train.engine, ssast.train.pretraining, "
        "ssast.distributed; "
        "sys.exit('fairseq2' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_bf16_autocast_runs_the_blocks_in_bf16_and_the_infonce_scores_in_fp32():
    torch.manual_seed(0)
    model = SSASTModel(ModelConfig(size="tiny", depth=2, input_tdim=128), SSLConfig(cluster=False))
    fbank = torch.randn(2, 128, 128)
    mask = model.draw_mask(2, 32, generator=torch.Generator().manual_seed(0))
    seen = {}
    model.v.blocks[1].attn.qkv.register_forward_hook(lambda m, i, out: seen.setdefault("qkv", out))
    model.cpredlayer.register_forward_hook(lambda m, i, out: seen.setdefault("pred", out))
    with torch.no_grad():
        fp32 = model(fbank, mask_mpc=mask, mask_mpg=mask)
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(fbank, mask_mpc=mask, mask_mpg=mask)
    assert seen["qkv"].dtype == seen["pred"].dtype == torch.bfloat16
    # The scores of the bf16 predictions, computed in fp32, give exactly the loss of the autocast run.
    target = torch.gather(model.patches(fbank), 1, mask[..., None].expand(-1, -1, 256))
    scores = torch.bmm(target, seen["pred"].float().transpose(1, 2))
    loss = -torch.diagonal(scores.log_softmax(-1), dim1=1, dim2=2).mean()
    assert bf16["mpc_loss"].dtype == torch.float32 and bf16["mpc_loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    for k in ("mpc_loss", "mpg_loss"):
        assert bf16[k].item() == pytest.approx(fp32[k].item(), rel=0.02) and bf16[k].item() != fp32[k].item()
