"""`zoo` in a process where importing TensorFlow raises ImportError: run as
`python -m tests.no_tensorflow prepare ...` (from the repository root) to show a command needs no TensorFlow.

TensorFlow is blocked by an import hook, not by `sys.modules["tensorflow"] = None`: as on
a machine without it, "tensorflow" is then absent from `sys.modules`, which Keras' own
preprocessing layers (`Rescaling` inside a model) check before they ask TensorFlow whether
they run in a graph (`keras.src.utils.backend_utils.in_tf_graph`)."""

import importlib.abc
import sys


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    """Refuses `tensorflow` and its submodules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


sys.meta_path.insert(0, _NoTensorFlow())  # `import tensorflow` now raises ImportError

from tfzoo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
