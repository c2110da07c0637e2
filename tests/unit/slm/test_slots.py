"""The slot KV cache on its own: rows joining, leaving and moving keep exactly their columns."""

from __future__ import annotations

import random

import torch
from transformers import DynamicCache, LlamaConfig

from mesh.slm.slots import SlotCache

LAYERS, HEADS, DIM = 2, 2, 3


def _prefill(lengths: list[int], rng: random.Random) -> tuple[DynamicCache, list[torch.Tensor]]:
    """A left-padded prefill cache, and each row's real keys ([HEADS, length, DIM], layer 0)."""
    width = max(lengths)
    config = LlamaConfig(
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        hidden_size=HEADS * DIM,
    )
    cache = DynamicCache(config=config)
    keys = torch.full((len(lengths), HEADS, width, DIM), float("nan"))  # padding: never read
    for i, n in enumerate(lengths):
        keys[i, :, width - n :] = torch.tensor(
            [[[rng.random() for _ in range(DIM)] for _ in range(n)] for _ in range(HEADS)]
        )
    for layer in range(LAYERS):
        cache.update(keys + layer, -(keys + layer), layer)
    return cache, [keys[i, :, width - n :] for i, n in enumerate(lengths)]


def _check(slots: SlotCache, expected: list[torch.Tensor]) -> None:
    assert slots.rows == len(expected)
    if not expected:
        return
    mask = slots.attention_mask()
    assert mask.shape == (slots.rows, slots.width + 1)
    for row, keys in enumerate(expected):
        first = int(slots.row_start[row])
        assert first >= slots.start
        assert slots.end - first == keys.shape[1]
        assert int(slots.positions()[row, 0]) == keys.shape[1]
        assert mask[row].tolist() == [c >= first for c in range(slots.start, slots.end + 1)]
        for layer in range(LAYERS):
            assert torch.equal(slots.keys[layer][row, :, first : slots.end], keys + layer)
            assert torch.equal(slots.values[layer][row, :, first : slots.end], -(keys + layer))


def test_rows_keep_their_columns_through_joins_leaves_and_moves() -> None:
    rng = random.Random(3)
    slots = SlotCache(slots=12, layers=LAYERS)
    expected: list[torch.Tensor] = []
    moves = []
    # Counts the cache's internal moves (the test needs some to have happened): no public hook.
    relocate = slots._relocate  # noqa: SLF001 - see above

    def counted(end: int) -> None:
        moves.append(end)
        relocate(end)

    slots._relocate = counted  # type: ignore[method-assign]  # noqa: SLF001 - see above
    for _ in range(400):
        if slots.rows < 12 and rng.random() < 0.3:
            lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, min(6, 12 - slots.rows)))]
            cache, rows = _prefill(lengths, rng)
            slots.append(cache, lengths)
            expected += rows
        elif slots.rows:
            slots.reserve_decode()
            new = torch.tensor(
                [
                    [[[rng.random() for _ in range(DIM)]] for _ in range(HEADS)]
                    for _ in range(slots.rows)
                ]
            )
            for layer, cache_layer in enumerate(slots.cache.layers):
                keys, values = cache_layer.update(new + layer, -(new + layer))
                assert keys.shape[2] == slots.width + 1 == values.shape[2]
            slots.advance()
            expected = [torch.cat([keys, new[row]], dim=1) for row, keys in enumerate(expected)]
            if rng.random() < 0.25:
                keep = sorted(rng.sample(range(slots.rows), rng.randint(0, slots.rows)))
                order = slots.keep(keep)
                assert sorted(order) == keep
                expected = [expected[i] for i in order]
        _check(slots, expected)
    assert len(moves) >= 3
    assert slots.capacity > 2 * 40
    assert slots.keys[0].shape[0] == 12  # from 8 rows allocated at first
