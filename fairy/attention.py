"""Fairy's anchor-based cross-frame attention for diffusers UNets.

Every self-attention layer (``attn1`` in down, mid and up blocks) gets an
:class:`AnchorAttnProcessor`; text cross-attention (``attn2``) keeps its own
processor. The processors share one :class:`AnchorCache`, owned by the
pipeline, which says what pass is running:

* ``write`` (anchor pass): the batch holds the K anchor frames of each
  guidance branch, laid out ``[branch 0: a_1..a_K, branch 1: a_1..a_K, ...]``.
  Every anchor's queries attend to the tokens of all K anchors of its branch,
  and the layer's anchor tokens are stored under (layer, step).
* ``read`` (frame pass): the batch holds B ordinary frames per branch, laid out
  the same way. A frame's queries attend to ``[its own tokens ; the cached
  anchor tokens of the same layer, step and branch]``::

      softmax(Q [K_self, K_anchors]^T / sqrt(d)) [V_self, V_anchors]

* ``off``: plain self-attention (K = 0, per-frame editing).

What is cached is chosen by ``AnchorCache(store=...)``: ``"hidden"`` keeps the
layer's input hidden states and recomputes K/V with the layer's own
projections (half the memory), ``"kv"`` keeps the projected keys and values
(no recomputation per frame batch). ``bench/bench_anchor_cache.py`` measures
both; see docs/method.md for the numbers and docs/library.md for the default.

Reduced anchors (opt-in, beyond the paper): a layer given a pool factor ``f``
caches its anchor tokens averaged over ``f x f`` blocks of each anchor's token
grid (where ``f`` divides the grid), so a frame attends to ``f^2`` times fewer
anchor tokens there. Each pooled key stands for ``f^2`` tokens, so its score
gets ``log(f^2)`` added (the frame pass then always uses the merged kernel,
whose log-sum-exp takes the bias): where the ``f x f`` tokens agree, the
result equals full anchor attention exactly.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterable

import torch
import torch.nn.functional as F

__all__ = ["AnchorCache", "AnchorAttnProcessor", "set_anchor_attention", "self_attention_layers", "layer_scale",
           "ANCHOR_KERNELS"]

_MODES = ("off", "write", "read")
_STORES = ("hidden", "kv")
# How a frame attends to [its own tokens ; the anchors'] in the frame pass (equal within float rounding):
# "concat" copies the anchors' keys and values next to every frame's and makes one attention call;
# "merged" makes two (each frame over its own tokens; all frames of a branch, folded into one query
# sequence, over the anchors, which are never copied) and merges them by their log-sum-exp.
ANCHOR_KERNELS = ("concat", "merged")


class AnchorCache:
    """The anchor tokens of every self-attention layer, denoising step and guidance branch.

    A plain object: tensors in a dict keyed by ``(layer name, step index)``, each
    with the guidance branches stacked on dim 0 (``[branches, K * tokens,
    channels]``). It can be saved with :meth:`save` and loaded on another
    worker with :meth:`load`; with the instruction embedding and the settings in
    ``meta`` it is all a worker needs to edit any frame of the clip.
    """

    def __init__(self, store: str = "kv", meta: dict | None = None):
        if store not in _STORES:
            raise ValueError(f"AnchorCache store must be one of {_STORES}, got {store!r}")
        self.store = store
        self.meta: dict = dict(meta or {})
        self.entries: dict[tuple[str, int], torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = {}
        # Set by the pipeline before each UNet call.
        self.mode = "off"
        self.step = 0
        self.num_branches = 1

    # -- pipeline side -------------------------------------------------
    def set_pass(self, mode: str, *, step: int = 0, num_branches: int = 1) -> None:
        if mode not in _MODES:
            raise ValueError(f"AnchorCache mode must be one of {_MODES}, got {mode!r}")
        self.mode, self.step, self.num_branches = mode, step, num_branches

    @property
    def nbytes(self) -> int:
        total = 0
        for value in self.entries.values():
            for t in value if isinstance(value, tuple) else (value,):
                total += t.numel() * t.element_size()
        return total

    def to(self, device: torch.device | str) -> "AnchorCache":
        for key, value in self.entries.items():
            if isinstance(value, tuple):
                self.entries[key] = tuple(t.to(device) for t in value)
            else:
                self.entries[key] = value.to(device)
        return self

    # -- processor side ------------------------------------------------
    def put(self, layer: str, hidden_states: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, pool: int = 1) -> None:
        """Store a layer's anchor tokens (``[branches, K * tokens, channels]``) for the current step, averaged
        over ``pool x pool`` blocks of each anchor's token grid when ``pool > 1`` and the factor divides the
        grid (a layer is pooled or not for the whole edit; ``meta["pooled"]`` names the pooled ones)."""
        stored = (hidden_states,) if self.store == "hidden" else (key, value)
        grid = self._token_grid(stored[0]) if pool > 1 else None
        if grid is not None and grid[0] % pool == 0 and grid[1] % pool == 0:
            stored = tuple(self._pooled(t, grid, pool) for t in stored)
            self.meta.setdefault("pooled", {})[layer] = pool
        self.entries[(layer, self.step)] = stored[0] if self.store == "hidden" else stored

    def pool_factor(self, layer: str) -> int:
        """How many tokens a side each cached anchor token of ``layer`` stands for (1: not pooled)."""
        return int(self.meta.get("pooled", {}).get(layer, 1))

    def _token_grid(self, tokens: torch.Tensor) -> tuple[int, int]:
        """(height, width) of one anchor's token grid in a layer, from the latent size the anchor pass recorded."""
        count = tokens.shape[1] // len(self.meta["anchor_indices"])
        latent_height, latent_width = self.meta["latent_size"]
        scale = math.isqrt(latent_height * latent_width // count)  # the layer's downscale of the latents
        return latent_height // scale, latent_width // scale

    def _pooled(self, tokens: torch.Tensor, grid: tuple[int, int], factor: int) -> torch.Tensor:
        branches, _, channels = tokens.shape
        planes = tokens.reshape(-1, *grid, channels).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(planes.float(), factor).to(tokens.dtype)
        return pooled.permute(0, 2, 3, 1).reshape(branches, -1, channels)

    def keys_values(self, layer: str, attn) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            entry = self.entries[(layer, self.step)]
        except KeyError:
            raise RuntimeError(
                f"no anchor tokens cached for layer {layer!r} at step {self.step}; "
                "run the anchor pass with the same number of steps first"
            ) from None
        if isinstance(entry, tuple):
            return entry
        return _project_kv(attn, entry)

    # -- persistence ---------------------------------------------------
    def save(self, path: str | pathlib.Path) -> None:
        """Write the cache as one safetensors file (tensors) with ``meta`` as JSON metadata."""
        import json

        from safetensors.torch import save_file

        tensors = {}
        for (layer, step), value in self.entries.items():
            names = ("k", "v") if isinstance(value, tuple) else ("h",)
            for name, t in zip(names, value if isinstance(value, tuple) else (value,)):
                tensors[f"{layer}|{step}|{name}"] = t.contiguous()
        header = {"store": self.store, "meta": json.dumps(self.meta)}
        save_file(tensors, str(path), metadata=header)

    @classmethod
    def load(cls, path: str | pathlib.Path, device: torch.device | str = "cpu") -> "AnchorCache":
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata()
            cache = cls(store=header["store"], meta=json.loads(header["meta"]))
            parts: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
            for name in f.keys():
                layer, step, part = name.rsplit("|", 2)
                parts.setdefault((layer, int(step)), {})[part] = f.get_tensor(name)
        for key, p in parts.items():
            cache.entries[key] = p["h"] if "h" in p else (p["k"], p["v"])
        return cache


def _project_kv(attn, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    key = attn.to_k(hidden_states)
    value = attn.to_v(hidden_states)
    return key, value


def _split_heads(attn, x: torch.Tensor) -> torch.Tensor:
    batch, tokens, inner = x.shape
    head_dim = inner // attn.heads
    return x.view(batch, tokens, attn.heads, head_dim).transpose(1, 2)


def _attention_with_lse(query, key, value) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d)) V for [batch, heads, tokens, d] tensors, and each query's log-sum-exp of the
    scores (fp32, [batch, heads, tokens]): PyTorch's fused kernels where they return it, else the math."""
    if query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value)
        return out, lse
    if query.device.type == "cuda" and query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] <= 256:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value)[:2]
        return out, lse
    scores = (query @ key.transpose(-1, -2)).float() * query.shape[-1] ** -0.5
    lse = torch.logsumexp(scores, dim=-1)
    return torch.exp(scores - lse[..., None]).to(value.dtype) @ value, lse


