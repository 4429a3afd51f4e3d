"""Show, Attend and Tell end to end on real Flickr8k images: the tiny preset trains on a slice
with its encoder initialised from a tiny GoogLeNet run (features cached), the export answers
as Keras in a fresh process and over gRPC / REST, awkward images get defined answers, the
attention figures are drawn, and the metrics are coco-caption's."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.harness import FamilyEndToEnd, PreparedCase, export_tiny_run, grpc_answers, need
from tests.helpers import small_image_folder, zoo_in_process
from training import export, train

#: two Flickr8k validation images
VAL_IMAGES = ("1056338697_4f7d7ce270.jpg", "106490881_5a2dd9b7bd.jpg")


@pytest.fixture(scope="module")
def flickr8k(shared_data):
    if not (shared_data / "flickr8k" / "captions_train.csv").is_file():
        pytest.skip("flickr8k not found in shared data")
    return shared_data / "flickr8k"


@pytest.fixture(scope="module")
def googlenet_run(shared_data, tmp_path_factory):
    """A tiny GoogLeNet trained for one epoch on 12 Imagenette images: the encoder's parent."""
    if not (shared_data / "imagenette").is_dir():
        pytest.skip("imagenette not found in shared data")
    classes = ["n01440764", "n03028079", "n03888257"]
    folder = small_image_folder(
        shared_data / "imagenette", tmp_path_factory.mktemp("imagenette"), 4,
        splits=("train", "val"), classes=classes,
    )  # fmt: skip
    run_dir = tmp_path_factory.mktemp("googlenet") / "run"
    train.run(
        "googlenet", "tiny", run_dir, str(folder), verbose=0,
        overrides={"num_classes": 3, "aux_heads": False},
    )  # fmt: skip
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(flickr8k, googlenet_run, tmp_path_factory):
    """The tiny preset, 3 epochs on 40 Flickr8k images, encoder from `googlenet_run`."""
    run_dir = tmp_path_factory.mktemp("captioner") / "run"
    metrics = train.run(
        "captioner", "tiny", run_dir, str(flickr8k), verbose=0,
        overrides={"encoder_init": str(googlenet_run)},
    )  # fmt: skip
    return run_dir, metrics


@pytest.fixture(scope="module")
def request_inputs(flickr8k):
    return {
        "image_bytes": np.array(
            [(flickr8k / "images" / name).read_bytes() for name in VAL_IMAGES], dtype=object
        )
    }


@pytest.fixture(scope="module")
def keras_side(tiny_run):
    """The export module around the trained Keras model, in this process."""
    from training.recipes.captioner import RECIPE

    model, info = export.load_trained(tiny_run[0])
    return RECIPE.export(model, info["config"], info["assets"]), model


def _png(width: int, height: int) -> bytes:
    return tf.io.encode_png(tf.fill([height, width, 3], tf.constant(200, tf.uint8))).numpy()


class TestEndToEnd(FamilyEndToEnd):
    family = "captioner"

    def test_awkward_images_over_the_wire(self, served, request_inputs, keras_side):
        module, _ = keras_side
        tiny, corrupt = _png(1, 1), b"\xff\xd8\xff\xe0 not really a jpeg"
        images = np.array([request_inputs["image_bytes"][0], tiny, b""], dtype=object)
        got = grpc_answers(served, self.family, "serving_default", {"image_bytes": images})
        want = module.serving_default(tf.constant(list(images)))["caption"].numpy()
        assert got["caption"].tolist() == want.tolist()
        assert got["caption"][0] and got["caption"][2] == b""  # an empty string: no caption

        body = {"instances": [{"b64": base64.b64encode(corrupt).decode()}]}
        status, payload = served.http("POST", f"/v1/models/{self.family}:predict", body)
        assert status == 400 and "image" in payload["error"].lower(), payload
        # the server goes on answering
        body = {"instances": [{"b64": base64.b64encode(tiny).decode()}]}
        status, payload = served.http("POST", f"/v1/models/{self.family}:predict", body)
        assert status == 200 and isinstance(payload["predictions"][0], str), payload

    def test_caption_with_attention_over_grpc(self, served, request_inputs):
        inputs = {**request_inputs, "beam_size": np.int32(0), "max_length": np.int32(0)}
        got = grpc_answers(served, self.family, "caption_with_attention", inputs)
        n, t, h, w = got["attention"].shape
        assert (n, h, w) == (2, 4, 4) and got["tokens"].shape == (2, t)
        emitted = (got["tokens"] != b"").astype("float32")
        np.testing.assert_allclose(got["attention"].sum((2, 3)), emitted, atol=1e-5)


