"""Micro-batches: which examples go together (a seeded, resumable order) and how they
become tensors.

Packing is padding-free: a micro-batch's examples are concatenated into one row
and `position_ids` restart at 0 for each, so the attention implementation keeps
examples from attending across boundaries and no compute goes to pad tokens.
Without packing, examples of similar length are grouped before padding so that
little is wasted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from curate.train.data import IGNORE_INDEX, Example

#: Length-grouped padding sorts within windows of this many micro-batches, so the
#: order stays random across windows while lengths inside a batch are similar.
GROUP_WINDOW = 50


def epoch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, packing: bool) -> list[list[int]]:
    """Example indices of each micro-batch of one epoch; the same for the same arguments
    (resume relies on that)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if packing:
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches = []
    window = batch_size * GROUP_WINDOW
    for begin in range(0, len(order), window):
        chunk = sorted(order[begin : begin + window].tolist(), key=lambda index: -lengths[index])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def micro_batches_per_epoch(examples: int, batch_size: int) -> int:
    return -(-examples // batch_size)


@dataclass
class TokenBatch:
    """Tensors for one forward pass plus what the loss and the audit need to know."""

    input_ids: object  # torch.Tensor [rows, length]
    labels: object
    position_ids: object
    attention_mask: object | None
    indices: list[int]
    lengths: list[int]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def targets(self) -> int:
        """Label positions that count in the loss."""
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device) -> TokenBatch:
        move = lambda tensor: None if tensor is None else tensor.to(device, non_blocking=True)  # noqa: E731
        return TokenBatch(move(self.input_ids), move(self.labels), move(self.position_ids), move(self.attention_mask), self.indices, self.lengths)


def collate(examples: list[Example], indices: list[int], packing: bool, pad_id: int) -> TokenBatch:
    import torch

    chosen = [examples[i] for i in indices]
    lengths = [len(example) for example in chosen]
    if packing:
        input_ids = torch.from_numpy(np.concatenate([e.input_ids for e in chosen]))[None]
        labels = torch.from_numpy(np.concatenate([e.labels for e in chosen]))[None]
        position_ids = torch.from_numpy(np.concatenate([np.arange(n) for n in lengths]))[None]
        return TokenBatch(input_ids, labels, position_ids, None, list(indices), lengths)
    width = max(lengths)
    input_ids = np.full((len(chosen), width), pad_id, dtype=np.int64)
    labels = np.full((len(chosen), width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((len(chosen), width), dtype=np.int64)
    for row, example in enumerate(chosen):
        input_ids[row, : len(example)] = example.input_ids
        labels[row, : len(example)] = example.labels
        mask[row, : len(example)] = 1
    positions = np.broadcast_to(np.arange(width), (len(chosen), width)).copy()
    return TokenBatch(torch.from_numpy(input_ids), torch.from_numpy(labels), torch.from_numpy(positions), torch.from_numpy(mask), list(indices), lengths)


def unpack(batch: TokenBatch) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(example index, input_ids, labels) of each example as the batch feeds it to the model."""
    input_ids = batch.input_ids.cpu().numpy()
    labels = batch.labels.cpu().numpy()
    if batch.attention_mask is None:
        positions = batch.position_ids.cpu().numpy()[0]
        starts = np.flatnonzero(positions == 0).tolist() + [len(positions)]
        for index, begin, end in zip(batch.indices, starts, starts[1:]):
            yield index, input_ids[0, begin:end], labels[0, begin:end]
        return
    mask = batch.attention_mask.cpu().numpy().astype(bool)
    for row, index in enumerate(batch.indices):
        yield index, input_ids[row][mask[row]], labels[row][mask[row]]
