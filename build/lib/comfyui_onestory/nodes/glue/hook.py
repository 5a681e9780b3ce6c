"""The ComfyUI Wan hook: context tokens join every block's self-attention.

Design (research/comfyui.md §4, "keyed DIFFUSION_MODEL wrapper + carrying replace"):

* `ContextWrapper` is a keyed `WrappersMP.DIFFUSION_MODEL` wrapper. Once per model call it
  puts a small private state dict into a *copy* of `transformer_options`: the context tokens
  expanded to the batch and their RoPE frequencies (computed with the model's own
  `rope_embedder`, so they rotate exactly like the video tokens).
* `ContextBlock` replaces `("double_block", i)` on every block. It concatenates the carried
  context hidden states in front of the noisy tokens, runs the original block (or the replace
  that was there before us, so other packs keep working), keeps the context half for the next
  block and returns only the noisy half. After the last block the context is dropped, so the
  head, unpatchify and everything between blocks see the normal sequence.

Because cross-attention and the FFN are per-token, this equals "concatenate after the patch
embedding, run all blocks jointly, drop before the head". With no context tokens nothing is
installed in the call state and every block runs the unpatched path: the output is identical.

The tokens are computed once per shot (by the node) and only moved/expanded per call.
This module imports comfy lazily so that the pure helpers stay importable in CI.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

WRAPPER_KEY = "onestory_context"
STATE_KEY = "onestory_context_state"


def expand_vec(vec: Tensor, n_ctx: int, n_img: int) -> Tensor:
    """Per-frame modulation (Wan 2.2 TI2V: vec "b f 6 d", f > 1) → per token "b (n + l) 6 d".

    Context tokens take the modulation of the first noise frame (t of the clean/first frame);
    the video tokens get their frame's modulation, as upstream `repeat_e` would have done
    for the video alone. A scalar-timestep vec ("b 1 6 d") broadcasts and is returned as is.
    """
    if vec.shape[1] <= 1:
        return vec
    per_frame = n_img // vec.shape[1]
    video = vec.repeat_interleave(per_frame, dim=1)
    if video.shape[1] < n_img:  # same rounding rule as upstream repeat_e
        video = vec.repeat_interleave(per_frame + 1, dim=1)[:, :n_img]
    return torch.cat([vec[:, :1].expand(-1, n_ctx, -1, -1), video], dim=1)


def rope_ids(positions: Tensor, rope_options: Optional[dict]) -> Tensor:
    """Context positions "n 3" (t, h, w) → ids "1 n 3", with the MODEL's RoPE scale/shift.

    Upstream maps video index i to shift + i·scale (ModelPatcher.set_model_rope_options);
    applying the same affine map keeps context and video positions consistent.
    """
    ids = positions.float().clone()
    if rope_options:
        ids[:, 0] = ids[:, 0] * rope_options.get("scale_t", 1.0) + rope_options.get("shift_t", 0.0)
        ids[:, 1] = ids[:, 1] * rope_options.get("scale_y", 1.0) + rope_options.get("shift_y", 0.0)
        ids[:, 2] = ids[:, 2] * rope_options.get("scale_x", 1.0) + rope_options.get("shift_x", 0.0)
    return ids[None]


def _slice_batch(value: Any, index: Tensor, batch: int) -> Any:
    """Rows `index` of anything batched along dim 0 (tensors, lists of tensors); else as is."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value[index.to(value.device)]
    if isinstance(value, list) and value and all(isinstance(v, Tensor) for v in value):
        return [_slice_batch(v, index, batch) for v in value]
    return value


