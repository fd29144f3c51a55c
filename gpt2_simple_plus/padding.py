"""Padding ragged rows of token ids into a few fixed shapes.

A compiled function is traced once per input shape, so rows of any length are
padded up to a *bucket*: a power of two (:func:`length_bucket`, for scoring,
classifying and training batches) or a multiple of a step (:func:`round_up`,
for the decode loop's prompt and cache). Calling again with similar rows then
reuses what was compiled instead of tracing a new shape each time.

    >>> tokens, lengths = pad_right([[5, 6, 7], [8]], height=2, width=4, pad_id=0)
    >>> tokens.tolist(), lengths.tolist()
    ([[5, 6, 7, 0], [8, 0, 0, 0]], [3, 1])
    >>> tokens, pad = pad_left([[5, 6, 7], [8]], width=4)
    >>> tokens.tolist(), pad.tolist()
    ([[0, 5, 6, 7], [0, 0, 0, 8]], [1, 3])
"""

import numpy as np

SMALLEST_BUCKET = 16  # padded lengths are 16, 32, 64 ... up to the limit


def length_bucket(n, limit, smallest=SMALLEST_BUCKET):
    """``n`` rounded up to a power of two (at least ``smallest``), capped at ``limit``.

        >>> length_bucket(5, 1024), length_bucket(100, 1024), length_bucket(700, 1024)
        (16, 128, 1024)
    """
    bucket = smallest
    while bucket < n:
        bucket *= 2
    return min(bucket, limit)


def round_up(n, multiple):
    """``n`` rounded up to a multiple of ``multiple``.

        >>> round_up(17, 16), round_up(32, 16)
        (32, 32)
    """
    return -(-n // multiple) * multiple


def pad_right(rows, height, width, pad_id):
    """Rows written from the left into ``[height, width]`` int32 ids filled with
    ``pad_id``, and each row's length (1 for the filler rows below the last one)."""
    tokens = np.full((height, width), pad_id, np.int32)
    lengths = np.ones((height,), np.int32)
    for r, ids in enumerate(rows):
        tokens[r, :len(ids)] = ids
        lengths[r] = len(ids)
    return tokens, lengths


def pad_left(rows, width, pad_id=0):
    """Rows written against the right edge of ``[len(rows), width]`` int32 ids, and
    how many pad tokens each row starts with (the model skips them: ``pad=``)."""
    tokens = np.full((len(rows), width), pad_id, np.int32)
    pad = np.zeros([len(rows)], np.int32)
    for r, ids in enumerate(rows):
        pad[r] = width - len(ids)
        tokens[r, pad[r]:] = ids
    return tokens, pad