def _merged_anchor_attention(query, key, value, anchor_key, anchor_value, branches: int,
                             anchor_bias: float = 0.0) -> torch.Tensor:
    """The frame pass's attention over [own tokens ; anchor tokens] without a per-frame copy of the anchors.

    ``query``/``key``/``value``: [branches * frames, heads, tokens, d]; the anchors: [branches, heads, K *
    tokens, d]. The frames of a branch share its anchors, so their queries are folded into one sequence
    for one call over the anchors; the two partial softmaxes are then weighted by their log-sum-exps.
    ``anchor_bias`` is added to every anchor score (``log(f^2)`` for anchors pooled by ``f``)."""
    batch, heads, tokens, dim = query.shape
    frames = batch // branches
    own, own_lse = _attention_with_lse(query, key, value)
    folded = query.view(branches, frames, heads, tokens, dim).transpose(1, 2).reshape(branches, heads, frames * tokens, dim)
    anchored, anchor_lse = _attention_with_lse(folded, anchor_key, anchor_value)
    anchored = anchored.view(branches, heads, frames, tokens, dim).transpose(1, 2).reshape(batch, heads, tokens, dim)
    anchor_lse = anchor_lse.view(branches, heads, frames, tokens).transpose(1, 2).reshape(batch, heads, tokens)
    anchor_lse = anchor_lse + anchor_bias
    total = torch.logaddexp(own_lse, anchor_lse)
    own_weight = torch.exp(own_lse - total)[..., None].to(own.dtype)
    anchor_weight = torch.exp(anchor_lse - total)[..., None].to(own.dtype)
    return own * own_weight + anchored * anchor_weight


