"""A preallocated KV cache for continuous batching: one slot per batch row, no per-step copies.

transformers' ``DynamicCache`` appends a position by concatenating every layer's keys and
values (a copy of the whole cache per step), and merging or dropping rows copies it again.
Here each layer owns fixed buffers ``[slots, kv_heads, capacity, head_dim]``:

- live rows are slots ``0..rows-1``; all of them write their next position into the same
  column ``end`` (rows are right-aligned, as left-padded rows are), and attention reads the
  window ``[start, end]``, ``start`` being the first column any live row uses;
- a row joining copies its prefilled keys and values once, into the columns just left of
  ``end`` (its earlier columns are masked);
- a row leaving is replaced by the last live row (one row's window is copied), so the live
  slots stay contiguous and a forward pass reads views, never gathered copies;
- when ``end`` reaches the capacity, the live window is moved back to the left (or into larger
  buffers): one copy of the live cache every few hundred steps instead of one per step.

Buffers start with room for a few rows and the first prompt, and double (in rows, up to
``slots``, and in columns) when needed; they are never shrunk, so an engine holds about twice
the largest cache it has needed.

The per-row attention mask is derived from each row's first column (masked columns get
exactly zero weight), so batched rows compute what they would alone up to floating-point
summation order, as with left padding.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache

_HEADROOM = 64
"""Minimum free columns right of the window after a move (decode steps until the next one)."""
_FIRST_SLOTS = 8
"""Rows allocated at first; buffers double (up to ``slots``) when more rows are live at once."""


class SlotCache:
    """Fixed-capacity KV buffers for up to ``slots`` rows; see the module docstring."""

    def __init__(self, slots: int, layers: int) -> None:
        self.slots = slots
        self.rows = 0
        self.start = 0
        self.end = 0
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.row_start = torch.zeros(slots, dtype=torch.long)
        """First column each slot's row uses (its real tokens are ``row_start..end-1``)."""
        self.cache = Cache(layers=[_SlotLayer(self, i) for i in range(layers)])
        """What the model's forward pass is given: layer ``i`` writes into buffers ``i``."""

    @property
    def width(self) -> int:
        return self.end - self.start

    def positions(self) -> torch.Tensor:
        """``[rows, 1]``: the position of each row's next token (its real token count)."""
        return (self.end - self.row_start[: self.rows])[:, None]

    def attention_mask(self) -> torch.Tensor:
        """``[rows, width + 1]`` bool: the columns each row attends to in the next decode."""
        device = self.keys[0].device
        columns = torch.arange(self.start, self.end + 1, device=device)
        return columns[None, :] >= self.row_start[: self.rows, None].to(device)

    def reserve_decode(self) -> None:
        """Makes room for one more column at ``end`` (moves the window when full)."""
        if self.end >= self.capacity:
            self._relocate(self.width)

    def advance(self) -> None:
        """Called after a decode step wrote column ``end`` for every live row."""
        self.end += 1

    def append(self, prefilled: DynamicCache, lengths: list[int]) -> None:
        """Adds rows from a left-padded prefill: row ``i`` has ``lengths[i]`` real tokens."""
        count = len(lengths)
        if self.rows + count > self.slots:
            raise ValueError("more rows than slots")
        width = kv_layers(prefilled)[0].keys.shape[2]
        if not self.keys:
            self._allocate(prefilled, min(self.slots, max(count, _FIRST_SLOTS)), width + _HEADROOM)
        if self.rows == 0:
            self.start = self.end = 0
        allocated = self.keys[0].shape[0]
        if self.rows + count > allocated:
            self._resize(
                min(self.slots, max(2 * allocated, self.rows + count)), self.capacity, self.end
            )
        if self.end < width:
            self._relocate(width)
        rows = slice(self.rows, self.rows + count)
        columns = slice(self.end - width, self.end)
        for keys, values, layer in zip(self.keys, self.values, kv_layers(prefilled), strict=True):
            keys[rows, :, columns] = layer.keys
            values[rows, :, columns] = layer.values
        self.row_start[rows] = self.end - torch.tensor(lengths, dtype=torch.long)
        self.rows += count
        self.start = int(self.row_start[: self.rows].min())

    def keep(self, keep: list[int]) -> list[int]:
        """Keeps rows ``keep`` (ascending); returns the old row index now in each slot.

        Kept rows beyond the new row count move into the slots freed below it.
        """
        count = len(keep)
        kept = set(keep)
        holes = [i for i in range(count) if i not in kept]
        movers = [i for i in keep if i >= count]
        order = list(range(count))
        if holes:
            to = torch.tensor(holes, dtype=torch.long)
            source = torch.tensor(movers, dtype=torch.long)
            window = slice(self.start, self.end)
            device = self.keys[0].device
            for buffer in (*self.keys, *self.values):
                buffer[to.to(device), :, window] = buffer[source.to(device), :, window]
            self.row_start[to] = self.row_start[source]
            for hole, mover in zip(holes, movers, strict=True):
                order[hole] = mover
        self.rows = count
        self.start = int(self.row_start[:count].min()) if count else self.end
        return order

    def clear(self) -> None:
        self.rows = 0
        self.start = self.end = 0

    # -- layout -------------------------------------------------------------------------

    def _allocate(self, like: DynamicCache, slots: int, capacity: int) -> None:
        self.keys = [
            layer.keys.new_zeros((slots, layer.keys.shape[1], capacity, layer.keys.shape[3]))
            for layer in kv_layers(like)
        ]
        self.values = [
            layer.values.new_zeros((slots, layer.values.shape[1], capacity, layer.values.shape[3]))
            for layer in kv_layers(like)
        ]
        self.capacity = capacity
        for layer in kv_layers(self.cache):
            layer.bind()

    def _relocate(self, end: int) -> None:
        """Moves the live window so it ends at column ``end`` (>= width), growing if needed."""
        end = max(end, self.width)
        needed = end + _HEADROOM
        if needed > self.capacity:
            self._resize(self.keys[0].shape[0], max(needed, 2 * end), end)
            return
        width, rows = self.width, self.rows
        old, new = slice(self.start, self.end), slice(end - width, end)
        if new != old and width:
            for buffer in (*self.keys, *self.values):
                buffer[:rows, :, new] = buffer[:rows, :, old].clone()
        self.row_start[:rows] += end - self.end
        self.start, self.end = end - width, end

    def _resize(self, slots: int, capacity: int, end: int) -> None:
        """New buffers of ``slots`` x ``capacity``, the live window copied to end at ``end``."""
        width, rows = self.width, self.rows
        old, new = slice(self.start, self.end), slice(end - width, end)

        def grown(buffer: torch.Tensor) -> torch.Tensor:
            fresh = buffer.new_zeros((slots, buffer.shape[1], capacity, buffer.shape[3]))
            fresh[:rows, :, new] = buffer[:rows, :, old]
            return fresh

        self.keys = [grown(buffer) for buffer in self.keys]
        self.values = [grown(buffer) for buffer in self.values]
        self.capacity = capacity
        for layer in kv_layers(self.cache):
            layer.bind()
        self.row_start[:rows] += end - self.end
        self.start, self.end = end - width, end


def kv_layers(cache: Cache) -> list[Any]:
    """``cache.layers``, untyped: transformers types a layer as any kind it has (linear
    attention, dummy), while the caches here hold only attention layers with keys and values."""
    return cache.layers


class _SlotLayer(CacheLayerMixin):
    """One layer's view of a :class:`SlotCache` for the model's forward pass (decode only)."""

    is_sliding = False

    def __init__(self, owner: SlotCache, index: int) -> None:
        super().__init__()
        self.owner = owner
        self.index = index
        self.is_initialized = True

    def bind(self) -> None:
        self.keys = self.owner.keys[self.index]
        self.values = self.owner.values[self.index]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Buffers are allocated by the owner from the first prefill; nothing to do here."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        owner = self.owner
        rows, end = owner.rows, owner.end
        if key_states.shape[2] != 1:
            raise ValueError("a slot cache takes one new position per row (decode steps)")
        keys, values = owner.keys[self.index], owner.values[self.index]
        keys[:rows, :, end] = key_states[:, :, 0]
        values[:rows, :, end] = value_states[:, :, 0]
        return keys[:rows, :, owner.start : end + 1], values[:rows, :, owner.start : end + 1]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.width + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.width

    def get_max_length(self) -> int:
        return -1
