"""Batches of prepared arrays (`training.prepared`) as `keras.utils.PyDataset`s: the data
side of `zoo train --data`, on any Keras backend and without TensorFlow.

Three orders cover the families:
    `ShuffledBatches`     examples in a new random order each epoch, fixed batch size
                          (images, tagged sentences);
    `BucketedBatches`     variable-length examples grouped by length into a bounded set of
                          padded shapes (text), so that JAX compiles once per bucket, not
                          once per batch;
    `RandomWindows`       random windows of one long id array (a character language model).

Each draws its order from (seed, epoch), so a resumed run that sets `epoch` sees the
batches the uninterrupted run would have seen. A recipe turns a batch's rows into model
inputs with `make_batch(rows) -> (x, y)` or `(x, y, sample_weight)`; augmentation that
belongs on the device (crops, flips) runs there, in `keras.ops`, inside `make_batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

Rows = dict[str, np.ndarray]
MakeBatch = Callable[[Rows], Any]


class _EpochOrdered(keras.utils.PyDataset):
    """A PyDataset whose batches are a deterministic function of (seed, epoch)."""

    def __init__(self, seed: int | None, **kwargs):
        super().__init__(**kwargs)
        self.seed = None if seed is None else int(seed)
        self.epoch = 0
        self._batches = self._order()

    def _rng(self) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, self.epoch])

    def _order(self) -> list[np.ndarray]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Continue from `epoch` (a resumed run): the order that epoch would have had."""
        self.epoch = int(epoch)
        self._batches = self._order()

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def __len__(self) -> int:
        return len(self._batches)


def rows_of(array: Any, indices: np.ndarray) -> np.ndarray:
    """Rows `indices` of a NumPy array or a `training.prepared.ShardedArray`, in memory."""
    return np.asarray(array[indices])


def _gather(arrays: Mapping[str, Any], indices: np.ndarray) -> Rows:
    order = np.argsort(indices, kind="stable")  # sorted reads are kinder to memory maps
    rows = {name: rows_of(a, indices[order]) for name, a in arrays.items()}
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return {name: r[inverse] for name, r in rows.items()}


class ShuffledBatches(_EpochOrdered):
    """Rows of `arrays` (same length each) in batches of `batch_size`.

    `shuffle`: a new order every epoch (from `seed`); else the stored order. The last
    partial batch is dropped when `drop_remainder` (training: one shape to compile) and
    kept otherwise (evaluation: every example counts).
    """

    def __init__(
        self,
        arrays: Mapping[str, Any],
        batch_size: int,
        make_batch: MakeBatch,
        *,
        shuffle: bool = True,
        drop_remainder: bool = True,
        seed: int | None = 0,
        **kwargs,
    ):
        self.arrays, self.make_batch = dict(arrays), make_batch
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self.drop_remainder = drop_remainder
        self.size = len(next(iter(self.arrays.values())))
        if any(len(a) != self.size for a in self.arrays.values()):
            raise ValueError("every array of a split needs one row per example")
        if self.size == 0 or (drop_remainder and self.size < self.batch_size):
            raise ValueError(f"{self.size} examples do not fill one batch of {self.batch_size}")
        super().__init__(seed, **kwargs)

    def _order(self) -> list[np.ndarray]:
        indices = self._rng().permutation(self.size) if self.shuffle else np.arange(self.size)
        cut = len(indices) - len(indices) % self.batch_size if self.drop_remainder else None
        indices = indices[:cut]
        return [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]

    def __getitem__(self, index: int):
        return self.make_batch(_gather(self.arrays, self._batches[index]))


def bucket_of(lengths: np.ndarray, boundaries: Sequence[int]) -> np.ndarray:
    """Bucket index of each length: bucket i holds boundaries[i-1] <= length < boundaries[i]
    (tf.data's `bucket_by_sequence_length` convention)."""
    return np.searchsorted(np.asarray(boundaries), np.asarray(lengths), side="right")


def bucket_widths(boundaries: Sequence[int], longest: int) -> list[int]:
    """The padded length of each bucket: its upper boundary minus one, the last bucket's
    the longest example, so that every batch has one of len(boundaries) + 1 shapes."""
    return [int(b) - 1 for b in boundaries] + [int(longest)]