class AnchorAttnProcessor:
    """Self-attention over a frame's own tokens and its guidance branch's anchor tokens.

    Args:
        cache: the :class:`AnchorCache` shared by every layer of the UNet.
        layer: this layer's name (its key in the cache).
        kernel: how the frame pass attends to the anchors (``ANCHOR_KERNELS``).
        pool: cache this layer's anchor tokens averaged over ``pool x pool`` blocks (reduced anchors; 1: all).
    """

    def __init__(self, cache: AnchorCache, layer: str, kernel: str = "concat", pool: int = 1):
        if not hasattr(F, "scaled_dot_product_attention"):
            raise ImportError("AnchorAttnProcessor needs PyTorch 2 (torch.nn.functional.scaled_dot_product_attention)")
        if kernel not in ANCHOR_KERNELS:
            raise ValueError(f"anchor attention kernel must be one of {ANCHOR_KERNELS}, got {kernel!r}")
        if pool < 1:
            raise ValueError(f"anchor pool factor must be 1 or more, got {pool}")
        self.cache = cache
        self.layer = layer
        self.kernel = kernel
        self.pool = pool

    # Kept out of torch.compile'd graphs (FairyPipeline.use_compiled_blocks): the pass and step it reads from
    # the cache are Python values the compiler would specialise on, one graph per step.
    @torch.compiler.disable
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            raise ValueError(f"{self.layer}: AnchorAttnProcessor is for self-attention layers (attn1) only")
        if attention_mask is not None and self.cache.mode != "off":
            raise ValueError(f"{self.layer}: anchor attention does not support attention masks")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch, tokens, _ = hidden_states.shape

        query = attn.to_q(hidden_states)
        mode = self.cache.mode
        if mode == "write":
            # Each anchor's queries see every anchor of its branch: fold the K
            # anchors of a branch into one sequence (queries and keys alike).
            branches = self.cache.num_branches
            joint = hidden_states.reshape(branches, -1, hidden_states.shape[-1])
            key, value = _project_kv(attn, joint)
            self.cache.put(self.layer, joint, key, value, pool=self.pool)
            query = query.reshape(branches, -1, query.shape[-1])
        elif mode == "read":
            branches = self.cache.num_branches
            anchor_key, anchor_value = self.cache.keys_values(self.layer, attn)
            frames = batch // branches
            key, value = _project_kv(attn, hidden_states)
            # Pooled anchors (whatever this pipeline's own setting: the cache says) need the merged kernel's bias.
            pooled = self.cache.pool_factor(self.layer)
            merged = self.kernel == "merged" or pooled > 1
            if not merged:
                key = torch.cat([key, anchor_key.repeat_interleave(frames, dim=0)], dim=1)
                value = torch.cat([value, anchor_value.repeat_interleave(frames, dim=0)], dim=1)
        else:
            key, value = _project_kv(attn, hidden_states)
            if attention_mask is not None:
                attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
                attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        query, key, value = _split_heads(attn, query), _split_heads(attn, key), _split_heads(attn, value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if mode == "read" and merged:
            anchor_key, anchor_value = _split_heads(attn, anchor_key), _split_heads(attn, anchor_value)
            if attn.norm_k is not None:
                anchor_key = attn.norm_k(anchor_key)
            hidden_states = _merged_anchor_attention(query, key, value, anchor_key, anchor_value, branches,
                                                     anchor_bias=2 * math.log(pooled))
        else:
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, tokens, -1).to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def self_attention_layers(unet) -> list[str]:
    """Names (as in ``unet.attn_processors``) of every self-attention layer."""
    return [name for name in unet.attn_processors if name.endswith("attn1.processor")]


