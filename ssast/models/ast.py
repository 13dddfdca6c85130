"""Audio Spectrogram Transformer (AST) and its SSAST pretraining and classification models.

Module and parameter names follow the reference (``v.cls_token``, ``v.blocks.0.attn.qkv``, ``mask_embed``,
``cpredlayer``, ``mlp_head``, ...), so a released checkpoint maps onto these models key for key
(see `ssast.models.formats`; `ssast.models.load_model` loads every source). Conventions of the reference:

- input fbank [B, T, F] is transposed to an image [B, 1, F, T]: frequency is the height, row 0 the lowest bin;
- patches are tokenised frequency-major: token = f_idx * t_dim + t_idx;
- tiny/small/base carry two prefix tokens (cls, dist), base_nokd one; positions are learned, one per token;
- pre-norm timm blocks (LayerNorm eps 1e-6, exact GELU, qkv bias), no dropout anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from ssast.config import NonNegative, NonNegativeFloat, Positive, invalid
from ssast.models.masking import cluster_patch_mask, inverse_block_mask, random_frame_mask

Pooling = Literal["avgtok", "cls", "meanstd", "freq"]
POOLINGS = ("avgtok", "cls", "meanstd", "freq")
# size: (embedding dim, heads, prefix tokens)
SIZES = {"tiny": (192, 3, 2), "small": (384, 6, 2), "base": (768, 12, 2), "base_nokd": (768, 12, 1)}


@dataclass
class ModelConfig:
    """Encoder architecture and input geometry (pretraining requires stride == shape), and the decoder of the
    fast pretraining mode (``decoder_depth`` 0: the reference's encoder-only model)."""

    size: Literal["tiny", "small", "base", "base_nokd"] = "base"
    depth: Positive = 12
    fshape: Positive = 16
    tshape: Positive = 16
    fstride: Positive = 16
    tstride: Positive = 16
    input_fdim: Positive = 128
    input_tdim: Positive = 1024
    fused_attn: bool = True  # torch SDPA; False computes attention explicitly (bit-exact with the reference)
    decoder_depth: NonNegative = 0  # fast mode: blocks of the decoder that fills in the masked patches
    decoder_dim: Positive = 192
    decoder_heads: Positive = 3

    def __post_init__(self):
        if self.input_fdim < self.fshape:
            raise invalid("input_fdim", self.input_fdim, f">= fshape ({self.fshape})")
        if self.input_tdim < self.tshape:
            raise invalid("input_tdim", self.input_tdim, f">= tshape ({self.tshape})")
        if self.decoder_depth and self.decoder_dim % self.decoder_heads:
            raise invalid("decoder_dim", self.decoder_dim, f"a multiple of decoder_heads ({self.decoder_heads})")


def grid_size(cfg: ModelConfig) -> tuple[int, int]:
    """(frequency, time) patch grid: floor((size - shape) / stride) + 1 per axis."""
    return ((cfg.input_fdim - cfg.fshape) // cfg.fstride + 1, (cfg.input_tdim - cfg.tshape) // cfg.tstride + 1)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PatchEmbed(nn.Module):
    """The patch embedding: a convolution over the fbank image, tokens in frequency-major order."""

    def __init__(self, dim: int, shape: tuple[int, int], stride: tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=shape, stride=stride)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, N, d], frequency-major token order."""
        return self.proj(fbank.unsqueeze(1).transpose(2, 3)).flatten(2).transpose(1, 2)


class ASTEncoder(nn.Module):
    """The ViT backbone (the reference's ``v``): patch embedding, prefix tokens, positions, blocks, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        dim, heads, self.num_prefix = SIZES[cfg.size]
        self.embed_dim = dim
        self.grid = grid_size(cfg)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_embed = PatchEmbed(dim, (cfg.fshape, cfg.tshape), (cfg.fstride, cfg.tstride))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if self.num_prefix == 2 else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + self.num_patches, dim))
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.set_fused_attn(cfg.fused_attn)
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self.blocks.apply(_init_weights)

    def set_fused_attn(self, fused: bool) -> None:
        """Torch's fused attention (SDPA) or the explicit computation, bit-exact with the reference."""
        for blk in self.blocks:
            blk.attn.fused_attn = fused

    def prefix(self, batch: int) -> torch.Tensor:
        """The prefix tokens (cls, and dist for the two-token sizes) for a batch [B, P, d]."""
        # Each token expanded on its own: its gradient is then a contiguous [1, 1, d] sum, in the layout of
        # DDP's gradient buckets (a slice of the concatenation's gradient is not, and costs a copy per step).
        tokens = [self.cls_token] + ([self.dist_token] if self.dist_token is not None else [])
        return torch.cat([t.expand(batch, -1, -1) for t in tokens], 1)

    def forward(
        self,
        fbank: torch.Tensor,
        mask_index: Optional[torch.Tensor] = None,
        mask_token: Optional[torch.Tensor] = None,
        keep_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Normed tokens [B, num_prefix + N, d]; patch embeddings at `mask_index` [B, M] are replaced by
        `mask_token` before positions are added. With `keep_index` [B, K], only those patches (and the prefix)
        go through the blocks: [B, num_prefix + K, d]."""
        return self.forward_layers(fbank, mask_index, mask_token, keep_index)[-1]

    def forward_layers(
        self,
        fbank: torch.Tensor,
        mask_index: Optional[torch.Tensor] = None,
        mask_token: Optional[torch.Tensor] = None,
        keep_index: Optional[torch.Tensor] = None,
    ) -> list[torch.Tensor]:
        """The tokens after every block, the last through the final norm (what `forward` returns)."""
        x = self.patch_embed(fbank)
        if mask_index is not None:
            x = torch.where(_is_masked(mask_index, x.shape[1])[..., None], mask_token.to(x.dtype), x)
        x = torch.cat([self.prefix(x.shape[0]), x], 1) + self.pos_embed
        if keep_index is not None:
            x = torch.cat([x[:, : self.num_prefix], _take(x[:, self.num_prefix :], keep_index)], 1)
        layers = []
        for blk in self.blocks:
            x = blk(x)
            layers.append(x)
        layers[-1] = self.norm(x)
        return layers

    def pool(self, tokens: torch.Tensor, pooling: Pooling) -> torch.Tensor:
        """Tokens [B, prefix + N, d] of the full patch grid -> [B, D]: ``avgtok`` the mean of the patch tokens
        (prefix excluded), ``cls`` the mean of the prefix tokens, ``meanstd`` the patch tokens' mean and std
        concatenated, ``freq`` the mean over time of each frequency row of the grid, concatenated (it keeps where
        in frequency a patch was)."""
        patches = tokens[:, self.num_prefix :]
        if pooling == "avgtok":
            return patches.mean(1)
        if pooling == "cls":
            return tokens[:, : self.num_prefix].mean(1)
        if pooling == "meanstd":
            return torch.cat([patches.mean(1), patches.std(1)], 1)
        if pooling == "freq":  # tokens are frequency-major: [B, f, t, d]
            return patches.reshape(len(tokens), *self.grid, -1).mean(2).flatten(1)
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")

    def pooled_dim(self, pooling: Pooling) -> int:
        """The size of `pool`'s output."""
        return {"avgtok": 1, "cls": 1, "meanstd": 2, "freq": self.grid[0]}[pooling] * self.embed_dim


def _ssl_head(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


def _is_masked(mask_index: torch.Tensor, num_patches: int) -> torch.Tensor:
    """[B, M] patch indices -> [B, N] boolean, True at the masked patches."""
    masked = torch.zeros(mask_index.shape[0], num_patches, dtype=torch.bool, device=mask_index.device)
    return masked.scatter_(1, mask_index, True)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for every clip b: [B, N, C], [B, K] -> [B, K, C]."""
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


class Decoder(nn.Module):
    """Fast mode's decoder (as in MAE): the encoder's outputs for the visible patches, a learned mask token at
    every masked position, positions, a few pre-norm blocks. Dropped when the encoder is fine-tuned or probed."""

    def __init__(self, encoder_dim: int, cfg: ModelConfig, num_prefix: int, num_patches: int):
        super().__init__()
        dim = cfg.decoder_dim
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_prefix + num_patches, dim))
        self.blocks = nn.ModuleList(
            Block(dim, cfg.decoder_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(cfg.decoder_depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.num_prefix, self.num_patches = num_prefix, num_patches
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)

    def forward(self, tokens: torch.Tensor, keep_index: torch.Tensor, mask_index: torch.Tensor) -> torch.Tensor:
        """Encoder tokens [B, P + K, d] of the kept patches -> decoder outputs [B, M, dim] at `mask_index`."""
        x = self.embed(tokens)
        p, (b, _, dim) = self.num_prefix, x.shape
        patches = (
            self.mask_token.to(x.dtype)
            .expand(b, self.num_patches, dim)
            .scatter(1, keep_index[..., None].expand(-1, -1, dim), x[:, p:])
        )
        x = torch.cat([x[:, :p], patches], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return _take(self.norm(x)[:, p:], mask_index)


@dataclass
class SSLConfig:
    """The pretraining objective (defaults: the released models')."""

    mask_size: Positive = 400  # masked patches per clip
    valid_mask_size: Positive = 400  # the reference always validates with 400
    cluster: bool = True  # cluster masking (patch models); uniform masking otherwise (frame models)
    inverse_block: bool = False  # EAT's inverse block masking: the visible patches in square blocks (not in SSAST)
    objective: Literal["joint", "mpc", "mpg"] = "joint"
    mpg_weight: NonNegativeFloat = 10.0
    shared_mask: bool = False  # one pass, one mask for both heads: faster, not the reference
    norm_target: bool = False  # MPG regresses each patch standardised (MAE's choice), not the raw patch

    def __post_init__(self):
        if self.inverse_block and self.cluster:
            raise invalid("cluster", self.cluster, "false with inverse_block (one mask shape)")


class SSASTModel(nn.Module):
    """Masked spectrogram patch modeling: a discriminative (MPC, InfoNCE) and a generative (MPG) objective, set by
    `ssl` (a plain attribute: it is not saved with the weights)."""

    def __init__(self, cfg: ModelConfig, ssl: Optional[SSLConfig] = None):
        super().__init__()
        self.ssl = ssl or SSLConfig()
        if (cfg.fstride, cfg.tstride) != (cfg.fshape, cfg.tshape):
            raise ValueError("pretraining needs patch stride == patch shape (non-overlapping patches)")
        self.v = ASTEncoder(cfg)
        dim, patch_dim = self.v.embed_dim, cfg.fshape * cfg.tshape
        self.decoder = Decoder(dim, cfg, self.v.num_prefix, self.v.num_patches) if cfg.decoder_depth else None
        self.mask_embed = None if self.decoder else nn.Parameter(torch.zeros(1, 1, dim))  # the decoder has its own
        if self.mask_embed is not None:
            nn.init.xavier_normal_(self.mask_embed)
        head_dim = cfg.decoder_dim if self.decoder else dim
        self.cpredlayer = _ssl_head(head_dim, patch_dim)
        self.gpredlayer = _ssl_head(head_dim, patch_dim)

    @property
    def cfg(self) -> ModelConfig:
        """The architecture."""
        return self.v.cfg

    def patches(self, fbank: torch.Tensor) -> torch.Tensor:
        """Target patch vectors [B, N, fshape * tshape] (frequency-in-patch major), in token order."""
        cfg = self.cfg
        return F.unfold(
            fbank.unsqueeze(1).transpose(2, 3), (cfg.fshape, cfg.tshape), stride=(cfg.fstride, cfg.tstride)
        ).transpose(1, 2)

    def unpatch(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch vectors [B, N, fshape * tshape] (as `patches` gives them) -> images [B, F, T]."""
        cfg = self.cfg
        return F.fold(
            patches.transpose(1, 2).float(),
            (cfg.input_fdim, cfg.input_tdim),
            (cfg.fshape, cfg.tshape),
            stride=(cfg.fstride, cfg.tstride),
        )[:, 0]

    def draw_mask(self, batch: int, mask_size: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The mask shape of `ssl`: cluster (the reference's patch models), uniform (its frame models) or inverse
        block."""
        if self.ssl.inverse_block:
            return inverse_block_mask(batch, self.v.grid, mask_size, generator)
        if self.ssl.cluster:
            return cluster_patch_mask(batch, self.v.num_patches, mask_size, self.v.grid[1], generator)
        return random_frame_mask(batch, self.v.num_patches, mask_size, generator)

    def masked_outputs(self, fbank: torch.Tensor, mask_index: torch.Tensor):
        """Outputs [B, M, d] and target patches [B, M, P] at the masked positions. The reference's model runs
        the encoder over every patch, mask tokens included; fast mode runs it over the visible patches only and
        lets the decoder fill in the masked ones."""
        targets = _take(self.patches(fbank), mask_index).detach()
        if self.decoder is None:
            return _take(self.v(fbank, mask_index, self.mask_embed)[:, self.v.num_prefix :], mask_index), targets
        keep_index = torch.nonzero(~_is_masked(mask_index, self.v.num_patches))[:, 1].view(fbank.shape[0], -1)
        return self.decoder(self.v(fbank, keep_index=keep_index), keep_index, mask_index), targets

    def _mpc_loss(self, h: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of ``cpredlayer(h)``: scores S[a, b] = target_a . pred_b; loss = -mean log_softmax_b(S)[a, a];
        a column b is correct when the argmax over a of the row-softmaxed S is b. Negatives are the clip's other
        masked patches."""
        pred = self.cpredlayer(h)
        with torch.autocast(target.device.type, enabled=False):  # raw dot products overflow half precision
            scores = torch.bmm(target.float(), pred.float().transpose(1, 2))  # [B, M, M]
        m = scores.shape[-1]
        per_clip = torch.diagonal(scores.log_softmax(-1), dim1=1, dim2=2).sum(-1)
        loss = per_clip.cumsum(0)[-1] / (-per_clip.numel() * m)  # clip by clip, in the reference's order
        hits = scores.softmax(-1).argmax(1) == torch.arange(m, device=scores.device)
        return hits.float().mean(), loss

    def _mpg_loss(self, h: torch.Tensor, target: torch.Tensor, norm_target: bool = False) -> torch.Tensor:
        """Mean squared error of ``gpredlayer(h)``; `norm_target` standardises each target patch first (MAE's
        choice; the reference regresses the raw patches)."""
        target = target.float()
        if norm_target:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return F.mse_loss(self.gpredlayer(h).float(), target)

    def mpc(self, fbank: torch.Tensor, mask_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked patch classification: (accuracy, loss)."""
        return self._mpc_loss(*self.masked_outputs(fbank, mask_index))

    def mpg(self, fbank: torch.Tensor, mask_index: torch.Tensor, norm_target: bool = False) -> torch.Tensor:
        """Masked patch generation: mean squared error of the reconstructed patches."""
        return self._mpg_loss(*self.masked_outputs(fbank, mask_index), norm_target)

    def forward(
        self,
        fbank: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        mask_mpc: Optional[torch.Tensor] = None,
        mask_mpg: Optional[torch.Tensor] = None,
        mask_size: Optional[int] = None,
    ) -> dict[str, torch.Tensor]:
        """The objective of `ssl` on a batch [B, T, F]: losses and the MPC accuracy. Faithful mode (the released
        models): loss = MPC + mpg_weight * MPG from two encoder passes with independently drawn masks (or the
        given `mask_mpc` / `mask_mpg`, `mask_size` patches each; default ``ssl.mask_size``). ``shared_mask`` (not
        in the reference) runs one pass with one mask and feeds both heads: about half the compute. Fast mode (a
        model with a decoder) always shares its one mask."""
        s, out = self.ssl, {}
        mask_size = mask_size or s.mask_size

        def draw(given: Optional[torch.Tensor]) -> torch.Tensor:
            if given is not None:
                return given
            return self.draw_mask(fbank.shape[0], mask_size, generator).to(fbank.device)

        if (s.shared_mask or self.decoder is not None) and s.objective == "joint":
            h, target = self.masked_outputs(fbank, draw(mask_mpc))
            out["mpc_acc"], out["mpc_loss"] = self._mpc_loss(h, target)
            out["mpg_loss"] = self._mpg_loss(h, target, s.norm_target)
        else:
            if s.objective in ("joint", "mpc"):
                out["mpc_acc"], out["mpc_loss"] = self.mpc(fbank, draw(mask_mpc))
            if s.objective in ("joint", "mpg"):
                out["mpg_loss"] = self.mpg(fbank, draw(mask_mpg), s.norm_target)
        out["loss"] = out.get("mpc_loss", 0.0) + s.mpg_weight * out.get("mpg_loss", 0.0)
        return out


def describe(model: SSASTModel | ASTClassifier) -> str:
    """One line for a stage's log: size, depth, patches, stride, grid and parameter count."""
    m, (f, t) = model.cfg, model.v.grid
    return (
        f"{m.size}, {m.depth} layers, {m.fshape}x{m.tshape} patches, stride {m.fstride}x{m.tstride}, {f}x{t} grid, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
    )


def adapt_pos_embed(
    pos_embed: torch.Tensor,
    num_prefix: int,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    reference_quirks: bool = False,
) -> torch.Tensor:
    """Positional embedding of a pretraining grid (pf, pt) adapted to a new grid (f, t), prefix copied.

    Per axis: a smaller axis takes the centred slice starting at old // 2 - new // 2; otherwise bilinear
    resize (align_corners False). `reference_quirks` reproduces two slips of the reference that none of its
    recipes trigger: a time resize goes to 8 frequency rows (not pf), and the frequency slice is t rows long.
    """
    (pf, pt), (f, t) = old_grid, new_grid
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, num_prefix:].detach().reshape(1, pf, pt, dim).permute(0, 3, 1, 2)
    if t < pt:
        grid = grid[..., pt // 2 - t // 2 : pt // 2 - t // 2 + t]
    else:
        grid = F.interpolate(grid, size=(8 if reference_quirks else pf, t), mode="bilinear")
    if f < pf:
        grid = grid[:, :, pf // 2 - f // 2 : pf // 2 - f // 2 + (t if reference_quirks else f)]
    else:
        grid = F.interpolate(grid, size=(f, t), mode="bilinear")
    return torch.cat([pos_embed[:, :num_prefix].detach(), grid.flatten(2).transpose(1, 2)], 1)


def resized(encoder: ASTEncoder, input_tdim: int) -> ASTEncoder:
    """The encoder for inputs of `input_tdim` frames: the same weights, the positional embedding adapted
    (`adapt_pos_embed`); `encoder` itself when that is its input length already."""
    if input_tdim == encoder.cfg.input_tdim:
        return encoder
    out = ASTEncoder(replace(encoder.cfg, input_tdim=input_tdim)).to(encoder.pos_embed.device)
    state = encoder.state_dict()
    state["pos_embed"] = adapt_pos_embed(encoder.pos_embed, encoder.num_prefix, encoder.grid, out.grid)
    out.load_state_dict(state)
    return out


class ASTClassifier(nn.Module):
    """Encoder + ``mlp_head`` (LayerNorm with PyTorch's default eps 1e-5, Linear) on pooled tokens."""

    def __init__(self, cfg: ModelConfig, n_classes: int, pooling: Literal["avgtok", "cls"] = "avgtok"):
        super().__init__()
        self.v = ASTEncoder(cfg)
        self.pooling = pooling
        self.mlp_head = nn.Sequential(nn.LayerNorm(self.v.embed_dim), nn.Linear(self.v.embed_dim, n_classes))
        self.classes: list[str] = []  # class names, saved in checkpoints (empty when unknown)

    @property
    def cfg(self) -> ModelConfig:
        """The architecture."""
        return self.v.cfg

    def embed(self, fbank: torch.Tensor) -> torch.Tensor:
        """Pooled clip embedding [B, d]."""
        return self.v.pool(self.v(fbank), self.pooling)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes] of fbank [B, T, F]."""
        return self.mlp_head(self.embed(fbank))

    @classmethod
    def from_pretrained(
        cls,
        ssl: SSASTModel,
        n_classes: int,
        fstride: Optional[int] = None,
        tstride: Optional[int] = None,
        input_tdim: Optional[int] = None,
        pooling: Literal["avgtok", "cls"] = "avgtok",
        reference_quirks: bool = False,
    ) -> "ASTClassifier":
        """A fine-tuning model from a pretrained one: same patch weights with a new stride and input length,
        positional embedding adapted (`adapt_pos_embed`), a fresh ``mlp_head``."""
        old = ssl.cfg
        cfg = ModelConfig(
            **{
                **old.__dict__,
                "fstride": fstride or old.fstride,
                "tstride": tstride or old.tstride,
                "input_tdim": input_tdim or old.input_tdim,
                "decoder_depth": 0,
            }
        )
        model = cls(cfg, n_classes, pooling)
        state = {k: v for k, v in ssl.v.state_dict().items() if k != "pos_embed"}
        state["pos_embed"] = adapt_pos_embed(
            ssl.v.pos_embed, ssl.v.num_prefix, ssl.v.grid, model.v.grid, reference_quirks
        )
        model.v.load_state_dict(state)
        return model