class ContextWrapper:
    """Keyed DIFFUSION_MODEL wrapper: installs the per-call context state."""

    def __init__(self, tokens: Tensor, positions: Tensor, in_negative: bool = True):
        if tokens.ndim != 2 or positions.shape != (tokens.shape[0], 3):
            raise ValueError(f"context tokens must be 'n d' with positions 'n 3', got "
                             f"{tuple(tokens.shape)} and {tuple(positions.shape)}")
        self.tokens = tokens.detach()
        self.positions = positions.detach()
        self.in_negative = in_negative

    def _run(self, executor, x, timestep, context, clip_fea, time_dim_concat, transformer_options, kw,
             with_context: bool):
        if not with_context or self.tokens.shape[0] == 0:
            return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kw)
        dm = executor.class_obj
        to = dict(transformer_options)  # private copy: the state must not leak into other calls
        # float32 ids whatever x's dtype: context positions are fractional (block centres), and in
        # bf16 e.g. 80.75 is not representable; ComfyUI's rope() computes in float32/64 anyway.
        ids = rope_ids(self.positions, to.get("rope_options")).to(device=x.device)
        to[STATE_KEY] = {
            "tokens": self.tokens.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1),
            "pe": dm.rope_embedder(ids).movedim(1, 2),
            "h": None,
        }
        return executor(x, timestep, context, clip_fea, time_dim_concat, to, **kw)

    def __call__(self, executor, x, timestep, context, clip_fea=None, time_dim_concat=None,
                 transformer_options={}, **kw):
        chunks = list(transformer_options.get("cond_or_uncond") or [])
        if self.in_negative or 1 not in chunks:
            return self._run(executor, x, timestep, context, clip_fea, time_dim_concat,
                             transformer_options, kw, True)
        if all(c == 1 for c in chunks):
            return self._run(executor, x, timestep, context, clip_fea, time_dim_concat,
                             transformer_options, kw, False)
        # Mixed cond/uncond batch with context kept out of the negative: the rows must see
        # different sequence lengths, so run the two groups separately and reassemble.
        b = x.shape[0]
        per = b // len(chunks)
        flags = torch.tensor(chunks).repeat_interleave(per)
        out = None
        for want_uncond in (False, True):
            idx = torch.nonzero(flags == int(want_uncond)).flatten()
            if idx.numel() == 0:
                continue
            to = dict(transformer_options)
            to["cond_or_uncond"] = [c for c in chunks if c == int(want_uncond)]
            part = self._run(executor, _slice_batch(x, idx, b), _slice_batch(timestep, idx, b),
                             _slice_batch(context, idx, b), _slice_batch(clip_fea, idx, b),
                             _slice_batch(time_dim_concat, idx, b), to,
                             {k: _slice_batch(v, idx, b) for k, v in kw.items()}, not want_uncond)
            if out is None:
                out = part.new_empty((b,) + tuple(part.shape[1:]))
            out[idx.to(part.device)] = part
        return out


class ContextBlock:
    """`("double_block", i)` replace that carries the context hidden states across blocks."""

    def __init__(self, index: int, last: int, prev: Optional[Callable] = None):
        self.index = index
        self.last = last
        self.prev = prev

    def _block(self, args: dict, extra: dict) -> dict:
        return self.prev(args, extra) if self.prev is not None else extra["original_block"](args)

    def __call__(self, args: dict, extra: dict) -> dict:
        st = args["transformer_options"].get(STATE_KEY)
        if st is None:  # no context in this call (empty context, or the negative branch)
            return self._block(args, extra)
        img = args["img"]
        mem = st["tokens"] if st["h"] is None else st["h"]
        n = mem.shape[1]
        joint = dict(args, img=torch.cat([mem, img], dim=1),
                     pe=torch.cat([st["pe"].to(args["pe"].dtype), args["pe"]], dim=1),
                     vec=expand_vec(args["vec"], n, img.shape[1]))
        y = self._block(joint, extra)["img"]
        st["h"] = None if self.index == self.last else y[:, :n]
        return {"img": y[:, n:]}


def wan_diffusion_model(model) -> Any:
    """The WanModel inside a ComfyUI MODEL, or a clear error for anything else."""
    import comfy.ldm.wan.model as wan_model

    dm = model.get_model_object("diffusion_model") if hasattr(model, "get_model_object") else None
    if not isinstance(dm, wan_model.WanModel):
        raise ValueError(
            f"OneStory needs a Wan 2.1/2.2 MODEL (its diffusion model is a WanModel); got "
            f"{type(dm).__name__ if dm is not None else type(model).__name__}. Load a Wan "
            "checkpoint with 'Load Diffusion Model' and connect that MODEL.")
    return dm


def _under_ours(patch: Any) -> Any:
    while isinstance(patch, ContextBlock):
        patch = patch.prev
    return patch


def apply_context(model, tokens: Tensor, positions: Tensor, in_negative: bool = True):
    """Clone `model` and install the context hook on every block. The input MODEL is untouched.

    A MODEL that already carries a OneStory context is re-patched (its context replaced, the
    replaces that were under ours kept), so chaining two Apply Context nodes is not additive.
    An empty context (the first shot of a story) installs nothing and removes a OneStory context
    the MODEL carried: the clone then runs ComfyUI's unpatched path, at no cost per step.
    """
    import comfy.patcher_extension as pe

    dm = wan_diffusion_model(model)
    if tokens.shape[0] and tokens.shape[1] != dm.dim:
        raise ValueError(f"context tokens have width {tokens.shape[1]} but the MODEL's blocks are "
                         f"{dm.dim} wide; the adapter was made for another backbone.")
    ContextWrapper(tokens, positions, in_negative)       # validates the shapes in both cases
    m = model.clone()     # clone copies model_options' nested dicts: editing them is private
    m.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    last = len(dm.blocks) - 1
    replaces = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    if tokens.shape[0] == 0:
        for key, patch in list(replaces.items()):
            if isinstance(patch, ContextBlock):
                prev = _under_ours(patch)
                if prev is None:
                    del replaces[key]
                else:
                    replaces[key] = prev
        return m
    for i in range(len(dm.blocks)):
        prev = _under_ours(replaces.get(("double_block", i)))
        m.set_model_patch_replace(ContextBlock(i, last, prev), "dit", "double_block", i)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                           ContextWrapper(tokens, positions, in_negative))
    return m