def test_encoder_comes_from_the_googlenet_run_and_features_are_cached(tiny_run, googlenet_run):
    run_dir, metrics = tiny_run
    info = json.loads((run_dir / "run.json").read_text())
    assert info["assets"]["encoder_fingerprint"]  # trained on cached feature maps
    captioner, _ = export.load_trained(run_dir)
    googlenet, _ = export.load_trained(googlenet_run)
    source = googlenet.get_layer("backbone")
    layers = [layer for layer in captioner.backbone.layers if layer.weights]
    assert layers and len(layers) < len([x for x in source.layers if x.weights])  # cut at 4e
    for layer in layers:  # frozen through training: still the parent's weights
        for got, want in zip(layer.weights, source.get_layer(layer.name).weights, strict=True):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert metrics["val_loss"] < np.log(len(info["assets"]["target_vocab"]))


def test_a_resumed_run_refuses_a_changed_encoder(tiny_run, googlenet_run, flickr8k):
    from training.recipes.captioner import RECIPE
    from zoo import registry

    info = json.loads((tiny_run[0] / "run.json").read_text())
    config = registry.get("captioner").config(
        "tiny", encoder_init=str(googlenet_run), train_images=4, val_images=2
    )
    data = RECIPE.load_data(config, str(flickr8k), 8, assets=info["assets"])  # the same encoder
    assert data.assets == info["assets"]
    changed = {**info["assets"], "encoder_fingerprint": "0" * 16}
    with pytest.raises(ValueError, match="has changed since this run began"):
        RECIPE.load_data(config, str(flickr8k), 8, assets=changed)


def test_init_from_is_strict(googlenet_run):
    from training.recipes.captioner import RECIPE
    from training.transfer import TransferError
    from zoo import registry

    spec = registry.get("captioner")
    model = spec.build("tiny", target_vocab_size=40)
    before = model.get_layer("embedding").get_weights()[0].copy()
    googlenet, _ = export.load_trained(googlenet_run)
    RECIPE.init_from(model, googlenet, ["backbone"])
    conv = googlenet.get_layer("backbone").get_layer("conv1")
    np.testing.assert_array_equal(model.backbone.get_layer("conv1").kernel, conv.kernel)
    np.testing.assert_array_equal(model.get_layer("embedding").get_weights()[0], before)
    with pytest.raises(TransferError, match="no layer 'embedding'"):
        RECIPE.init_from(model, googlenet, ["embedding"])
    wider = spec.build("tiny", target_vocab_size=40, encoder_preset="imagenette")
    with pytest.raises(TransferError, match="shape"):
        RECIPE.init_from(wider, googlenet, ["backbone"])


def test_train_resolves_only_run_directories_without_a_load_source(tmp_path, flickr8k):
    """Training never resolves a published name itself: without a `load_source` (the
    CLI passes the catalogue's) anything but a run directory is a clear error."""
    with pytest.raises(ValueError, match="is not a run directory; pass a load_source"):
        train.run(
            "captioner", "tiny", tmp_path / "run", str(flickr8k), verbose=0,
            overrides={"encoder_init": "googlenet/imagenette", "train_images": 4,
                       "val_images": 2},
        )  # fmt: skip


def test_awkward_inputs_in_process(keras_side):
    module, _ = keras_side
    out = module.caption_with_attention(
        tf.constant([_png(1, 1), b"", _png(640, 20)]), tf.constant(2), tf.constant(5)
    )
    captions = [c.decode() for c in out["caption"].numpy()]
    assert captions[1] == "" and all(isinstance(c, str) for c in captions)
    assert out["tokens"].shape[1] <= 5 and (out["tokens"].numpy()[1] == b"").all()
    assert float(tf.reduce_sum(out["attention"][1])) == 0.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="image"):
        module.serving_default(tf.constant([b"GIF89a broken"]))
    assert module.serving_default(tf.constant([], tf.string))["caption"].shape == (0,)


def test_beam_one_is_greedy_and_features_in_matches_images_in(keras_side, request_inputs):
    module, _ = keras_side
    images = tf.constant(list(request_inputs["image_bytes"]))
    greedy = module.caption_with_attention(images, tf.constant(1), tf.constant(0))
    from zoo.layers.decoding import beam_search

    features = module.features(images)["features"]
    hygiene = {"unk_id": module.unk_id, "no_repeat_ngram_size": module.no_repeat_ngram_size}
    ids, _, _ = beam_search(
        module.model, {"features": features}, 1, module.max_decode_length, **hygiene
    )
    assert module.target_tokens(ids).numpy().tolist() == greedy["tokens"].numpy().tolist()
    via_features = module.caption_features(features, tf.constant(1), tf.constant(0))
    assert via_features["caption"].numpy().tolist() == greedy["caption"].numpy().tolist()
    np.testing.assert_allclose(via_features["attention"], greedy["attention"], atol=1e-5)


