"""Named configurations of the BiLSTM tagger.

Vocabulary sizes and the tag count are `DATA_DECIDED`: the training recipe sets them to the
sizes of the vocabularies and tag set it builds.
"""

from zoo.registry import DATA_DECIDED

_DEFAULT = {
    # data
    "tagset": "upos",  # or "xpos"
    "train_limit": None,  # use only the first N training sentences
    "word_vocab_max": 20000,
    "word_min_count": 2,  # rarer words are left to the character encoder
    "char_min_count": 5,
    "max_word_length": 20,  # characters kept per word (longer words are cut)
    "word_dropout": 0.1,  # training words replaced by [UNK] (learn to use characters)
    # model
    "word_vocab_size": DATA_DECIDED,
    "char_vocab_size": DATA_DECIDED,
    "num_tags": DATA_DECIDED,
    "word_dim": 100,
    "char_dim": 32,
    "char_filters": 128,
    "char_kernel_size": 3,
    "lstm_units": 128,
    "lstm_layers": 2,
    "dropout": 0.33,
    # training
    "batch_size": 32,
    "learning_rate": 2e-3,
    "lr_schedule": "cosine",  # or "constant"; cosine decays over `epochs` ...
    "min_learning_rate": 4e-5,  # ... to 2% of the peak
    "epochs": 12,
}

PRESETS = {
    "default": _DEFAULT,
    "tiny": {
        **_DEFAULT,
        "train_limit": 400,
        "word_vocab_max": 2000,
        "word_min_count": 1,
        "char_min_count": 1,
        "word_dim": 16,
        "char_dim": 8,
        "char_filters": 16,
        "lstm_units": 16,
        "lstm_layers": 1,
        "dropout": 0.1,
        "batch_size": 16,
        "learning_rate": 1e-2,
        "epochs": 2,
    },
}
