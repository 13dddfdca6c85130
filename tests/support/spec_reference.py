"""A deliberately plain reading of the reference behaviour (README, "Faithful to the reference"), used only by the
tests to cross-check the models.

Per-clip loops, explicit attention, weights read straight from a released-format state dict.
"""

import torch
import torch.nn.functional as F


def _block(x, sd, p, heads):
    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)

    n, d = x.shape
    qkv = F.linear(ln(x, p + "norm1"), sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
    q, k, v = qkv.reshape(n, 3, heads, d // heads).permute(1, 2, 0, 3)
    attn = (q @ k.transpose(-2, -1) * (d // heads) ** -0.5).softmax(-1)
    x = x + F.linear((attn @ v).transpose(0, 1).reshape(n, d), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    h = F.gelu(F.linear(ln(x, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
    return x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])


def encode(sd, fbank, stride, mask=None, heads=3):
    """One clip [T, F] -> final-norm tokens [prefix + N, d]; `mask` patch indices take ``mask_embed``."""
    w = sd["v.patch_embed.proj.weight"]
    image = fbank.t()[None, None]  # [1, 1, F, T]: transposed, frequency is the height
    tokens = F.conv2d(image, w, sd["v.patch_embed.proj.bias"], stride=stride)[0].flatten(1).t()
    if mask is not None:
        for i in mask.tolist():
            tokens[i] = sd["mask_embed"][0, 0]
    prefix = [sd["v.cls_token"][0]] + ([sd["v.dist_token"][0]] if "v.dist_token" in sd else [])
    x = torch.cat(prefix + [tokens]) + sd["v.pos_embed"][0]
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("v.blocks."))
    for i in range(depth):
        x = _block(x, sd, f"v.blocks.{i}.", heads)
    return F.layer_norm(x, x.shape[-1:], sd["v.norm.weight"], sd["v.norm.bias"], eps=1e-6), len(prefix)


def head(sd, name, h):
    return F.linear(
        F.relu(F.linear(h, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"])), sd[f"{name}.2.weight"], sd[f"{name}.2.bias"]
    )


def mpc_mpg(sd, x, mask_mpc, mask_mpg, heads=3):
    """(MPC accuracy, MPC loss, MPG loss) for a batch, clip by clip."""
    kernel = sd["v.patch_embed.proj.weight"].shape[2:]
    correct, nce, mse = 0.0, 0.0, 0.0
    b, m = mask_mpc.shape
    for i in range(b):
        patches = F.unfold(x[i].t()[None, None], kernel, stride=kernel)[0].t()  # [N, fshape * tshape]
        out, p = encode(sd, x[i], kernel, mask_mpc[i], heads)
        pred = head(sd, "cpredlayer", out[p + mask_mpc[i]])
        scores = patches[mask_mpc[i]] @ pred.t()
        correct += sum(int(scores.softmax(-1)[:, j].argmax() == j) for j in range(m))
        nce += sum(scores.log_softmax(-1)[j, j] for j in range(m))
        out, p = encode(sd, x[i], kernel, mask_mpg[i], heads)
        mse += ((head(sd, "gpredlayer", out[p + mask_mpg[i]]) - patches[mask_mpg[i]]) ** 2).mean()
    return correct / (b * m), -nce / (b * m), mse / b


def classify(sd, x, stride, pooling, heads=3):
    logits = []
    for clip in x:
        out, p = encode(sd, clip, stride, heads=heads)
        pooled = out[p:].mean(0) if pooling == "avgtok" else out[:p].mean(0)
        normed = F.layer_norm(pooled, pooled.shape, sd["mlp_head.0.weight"], sd["mlp_head.0.bias"], eps=1e-5)
        logits.append(F.linear(normed, sd["mlp_head.1.weight"], sd["mlp_head.1.bias"]))
    return torch.stack(logits)