class BucketedBatches(_EpochOrdered):
    """Variable-length examples batched by length: examples are grouped by `bucket_of`
    their `lengths` and each bucket is cut into batches of `batch_size` (the last one of a
    bucket may be short; with `drop_remainder` it is dropped), in a random order of batches
    each epoch when `shuffle`. `make_batch(rows, width)` pads a batch to its bucket's
    `width` (`bucket_widths`), so the shapes a compiled step sees are bounded."""

    def __init__(
        self,
        arrays: Mapping[str, Any],
        lengths: np.ndarray,
        boundaries: Sequence[int],
        batch_size: int,
        make_batch: Callable[[Rows, int], Any],
        *,
        shuffle: bool = True,
        drop_remainder: bool = False,
        seed: int | None = 0,
        **kwargs,
    ):
        self.arrays, self.make_batch = dict(arrays), make_batch
        self.lengths = np.asarray(lengths)
        self.buckets = bucket_of(self.lengths, boundaries)
        self.widths = bucket_widths(boundaries, int(self.lengths.max(initial=1)))
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self.drop_remainder = drop_remainder
        super().__init__(seed, **kwargs)

    def _order(self) -> list[np.ndarray]:
        rng = self._rng()
        batches = []
        for bucket in range(len(self.widths)):
            members = np.flatnonzero(self.buckets == bucket)
            if self.shuffle:
                members = rng.permutation(members)
            for i in range(0, len(members), self.batch_size):
                batch = members[i : i + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_remainder:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __getitem__(self, index: int):
        batch = self._batches[index]
        width = self.widths[int(self.buckets[batch[0]])]
        return self.make_batch(_gather(self.arrays, batch), width)


class RandomWindows(_EpochOrdered):
    """`steps` batches per epoch of random windows of `ids`: x = ids[s : s + block],
    y = ids[s + 1 : s + block + 1] (next-token targets), as nanoGPT's `get_batch`."""

    def __init__(
        self, ids, block_size: int, batch_size: int, steps: int, *, seed: int | None = 0, **kwargs
    ):
        self.ids = ids
        self.block_size, self.batch_size, self.steps = int(block_size), int(batch_size), int(steps)
        if len(ids) < self.block_size + 1:
            raise ValueError(
                f"text of {len(ids)} tokens is shorter than one window ({self.block_size + 1})"
            )
        super().__init__(seed, **kwargs)

    def _order(self) -> list[np.ndarray]:
        high = len(self.ids) - self.block_size
        starts = self._rng().integers(0, high, size=(self.steps, self.batch_size))
        return list(starts)

    def __getitem__(self, index: int):
        offsets = self._batches[index][:, None] + np.arange(self.block_size + 1)[None, :]
        flat = rows_of(self.ids, offsets.ravel())
        chunk = flat.reshape(offsets.shape).astype("int32")
        return chunk[:, :-1], chunk[:, 1:]


class ConsecutiveWindows(keras.utils.PyDataset):
    """Every token of `ids` predicted once: consecutive windows (x, y) in batches, the last
    incomplete window dropped. The mean loss over it is the validation loss per token."""

    def __init__(self, ids, block_size: int, batch_size: int, **kwargs):
        super().__init__(**kwargs)
        ids = np.asarray(ids.read() if hasattr(ids, "read") else ids, dtype="int32")
        count = (len(ids) - 1) // int(block_size)
        if count < 1:
            raise ValueError(f"text of {len(ids)} tokens is shorter than one window")
        self.x = ids[: count * block_size].reshape(count, block_size)
        self.y = ids[1 : count * block_size + 1].reshape(count, block_size)
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index: int):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


class WholeReplicaBatches(keras.utils.PyDataset):
    """`dataset`'s batches cut to a multiple of `replicas` rows, for data parallelism over
    `keras.distribution` (each device takes an equal share of a batch): a short batch loses
    its last `rows % replicas` examples, and a batch of fewer rows than `replicas` is left
    out. Only the last batch of an evaluation split, or of a length bucket, is ever short.

    With several processes (`processes` > 1), each reads the same global batches and gives
    Keras its own consecutive share of each, `process`-th of `processes`: Keras' JAX
    trainer takes a process's input as its local part of the global batch
    (`jax.make_array_from_process_local_data`)."""

    def __init__(
        self,
        dataset: keras.utils.PyDataset,
        replicas: int,
        process: int = 0,
        processes: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dataset, self.replicas = dataset, int(replicas)
        self.process, self.processes = int(process), int(processes)
        if self.replicas % self.processes:
            raise ValueError(f"{replicas} devices do not split over {processes} processes")
        self._length = len(dataset)
        if self._length and _rows(dataset[self._length - 1]) < self.replicas:
            self._length -= 1  # only the last batch of a dataset can be that short
        if not self._length:
            raise ValueError(f"{len(dataset)} batches hold fewer examples than {replicas} devices")

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int):
        batch = self.dataset[index]
        share = (_rows(batch) - _rows(batch) % self.replicas) // self.processes
        part = slice(self.process * share, (self.process + 1) * share)
        return keras.tree.map_structure(lambda a: a[part], batch)

    def set_epoch(self, epoch: int) -> None:
        """The wrapped dataset's `set_epoch` (a resumed run)."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def on_epoch_end(self) -> None:
        self.dataset.on_epoch_end()


def _rows(batch) -> int:
    return int(keras.tree.flatten(batch)[0].shape[0])
