"""Start TensorFlow without its start-up noise: no CUDA or absl lines on a machine without
a GPU.

`TF_CPP_MIN_LOG_LEVEL` filters TensorFlow's C++ log only once absl logging is initialised;
the lines written before that (`WARNING: All log messages before absl::InitializeLog() ...`,
`cudart_stub.cc ... Could not find cuda drivers`, the oneDNN and CPU-feature notices) and
the `failed call to cuInit` error of device discovery ignore it, and no environment
variable silences them. So the import and device discovery run with the process's native
stderr (file descriptor 2) captured, and the captured lines are replayed afterwards minus
the known start-up noise: real warnings and errors (and a failed import's traceback) still
show.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

#: Start-up lines of TensorFlow / XLA / absl that say nothing about the user's command.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|cudart_stub\.cc|cuda_platform\.cc|failed call to cuInit|cuda_executor\.cc"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc"
    r"|cpu_feature_guard\.cc|To enable the following instructions:"
    r"|oneDNN custom operations are on|TF-TRT Warning"
)


def configure_environment() -> None:
    """Environment TensorFlow reads when it loads (an explicit user setting wins)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_filtered(noise: re.Pattern[str] = NOISE) -> Iterator[None]:
    """Capture file descriptor 2 (C++ and Python writes alike) for the block, then write
    the captured lines that do not match `noise` to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(True) if not noise.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tensorflow() -> None:
    """Import TensorFlow and discover its devices with the start-up noise filtered out."""
    if "tensorflow" in sys.modules:
        return
    configure_environment()
    with native_stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()
