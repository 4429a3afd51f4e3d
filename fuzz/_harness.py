"""What the fuzz targets share: the random mutations of the plain loop (and of
`fuzz/run.py --engine random`), the atheris entry point, and for the request-decoder
targets (fuzz_json_tensor, fuzz_v2_rest, fuzz_v2_grpc, fuzz_tensor_proto) small request
limits and the memory bound every input must keep.

A finding is any exception other than ServingError, or an input that makes the decoder
allocate more than CONSTANT + PER_BYTE x its size (+ BROADCAST x MAX_ELEMENTS where a
TensorProto may fill its shape from one value), measured with tracemalloc (numpy reports its
buffers to it).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

MB = 1 << 20
#: --max_request_elements while fuzzing: small, so a broadcast within it stays cheap
MAX_ELEMENTS = 1 << 12
CONSTANT, PER_BYTE, BROADCAST = 2 * MB, 64, 16

#: what `mutate` inserts by default: JSON-ish tokens and numbers the decoders look for
TOKENS = [
    b"[",
    b"]",
    b"{",
    b"}",
    b'"',
    b"\\",
    b",",
    b":",
    b"0",
    b"-1",
    b"1e400",
    b"NaN",
    b"Infinity",
    b"true",
    b"null",
    b"4294967301",
    b"18446744073709551615",
    b"536870912",
    b'"b64"',
    b'"\\ud800"',
    b"\xff",
    b"\x00\x00\x00\x20",
]


def configure_limits() -> None:
    """The process's request limits for fuzzing (MAX_ELEMENTS elements)."""
    from serving import limits

    limits.configure(limits.RequestLimits(max_request_elements=MAX_ELEMENTS))


def bounded(bound: int, fn: Callable, *args) -> None:
    """fn(*args): a ServingError is a fine answer; any other exception propagates, and more
    than `bound` bytes allocated raises AssertionError."""
    from serving.errors import ServingError

    # traced from the first input on: starting and stopping tracemalloc for each input grows
    # the process (about 0.7 kB an input), which a long campaign's rss limit would catch
    if not tracemalloc.is_tracing():
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        fn(*args)
    except ServingError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1] - before
    if peak > bound:
        raise AssertionError(f"{fn.__name__} allocated {peak} bytes for this input, bound {bound}")


def mutate(data: bytes, rng: random.Random, tokens: list[bytes] = TOKENS) -> bytes:
    """A few random edits: a bit flipped, a token inserted, a cut, random bytes, a repeat."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data) + 1)
        action = rng.randrange(5)
        if action == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif action == 1:
            data[at:at] = rng.choice(tokens) * rng.choice([1, 1, 1, 2, 70])
        elif action == 2:
            del data[at : at + rng.randint(1, 16)]
        elif action == 3:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif data:
            end = min(len(data), at + rng.randint(1, 8))
            data[at:end] = data[at:end] * rng.randint(2, 4)
    return bytes(data)


def run_plain(
    test_one_input: Callable[[bytes], None],
    seeds: list[bytes],
    iterations: int,
    seed: int = 0,
    tokens: list[bytes] = TOKENS,
) -> int:
    """Run the target on the seeds, then `iterations` random mutations of them (no atheris);
    returns the number of inputs run. An exception is a finding, as under the fuzzer."""
    rng = random.Random(seed)
    for data in seeds:
        test_one_input(data)
    pool = list(seeds)
    for _ in range(iterations):
        data = mutate(rng.choice(pool), rng, tokens)
        test_one_input(data)
        if len(pool) < 256 and rng.random() < 0.05:
            pool.append(data)
    return iterations + len(seeds)


#: libFuzzer dictionary entries for the JSON targets (keys and values the decoders look for)
JSON_WORDS = [
    *TOKENS,
    *(
        f'"{key}"'.encode()
        for key in (
            "instances inputs outputs signature_name examples context b64 name shape datatype "
            "data parameters binary_data_size binary_data binary_data_output id "
            "BYTES FP32 FP16 INT8 INT32 INT64 UINT8 UINT64 BOOL s x t a b"
        ).split()
    ),
]


def _dictionary_file(words: list[bytes]) -> str:
    """A libFuzzer -dict file of `words` (removed at exit)."""
    handle, path = tempfile.mkstemp(prefix="fuzz-dict-", suffix=".txt")
    with os.fdopen(handle, "w") as out:
        for word in words:
            escaped = "".join(
                chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in word
            )
            out.write(f'"{escaped}"\n')
    atexit.register(os.unlink, path)
    return path


def main(
    name: str,
    load: Callable[[], None],
    test_one_input: Callable[[bytes], None],
    seed_inputs: Callable[[], list[bytes]],
    argv: list[str] | None = None,
    dictionary: list[bytes] | None = None,
    instrument: tuple[str, ...] = ("serving",),
    tokens: list[bytes] = TOKENS,
) -> None:
    """Fuzz with atheris (libFuzzer flags in argv), instrumenting the `instrument` packages
    only; `--plain N` runs N random mutations (inserting `tokens`) without atheris instead.
    `dictionary`: words for libFuzzer's mutations, unless argv gives a -dict."""
    argv = list(sys.argv if argv is None else argv)
    if "--plain" in argv:
        load()
        count = int(argv[argv.index("--plain") + 1])
        done = run_plain(test_one_input, seed_inputs(), count, tokens=tokens)
        print(f"{name}: {done} inputs, no finding")
        return
    import atheris  # the optional `fuzz` extra

    with atheris.instrument_imports(include=list(instrument)):
        load()
    if dictionary and not any(arg.startswith("-dict=") for arg in argv):
        argv.insert(1, f"-dict={_dictionary_file(dictionary)}")
    if not any(not arg.startswith("-") for arg in argv[1:]):  # no corpus or input named
        corpus = Path(tempfile.mkdtemp(prefix=f"{name}-corpus-"))
        atexit.register(shutil.rmtree, corpus, True)
        for i, data in enumerate(seed_inputs()):
            (corpus / f"seed-{i}").write_bytes(data)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