def test_hygiene_defaults_and_options(keras_side, request_inputs):
    """No "[UNK]" and no repeated bigram (the preset's no_repeat_ngram_size) in any caption;
    `caption_with_options` with -1 is `caption`."""
    module, _ = keras_side
    images = tf.constant(list(request_inputs["image_bytes"]))
    assert module.no_repeat_ngram_size == 2 and module.unk_id == 1
    for beam in (1, 3):
        plain = module.caption(images, tf.constant(beam), tf.constant(0))["caption"].numpy()
        options = module.caption_with_options(
            images, tf.constant(beam), tf.constant(0), tf.constant(-1), tf.constant(-1.0)
        )["caption"].numpy()
        assert options.tolist() == plain.tolist()
        for caption in plain.tolist():
            words = caption.decode().split()
            assert "[UNK]" not in words, caption
            bigrams = list(zip(words, words[1:], strict=False))
            assert len(set(bigrams)) == len(bigrams), caption


def _coco_bleu(hypotheses: list[list[str]], references: list[list[list[str]]]) -> list[float]:
    """Corpus BLEU-1..4 (x 100) counted here the way coco-caption's BleuScorer does: clipped
    n-gram matches over the corpus, the reference length closest to each hypothesis's, the
    brevity penalty on the totals, and its tiny / small constants against zero counts."""
    from collections import Counter

    def grams(words: list[str], n: int) -> Counter:
        return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))

    correct, guess, test_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        test_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, 5):
            most: Counter = Counter()
            for ref in refs:
                most |= grams(ref, n)  # the largest count of each n-gram in any reference
            correct[n - 1] += sum(min(c, most[g]) for g, c in grams(hyp, n).items())
            guess[n - 1] += max(0, len(hyp) - n + 1)
    tiny, small = 1e-15, 1e-9
    ratio = (test_len + tiny) / (ref_len + small)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for n in range(4):
        product *= (correct[n] + tiny) / (guess[n] + small)
        scores.append(100.0 * brevity * product ** (1 / (n + 1)))
    return scores


