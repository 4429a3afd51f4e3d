"""Named configurations of the GPT language model (nanoGPT's Shakespeare-char configs).

Training runs are iteration-based: `max_iters` optimizer steps in `epochs` evaluation
intervals (`max_iters // epochs` steps each, nanoGPT's eval_interval), with linear warmup
then cosine decay from `learning_rate` to `min_lr`. `vocab_size` is `DATA_DECIDED`: the
size of the character vocabulary learned from the training text.
"""

from zoo.registry import DATA_DECIDED

_SHAKESPEARE_CHAR = {
    # model
    "vocab_size": DATA_DECIDED,
    "block_size": 256,
    "n_layer": 6,
    "n_head": 6,
    "n_embd": 384,
    "dropout": 0.2,
    "use_bias": False,  # nanoGPT's train.py: no biases in Linear layers and LayerNorms
    "dtype_policy": "auto",  # mixed_bfloat16 where a GPU is present, else float32
    # data
    "text_file": "tinyshakespeare/input.txt",  # relative to --data-dir
    "val_fraction": 0.1,
    "seed": 1337,
    # optimization (nanoGPT config/train_shakespeare_char.py)
    "batch_size": 64,
    "learning_rate": 1e-3,
    "min_lr": 1e-4,
    "warmup_iters": 100,
    "max_iters": 5000,
    "epochs": 20,  # 250 iterations between evaluations
    "eval_iters": 200,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.99,
    "grad_clip": 1.0,
    # generation defaults (serving_default, `zoo generate`)
    "max_new_tokens": 200,
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 1.0,
}

# nanoGPT's README "I only have a macbook" CPU run: val loss 1.88 after 2000 iterations.
_BABY = {
    **_SHAKESPEARE_CHAR,
    "block_size": 64,
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "dropout": 0.0,
    "batch_size": 12,
    # twice nanoGPT's rate: measured here, 2e-3 reaches a validation loss of 1.83 in the
    # 2,000 iterations where 1e-3 reaches 1.92 (same seed, on a 2-core CPU)
    "learning_rate": 2e-3,
    "max_iters": 2000,
    "epochs": 8,
    "eval_iters": 20,
}

_TINY = {
    **_BABY,
    "block_size": 32,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "min_lr": 3e-4,
    "warmup_iters": 10,
    "max_iters": 200,
    "epochs": 2,
    "eval_iters": 4,
    "max_new_tokens": 50,
}

PRESETS = {"shakespeare_char": _SHAKESPEARE_CHAR, "baby": _BABY, "tiny": _TINY}
