"""Captioned images: Flickr8k-style folders, TFDS `coco_captions`, caption tokens, batches.

A folder in the Flickr8k layout (`../shared/data/flickr8k`, or a user's own):

    images/<file>.jpg
    captions_train.csv, captions_val.csv    header `image,caption`, one row per caption
                                            (any number of captions per image)

Caption normalization, written once in core `tf.strings` ops (used to build the vocabulary,
to score BLEU / CIDEr, and available in-graph): invalid UTF-8 replaced, lowercased,
apostrophes dropped ("woman's" -> "womans"), every other character that is not a letter,
a digit or a hyphen a separator, so punctuation never becomes a word.

Batches gather each example's image from one table per split (decoded pixels, or the
encoder's feature maps when they are cached), so an image is decoded (and encoded) once
however many captions it has.

The folder reader and the caption words in pure Python need no TensorFlow:
`training.data.caption_files`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# the TensorFlow-free half (the folder reader), here too under its old names
from training.data.caption_files import SPLITS, CaptionedImages, find_root, read_split
from training.data.images import decode_image
from training.data.parallel_text import normalize

__all__ = [
    "SPLITS",
    "CaptionedImages",
    "caption_dataset",
    "caption_tokens",
    "caption_tokens_py",
    "feature_table",
    "find_root",
    "load_split",
    "pixel_table",
    "read_split",
    "tfds_split",
]

# ---------------------------------------------------------------------------- tokens


def caption_tokens(texts) -> tf.RaggedTensor:
    """Captions [N] -> ragged lowercase words [N, (T)] (in-graph, core ops only)."""
    texts = normalize(tf.convert_to_tensor(texts, tf.string), lowercase=True)
    texts = tf.strings.regex_replace(texts, "['\u2019]", "")
    texts = tf.strings.regex_replace(texts, r"[^\pL\pN-]+", " ")
    tokens = tf.strings.split(texts)
    return tf.ragged.boolean_mask(tokens, tf.strings.regex_full_match(tokens, r".*[\pL\pN].*"))


def caption_tokens_py(texts: Sequence[str], chunk: int = 8192) -> list[list[str]]:
    """Eager `caption_tokens` on Python strings (the same ops)."""
    out: list[list[str]] = []
    for start in range(0, len(texts), chunk):
        ragged = caption_tokens(tf.constant(list(texts[start : start + chunk]), tf.string))
        out.extend([t.decode("utf-8") for t in row] for row in ragged.to_list())
    return out


# ---------------------------------------------------------------------------- readers


def tfds_split(split: str, limit: int = 0) -> CaptionedImages | None:
    """TFDS `coco_captions` (Karpathy splits; downloads when online): encoded images and
    their captions. `limit` bounds the images read (the tables below hold them all)."""
    import tensorflow_datasets as tfds

    name = {"val": "val", "train": "train", "test": "test"}[split]
    dataset = tfds.load(
        "coco_captions",
        split=name,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    if limit:
        dataset = dataset.take(limit)
    images, captions = [], []
    for example in dataset.as_numpy_iterator():
        images.append(bytes(example["image"]))
        captions.append([c.decode("utf-8") for c in example["captions"]["text"]])
    return CaptionedImages(images, captions) if images else None


def load_split(data_dir: str | None, split: str, limit: int = 0) -> CaptionedImages | None:
    """A split from a Flickr8k-style folder, else (no folder) from TFDS `coco_captions`."""
    if data_dir:
        return read_split(data_dir, split, limit)
    return tfds_split(split, limit)


# ---------------------------------------------------------------------------- tables


def pixel_table(images: list, size: int, batch_size: int = 64) -> np.ndarray:
    """uint8 [N, size, size, 3]: every image (paths or encoded bytes) decoded and resized
    as the export decodes them."""
    if isinstance(images[0], str):
        sources = tf.data.Dataset.from_tensor_slices(images).map(tf.io.read_file)
    else:
        sources = tf.data.Dataset.from_tensor_slices(tf.constant(images, tf.string))
    decoded = sources.map(lambda b: decode_image(b, size), num_parallel_calls=tf.data.AUTOTUNE)
    return np.concatenate(list(decoded.batch(batch_size).as_numpy_iterator()))


def feature_table(encoder, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """float16 [N, h, w, D]: a (frozen) encoder's feature maps of a pixel table."""
    run = tf.function(lambda x: encoder(x, training=False))
    out = [
        run(tf.constant(pixels[i : i + batch_size], tf.float32)).numpy().astype(np.float16)
        for i in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(out)


# ---------------------------------------------------------------------------- batches


def caption_dataset(
    table: np.ndarray,
    key: str,
    image_index: Sequence[int],
    target_ids: Sequence[Sequence[int]],
    batch_size: int,
    bos_id: int,
    eos_id: int,
    shuffle: bool,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ({key: table[image] as float32, "target_in"}, target_out, weights).

    One example per caption; the decoder reads `<s> y1 .. yn` and predicts `y1 .. yn </s>`
    (teacher forcing); padding (id 0) has weight 0.
    """
    if not target_ids:
        raise ValueError("no captions to build a dataset from")
    values = tf.constant(table)
    lengths = [len(t) + 1 for t in target_ids]
    flat_in = [i for t in target_ids for i in (bos_id, *t)]
    flat_out = [i for t in target_ids for i in (*t, eos_id)]
    ds = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(list(image_index), tf.int32),
            tf.RaggedTensor.from_row_lengths(tf.constant(flat_in, tf.int32), lengths),
            tf.RaggedTensor.from_row_lengths(tf.constant(flat_out, tf.int32), lengths),
        )
    )
    if shuffle:
        ds = ds.shuffle(len(target_ids), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda *row: tuple(tf.identity(x) for x in row))  # ragged rows -> dense
    ds = ds.padded_batch(batch_size)

    def to_example(index, target_in, target_out):
        image = tf.cast(tf.gather(values, index), tf.float32)
        weights = tf.cast(tf.not_equal(target_out, 0), tf.float32)
        return {key: image, "target_in": target_in}, target_out, weights

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