def test_evaluate_reports_coco_caption_metrics(tiny_run, flickr8k, keras_side):
    """`zoo evaluate` and the training run report the same coco-caption figures, and both
    match the figures counted here: the run's evaluation images read here, captioned by the
    trained model's `caption` signature (beam 0: the preset's beam; 1: greedy), BLEU counted
    by `_coco_bleu` and CIDEr by pycocoevalcap's scorer on the tokenized captions."""
    from pycocoevalcap.cider.cider import Cider

    from training import evaluate
    from training.data import captions

    run_dir, metrics = tiny_run
    results = evaluate.run(run_dir, str(flickr8k))
    config = json.loads((run_dir / "run.json").read_text())["config"]
    val = captions.read_split(flickr8k, "val", limit=int(config["val_images"]))
    count = int(config["eval_images"])
    images = [open(path, "rb").read() for path in val.images[:count]]
    refs = [captions.caption_tokens_py(r) for r in val.captions[:count]]
    assert len(images) == 4 and all(len(r) == 5 for r in refs)
    module, _ = keras_side
    words_seen = 0
    for beam, suffix in ((0, ""), (1, "_greedy")):
        out = module.caption(tf.constant(images), tf.constant(beam), tf.constant(0))
        hyps = captions.caption_tokens_py([c.decode() for c in out["caption"].numpy()])
        words_seen += sum(map(len, hyps))
        bleu = _coco_bleu(hyps, refs)
        cider, _ = Cider().compute_score(
            {i: [" ".join(w) for w in r] for i, r in enumerate(refs)},
            {i: [" ".join(h)] for i, h in enumerate(hyps)},
        )
        for out_metrics in (metrics, results):
            for n in range(4):
                key = f"bleu_{n + 1}{suffix}"
                assert out_metrics[key] == pytest.approx(bleu[n], rel=1e-6, abs=1e-9), key
            assert out_metrics[f"cider{suffix}"] == pytest.approx(100.0 * cider, rel=1e-6)
    assert words_seen > 0  # the captions have words: the counts above are not of nothing
    for out in (metrics, results):
        assert out["bleu"] == out["bleu_4"]
    assert results["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-4)


def test_coco_scores_against_every_reference():
    from training.tasks.caption_metrics import coco_scores

    refs = [["A dog runs on the grass .", "The dog is running."], ["Two men play football."]]
    perfect = coco_scores(["a dog runs on the grass", "two men play football"], refs)
    assert perfect["bleu_1"] == pytest.approx(100.0, abs=1e-3)
    worse = coco_scores(["a cat sleeps", "two men play football"], refs)
    assert worse["bleu_1"] < perfect["bleu_1"] and worse["cider"] < perfect["cider"]


def test_caption_reader_and_tokens(flickr8k):
    from training.data import captions

    split = captions.read_split(flickr8k, "val", limit=3)
    assert len(split) == 3 and all(len(refs) == 5 for refs in split.captions)
    assert captions.read_split(flickr8k, "test") is None  # held out: not in shared data
    assert captions.caption_tokens_py(["A woman's  dog, jumps!", "  ", "Black-and-white."]) == [
        ["a", "womans", "dog", "jumps"], [], ["black-and-white"],
    ]  # fmt: skip


def test_pure_python_caption_words_are_tensorflows(flickr8k):
    """`caption_files.caption_words` (`zoo prepare`, no TensorFlow) gives the words of
    `caption_tokens` on every Flickr8k caption and on awkward text."""
    from training.data import caption_files, captions

    texts = [
        caption
        for split in ("train", "val")
        for refs in caption_files.read_split(flickr8k, split).captions
        for caption in refs
    ]
    assert len(texts) == 4500
    texts += ["A woman’s  dog, jumps!", "  ", "Black-and-white.", "- -- a-", "ÉCOLE 3.5 km",
              "ΣΟΦΟΣ\u2028x\vy", "rock'n'roll", "東京 😀 ok", "A\x00B"]  # fmt: skip
    assert caption_files.caption_words_of(texts) == captions.caption_tokens_py(texts)


def test_prepared_arrays_hold_load_datas_examples_and_cached_features(
    googlenet_run, flickr8k, tmp_path
):
    """`zoo prepare captioner` with `encoder_init` (cached features): the assets are
    `load_data`'s (vocabulary and encoder fingerprint), the caption rows its examples, and
    the features the encoder's maps of the prepared pixels as `feature_table` computes them;
    `array_data` batches them as ({"features", "target_in"}, target_out, weights)."""
    from training import prepare
    from training.data import captions
    from training.data.vocab import Vocabulary
    from training.recipes.captioner import RECIPE
    from training.sources import run_directory
    from zoo import registry

    sizes = {"train_images": 6, "val_images": 3}
    overrides = {"encoder_init": str(googlenet_run), **sizes}
    config = registry.get("captioner").config("tiny", **overrides)
    data = RECIPE.load_data(config, str(flickr8k), 8)
    out = prepare.run(
        "captioner", str(flickr8k), tmp_path / "features", preset="tiny", overrides=overrides,
        load_source=run_directory,
    )  # fmt: skip
    assert out.assets == data.assets and out.assets["encoder_fingerprint"]

    vocab = Vocabulary.from_json(data.assets["target_vocab"])
    train = captions.read_split(flickr8k, "train", 6)
    index, targets = RECIPE.examples(train, vocab, int(config["max_caption_tokens"]))
    rows = {name: array.read() for name, array in out.split("train").items()}
    assert rows["image"].tolist() == index
    pairs = zip(rows["target"], rows["target_lengths"], strict=True)
    assert [row[:n].tolist() for row, n in pairs] == targets

    pixels = prepare.run(
        "captioner", str(flickr8k), tmp_path / "pixels", preset="tiny", overrides=sizes
    ).split("train_images")["pixels"].read()  # fmt: skip
    features = out.split("train_images")["features"].read()
    encoder = RECIPE.initialized_encoder(config, run_directory)
    assert features.dtype == np.float16 and features.shape[:3] == (6, 4, 4)
    want = captions.feature_table(encoder, pixels).astype(np.float32)
    np.testing.assert_allclose(features.astype(np.float32), want, rtol=2e-3, atol=2e-3)

    x, y, w = RECIPE.array_data(config, out, 8).train[0]
    assert sorted(x) == ["features", "target_in"] and x["features"].dtype == np.float32
    assert x["features"].shape == (8, *features.shape[1:]) and w.shape == y.shape


def test_zoo_caption_draws_one_panel_per_word(tiny_run, flickr8k, tmp_path):
    from matplotlib.image import imread

    from tfzoo.verbs import caption, plots

    version = export_tiny_run(tiny_run[0], "captioner")
    image = flickr8k / "images" / VAL_IMAGES[0]
    out = tmp_path / "attention.png"
    proc = zoo_in_process(
        "caption", "--model", str(version.parent), str(image), "--attention-plot", str(out)
    )
    text = proc.stdout.strip().splitlines()[0].split(": ", 1)[1]
    (result,) = caption.caption_images(version, [str(image)])
    assert text == result.text and result.words == text.split()
    figure = plots.caption_figure(np.zeros((30, 40, 3), np.uint8), result.words, result.attention)
    assert len(figure.axes) == len(result.words)
    height, width = imread(out).shape[:2]
    aspect = 256 / 384  # the image's height / width
    assert (width, height) == plots.caption_figure_pixels(len(result.words), aspect)


class _WordByWord(tf.Module):
    """A real (if toy) translator with a seq2seq export's `translate_with_attention`
    signature: lowercased words and "." from a fixed dictionary, "</s>" at the end, each
    target word attending to its own source word."""

    def __init__(self):
        super().__init__()
        words = {"a": "ein", "dog": "Hund", ".": ".", "</s>": "</s>"}
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(list(words), list(words.values())), "[UNK]"
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="source"),
            tf.TensorSpec([], tf.int32, name="beam_size"),
            tf.TensorSpec([], tf.int32, name="max_length"),
        ]
    )
    def translate_with_attention(self, source, beam_size, max_length):
        spaced = tf.strings.regex_replace(tf.strings.lower(source), r"\.", " .")
        words = tf.strings.split(spaced)
        ends = tf.fill([words.nrows(), 1], "</s>")
        source_tokens = tf.concat([words, ends], axis=1).to_tensor("")
        target_tokens = tf.where(source_tokens == "", "", self.table.lookup(source_tokens))
        width = tf.shape(source_tokens)[1]
        real = tf.cast(source_tokens != "", tf.float32)
        attention = tf.eye(width, batch_shape=tf.shape(source)[:1]) * real[:, :, None]
        kept = tf.ragged.boolean_mask(
            target_tokens, (target_tokens != "") & (target_tokens != "</s>")
        )
        return {
            "translation": tf.strings.reduce_join(kept, axis=1, separator=" "),
            "source_tokens": source_tokens,
            "target_tokens": target_tokens,
            "attention": attention,
        }


