"""Fast pretraining: the encoder on the visible patches only, a decoder for the masked ones; and the faithful
path against a straightforward implementation of the reference's step."""

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F
from support.reference_step import ReferenceStep, reference_mask

from ssast.models import CheckpointError, ModelConfig, SSASTModel, export_official, load_encoder, model_state
from ssast.models.loading import load_model

pytestmark = pytest.mark.unit

TINY = ModelConfig(size="tiny", depth=2, input_tdim=256)  # 8 x 16 patch grid


@pytest.mark.parametrize("cluster", [True, False])
def test_faithful_losses_and_gradients_equal_the_reference_step(cluster):
    # Seeded masks: fused and explicit attention differ by ~1e-7, and about one draw in 300 puts a cpredlayer
    # ReLU input that close to zero, where the gradient jumps (a kink, not a bug: float64 agrees).
    random.seed(0)
    torch.manual_seed(0)
    model = SSASTModel(TINY)
    reference = ReferenceStep(SSASTModel(TINY))
    reference.model.load_state_dict(model.state_dict())
    fbank = torch.randn(3, 256, 128)
    masks = tuple(torch.stack([reference_mask(128, 60, 16, cluster) for _ in range(3)]) for _ in range(2))
    ours = model(fbank, mask_size=60, mask_mpc=masks[0], mask_mpg=masks[1])
    theirs = reference(fbank, 60, masks=masks)
    for k in ("mpc_acc", "mpc_loss", "mpg_loss", "loss"):
        assert ours[k].item() == pytest.approx(theirs[k].item(), abs=1e-5), k
    ours["loss"].backward()
    theirs["loss"].backward()
    for (name, a), b in zip(model.named_parameters(), reference.model.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def fast_model():
    torch.manual_seed(0)
    return SSASTModel(TINY.__class__(**{**TINY.__dict__, "decoder_depth": 2, "decoder_dim": 64, "decoder_heads": 2}))


def test_fast_mode_encodes_only_the_visible_patches_and_decodes_the_masked_ones():
    model = fast_model()
    fbank, mask = torch.randn(2, 256, 128), torch.stack([torch.randperm(128)[:96] for _ in range(2)])
    seen = {}

    def record(name):
        return lambda m, args: seen.update({name: tuple(args[0].shape)})  # returns None: args unchanged

    model.v.blocks[0].register_forward_pre_hook(record("encoder"))
    model.decoder.blocks[0].register_forward_pre_hook(record("decoder"))
    h, target = model.masked_outputs(fbank, mask)
    assert seen == {"encoder": (2, 2 + 32, 192), "decoder": (2, 2 + 128, 64)}
    assert h.shape == (2, 96, 64) and torch.equal(
        target, torch.gather(model.patches(fbank), 1, mask[..., None].expand(-1, -1, 256))
    )
    # The encoder's output for a visible patch does not depend on what the masked patches hold.
    keep = torch.stack([torch.tensor(sorted(set(range(128)) - set(m.tolist()))) for m in mask])
    patches = model.patches(fbank).scatter(1, mask[..., None].expand(-1, -1, 256), 7.0)
    other = F.fold(patches.transpose(1, 2), (128, 256), (16, 16), stride=(16, 16))[:, 0].transpose(1, 2)
    assert (other != fbank).float().mean().item() == pytest.approx(0.75, abs=0.01)
    assert torch.allclose(model.v(fbank, keep_index=keep), model.v(other, keep_index=keep), atol=1e-6)


def test_fast_mode_trains_both_heads_from_one_pass_and_loads_as_an_encoder(tmp_path):
    model = fast_model()
    fbank, mask = torch.randn(2, 256, 128), torch.stack([torch.randperm(128)[:96] for _ in range(2)])
    out = model(fbank, mask_size=96, mask_mpc=mask)
    h, target = model.masked_outputs(fbank, mask)
    assert out["mpg_loss"].item() == pytest.approx(model._mpg_loss(h, target).item(), abs=1e-6)
    assert out["loss"].item() == pytest.approx(out["mpc_loss"].item() + 10 * out["mpg_loss"].item(), abs=1e-5)
    model.ssl = dataclasses.replace(model.ssl, norm_target=True)
    normed = model(fbank, mask_size=96, mask_mpc=mask)["mpg_loss"]
    t = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    assert normed.item() == pytest.approx(((model.gpredlayer(h) - t) ** 2).mean().item(), abs=1e-6)
    out["loss"].backward()
    assert model.mask_embed is None and all(p.grad is not None for p in model.parameters())
    torch.save(model_state(model), tmp_path / "fast.pt")
    encoder = load_encoder(tmp_path / "fast.pt")
    assert all(
        torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), model.v.state_dict().values(), strict=True)
    )
    clf = load_model(tmp_path / "fast.pt", "classifier", n_classes=5).model
    assert clf.cfg.decoder_depth == 0 and not any("decoder" in k for k in clf.state_dict())
    with pytest.raises(CheckpointError, match="fast-mode model has no released format"):
        export_official(model)
