"""The nearest-neighbour captioning baseline (benchmarks/caption_baseline.py), on synthetic
features: no data, no TensorFlow."""

from __future__ import annotations

import numpy as np

from benchmarks.caption_baseline import consensus, consensus_captions, nearest_neighbours

# Six training images, each with captions about its own subject only.
SUBJECTS = ["dog", "cat", "horse", "bicycle", "boat", "kite"]
CAPTIONS = [
    [
        f"a {s} is standing on the grass",
        f"the {s} plays near a red house",
        f"one {s} in the snow",
        f"a small {s} runs on the beach",
        f"a {s} under the blue sky",
    ]
    for s in SUBJECTS
]


def features(seed: int = 0) -> np.ndarray:
    """Well-separated [6, 4, 4, 32] feature maps: one direction per image plus small noise."""
    rng = np.random.default_rng(seed)
    base = np.zeros((len(SUBJECTS), 4 * 4 * 32), np.float32)
    base[np.arange(len(SUBJECTS)), np.arange(len(SUBJECTS)) * 7] = 10.0
    noise = rng.normal(0, 0.05, base.shape).astype(np.float32)
    return (base + np.abs(noise)).reshape(len(SUBJECTS), 4, 4, 32)


def test_own_features_return_own_caption_with_k_1():
    x = features()
    out = consensus_captions(x, CAPTIONS, x, k=1)
    assert len(out) == len(SUBJECTS)
    for i, caption in enumerate(out):
        assert caption in CAPTIONS[i], (i, caption)


def test_nearest_neighbour_of_own_features_is_itself():
    x = features()
    order = nearest_neighbours(x, x, k=3)
    assert order.shape == (len(SUBJECTS), 3)
    assert order[:, 0].tolist() == list(range(len(SUBJECTS)))


def test_k_above_1_with_unrelated_neighbours_returns_a_pooled_candidate():
    x = features()
    for k in (2, 3, len(SUBJECTS)):
        nearest = nearest_neighbours(x, x, k)
        out = consensus_captions(x, CAPTIONS, x, k=k)
        for i, caption in enumerate(out):
            pooled = [c for j in nearest[i] for c in CAPTIONS[j]]
            assert caption in pooled, (k, i, caption)
            assert i in nearest[i]


def test_consensus_picks_the_caption_most_similar_to_the_others():
    candidates = [
        "a purple elephant juggles oranges at midnight",
        "a dog runs across the green grass",
        "a brown dog runs across the green grass",  # shares the most with the rest
        "a brown dog runs on the grass",
        "the brown dog runs across a field of green grass",
        "two children paint a wooden fence",
    ]
    assert consensus(candidates) == 2
    # and an order of the candidates does not change the answer
    shuffled = [candidates[i] for i in (5, 4, 2, 0, 3, 1)]
    assert shuffled[consensus(shuffled)] == candidates[2]


def test_query_near_an_image_takes_that_images_neighbourhood():
    x = features()
    query = x[3:4] + 0.01  # close to image 3 (bicycle) only
    (caption,) = consensus_captions(x, CAPTIONS, query, k=1)
    assert "bicycle" in caption
