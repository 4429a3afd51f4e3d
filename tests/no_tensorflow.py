"""`zoo` in a process where importing TensorFlow raises ImportError: run as
`python -m tests.no_tensorflow prepare ...` (from the repository root) to show a command needs no TensorFlow."""

import sys

sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError

from tfzoo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