def layer_scale(unet, layer: str) -> int:
    """How many times smaller than the latents a self-attention layer's token grid is (from its block)."""
    levels = len(unet.config.block_out_channels)
    block, _, rest = layer.partition(".")
    if block == "mid_block":
        return 2 ** (levels - 1)
    index = int(rest.split(".", 1)[0])
    if block == "down_blocks":
        return 2**index
    if block == "up_blocks":
        return 2 ** (levels - 1 - index)
    raise ValueError(f"cannot tell the resolution of the layer {layer!r}")


def set_anchor_attention(unet, cache: AnchorCache, layers: Iterable[str] | None = None, *,
                         kernel: str = "concat", pool: dict[str, int] | None = None) -> list[str]:
    """Give every self-attention layer of ``unet`` an :class:`AnchorAttnProcessor` on ``cache`` (frame-pass
    attention by ``kernel``, one of ``ANCHOR_KERNELS``; anchor tokens pooled by ``pool[layer]`` where given,
    layer names as :func:`self_attention_layers` returns them).

    Cross-attention layers keep their processors. Returns the layer names.
    """
    chosen = list(layers) if layers is not None else self_attention_layers(unet)
    if not chosen:
        raise ValueError("this UNet has no self-attention (attn1) layers to make anchor attention of")
    processors = dict(unet.attn_processors)
    for name in chosen:
        processors[name] = AnchorAttnProcessor(cache, name.removesuffix(".processor"), kernel, (pool or {}).get(name, 1))
    unet.set_attn_processor(processors)
    return chosen
