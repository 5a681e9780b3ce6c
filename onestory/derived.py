"""Inference-only weights derived from a module's parameters, kept until the parameters change.

Why: on the CPU, a linear map with few rows and a wide input (the conditioner's coarse tiers,
e.g. "4 (c 16 16)" x "(c 16 16) d") runs in about 0.6x the time when the weight is stored
"k n" (input-major) instead of nn.Linear's "n k", and a kernel larger than the frame reads
replicate padding whose weights can be summed into the last real row's: 0.33x in all for the
16x16 tier on an 8-row latent (bench/selection_cost.py, `tier_products`). Both are derived
once and reused by every shot; training (grad enabled) never uses them. The cost is memory:
one more copy of each weight in use (folded ones are smaller), on the CPU only.

Staleness: an entry is reused only while every source parameter is the same tensor object,
with the same storage, dtype, device, shape, strides and autograd version counter. That follows
optimizer steps, ``copy_`` / ``load_state_dict`` and ``.to()`` / ``.data`` swaps. The entry
keeps the source storages alive, so a freed storage cannot come back at the same address and
pass for the old one. Writes through ``param.data`` (which has its own version counter) and
in-place writes to inference-mode tensors (which have none) are not seen: call
``AdaptiveConditioner.clear_weight_cache()`` / ``FrameSelector.clear_memory_cache()`` after those.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = ["DerivedWeights", "ParamSnapshot", "wants_derived"]


def _state(p: Tensor) -> tuple:
    version = -1 if p.is_inference() else p._version
    return (id(p), p.data_ptr(), version, p.dtype, p.device, tuple(p.shape), p.stride())


@dataclass(frozen=True, eq=False)
class ParamSnapshot:
    """What `matches` compares: per parameter its identity, storage address, autograd version,
    dtype, device, shape and strides. ``keep`` holds the storages so their addresses stay taken."""

    state: tuple
    keep: tuple[Tensor, ...]

    @staticmethod
    def of(params: Sequence[Tensor]) -> "ParamSnapshot":
        return ParamSnapshot(tuple(_state(p) for p in params), tuple(p.detach() for p in params))

    def matches(self, params: Sequence[Tensor]) -> bool:
        return len(params) == len(self.state) and all(_state(p) == s for p, s in zip(params, self.state))


#: False: compute with the parameters as stored (the "plain" rows of bench/selection_cost.py).
ENABLED = True


def wants_derived(*params: Tensor) -> bool:
    """True when derived weights may stand in for ``params``: enabled, no gradient is being
    recorded for them, and they live on the CPU (where the layout gain was measured)."""
    if not ENABLED or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
        return False
    return all(p.device.type == "cpu" for p in params)


class DerivedWeights:
    """A small cache: ``get(key, params, make)`` returns ``make()``, recomputed only when one of
    ``params`` changed (see the module docstring for what counts as a change)."""

    def __init__(self, max_entries: int = 16):
        self.max_entries = int(max_entries)
        self._entries: dict[Hashable, tuple[ParamSnapshot, object]] = {}

    def get(self, key: Hashable, params: Sequence[Tensor], make: Callable[[], T]) -> T:
        entry = self._entries.get(key)
        if entry is not None and entry[0].matches(params):
            return entry[1]  # type: ignore[return-value]
        with torch.no_grad():
            value = make()
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (ParamSnapshot.of(params), value)
        return value

    def clear(self) -> None:
        self._entries.clear()

    # A copied or unpickled module recomputes its derived weights from its own parameters.
    def __deepcopy__(self, memo) -> "DerivedWeights":
        return DerivedWeights(self.max_entries)

    def __getstate__(self) -> dict:
        return {"max_entries": self.max_entries}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state.get("max_entries", 16))

    def __len__(self) -> int:
        return len(self._entries)