def test_translate_alignment_plot(tmp_path):
    """`zoo translate --attention-plot` draws `translate_with_attention`'s matrix, read from
    a real SavedModel (a toy word-by-word translator) at a base path."""
    from matplotlib.image import imread

    from tfzoo.verbs import translate

    module = _WordByWord()
    signatures = {"translate_with_attention": module.translate_with_attention}
    tf.saved_model.save(module, str(tmp_path / "toy" / "1"), signatures=signatures)
    exported = tf.saved_model.load(str(tmp_path / "toy" / "1"))

    # the first sentence is padded to the second's length in the batch: the padding goes
    result, longer = translate.translate(exported, ["A dog.", "A dog. A dog."])
    assert result["source_tokens"] == ["a", "dog", ".", "</s>"]
    assert result["target_tokens"] == ["ein", "Hund", ".", "</s>"]
    assert result["attention"].shape == (4, 4)
    np.testing.assert_array_equal(result["attention"], np.eye(4))  # each word on its own
    assert longer["translation"] == "ein Hund . ein Hund ." and len(longer["target_tokens"]) == 7
    np.testing.assert_array_equal(longer["attention"], np.eye(7))
    lines = translate.run(str(tmp_path / "toy"), ["A dog."], attention_plot=str(tmp_path / "a.png"))
    assert lines[0] == "ein Hund ." and (tmp_path / "a.png").is_file()
    assert imread(tmp_path / "a.png").shape[0] > 100


def _flickr8k(tmp, shared):
    """The shared Flickr8k folder (the tiny preset reads its first 40 + 8 images)."""
    return need(shared / "flickr8k" / "captions_train.csv").parent


def _flickr8k_request(shared):
    """Two Flickr8k validation images, encoded, for the captioner's `serving_default`."""
    folder = need(shared / "flickr8k" / "images")
    images = [(folder / name).read_bytes() for name in VAL_IMAGES]
    return {"image_bytes": np.array(images, dtype=object)}


#: the tiny run on prepared arrays under JAX (tests/training/test_prepared_training.py): the
#: tiny preset without `encoder_init` (pixels through its frozen encoder); 200 training and
#: 40 validation captions, so batches of 40 come in one shape
PREPARED_CASE = PreparedCase(
    data=_flickr8k,
    request=_flickr8k_request,
    train=("epochs=2", "batch_size=40"),
)
