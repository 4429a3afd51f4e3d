"""Length bucketing of variable-length examples, and how many batches it makes.

`tf.data`'s `bucket_by_sequence_length` cannot report its cardinality, but learning-rate
schedules need the steps of an epoch: each bucket ends with its own partial batch.
"""

from __future__ import annotations

from collections.abc import Iterable


def bucket_batch_count(lengths: Iterable[int], boundaries: list[int], batch_size: int) -> int:
    """Batches per pass of `bucket_by_sequence_length(boundaries, batch_size)` over examples
    of these lengths, remainders kept (bucket i holds boundaries[i-1] <= length < boundaries[i])."""
    sizes = [0] * (len(boundaries) + 1)
    for length in lengths:
        sizes[sum(length >= b for b in boundaries)] += 1
    return sum(-(-n // batch_size) for n in sizes)
