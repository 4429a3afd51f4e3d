"""`zoo` in a process where importing TensorFlow raises ImportError: run as
`python -m tests.no_tensorflow prepare ...` (from the repository root) to show a command needs no TensorFlow.

TensorFlow is blocked by an import hook, not by `sys.modules["tensorflow"] = None`: as on
a machine without it, "tensorflow" is then absent from `sys.modules`, which Keras' own
preprocessing layers (`Rescaling` inside a model) check before they ask TensorFlow whether
they run in a graph (`keras.src.utils.backend_utils.in_tf_graph`). The hook finds the name
and fails its loading, so that `importlib.util.find_spec("tensorflow")` answers (etils asks
it before JAX's compilation cache writes a file) while every import raises."""

import importlib.abc
import importlib.machinery
import sys


class _Blocked(importlib.abc.Loader):
    """Fails every module it is asked to create: the import raises ModuleNotFoundError."""

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked)", name=spec.name)

    def exec_module(self, module):  # never reached: create_module raises
        raise ModuleNotFoundError(f"No module named {module.__name__!r} (blocked)")


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    """Refuses `tensorflow` and its submodules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] == "tensorflow":
            return importlib.machinery.ModuleSpec(fullname, _Blocked())
        return None


sys.meta_path.insert(0, _NoTensorFlow())  # `import tensorflow` now raises ImportError

from tfzoo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
