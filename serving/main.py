"""Command line: TF Serving's `tensorflow_model_server` flags, then serve until SIGTERM/SIGINT.

Flag parsing follows TF Serving's (model_servers/main.cc with tensorflow::Flags): every
`tensorflow_model_server` flag is accepted with its default (`--rest_api_port` 0 = REST off);
`--flag=value` works, and `--flag value` too; an unknown argument is reported
("unknown argument: ...", then the usage) and the server starts all the same; a bad value for a
known flag prints the usage and exits with status 255 (main returns -1). A flag the zoo cannot
honour (TPU, TFLite, XLA, GPU memory ...) is accepted and logged as ignored. Startup failures
print "Failed to start server. Error: CODE: message" and exit 255, as Server::BuildAndStart's
errors do: `--batching_parameters_file` without `--enable_batching`, neither a model base path
nor a config file, a config file that does not parse (or is not UTF-8), or an initial model
that does not load.
`--model_config_file` wins over `--model_name` / `--model_base_path` (they are ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from serving import __version__, limits

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("serving")

VERSION = __version__
STARTUP_FAILED = 255  # TF Serving's main returns -1
_CPUS = os.cpu_count() or 1


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "t", "y"):
        return True
    if value in ("0", "false", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 (argparse's hook)
        print(self.format_usage(), end="")
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(STARTUP_FAILED)


# (name, type, default, help); type bool flags also take a bare `--flag`
FLAGS: list[tuple[str, type, object, str]] = [
    ("port", int, 8500, "TCP port for gRPC (0: none)"),
    ("grpc_socket_path", str, "", "also listen for gRPC on this Unix socket"),
    ("rest_api_port", int, 0, "port for the HTTP/REST API (0: no REST)"),
    ("rest_api_num_threads", int, 4 * _CPUS,
     "REST worker threads: requests running blocking work at once (a batched wait holds none)"),
    ("rest_api_timeout_in_ms", int, 30000, "timeout for REST calls"),
    ("rest_api_enable_cors_support", _bool, False, "CORS headers on REST answers"),
    ("enable_batching", _bool, False, "enable batching"),
    ("allow_version_labels_for_unavailable_models", _bool, False,
     "allow labels that point at versions not loaded yet"),
    ("batching_parameters_file", str, "", "text BatchingParameters (needs --enable_batching)"),
    ("enable_per_model_batching_parameters", _bool, False, "ignored"),
    ("model_config_file", str, "", "text ModelServerConfig (--model_name/base_path ignored)"),
    ("model_config_file_poll_wait_seconds", int, 0, "re-read the config file (0: never)"),
    ("model_name", str, "default", "model name (ignored with --model_config_file)"),
    ("model_base_path", str, "", "model base path (ignored with --model_config_file)"),
    ("num_load_threads", int, 0,
     "threads loading models after the initial ones (0: one at a time)"),
    ("num_unload_threads", int, 0, "threads unloading models (0: one at a time)"),
    ("num_initial_load_threads", int, 4 * _CPUS,
     "zoo: threads loading the initial models (TF Serving's ServerCore option; 0: one at a time)"),
    ("max_num_load_retries", int, 5, "retries of a failed load"),
    ("load_retry_interval_micros", int, 60 * 1000 * 1000, "wait between load retries"),
    ("file_system_poll_wait_seconds", int, 1, "poll for new versions (0: once)"),
    ("flush_filesystem_caches", _bool, True, "ignored"),
    ("tensorflow_session_parallelism", int, 0, "threads of a session (0: auto)"),
    ("tensorflow_session_config_file", str, "", "text ConfigProto for every session"),
    ("tensorflow_intra_op_parallelism", int, 0, "intra-op threads (0: auto)"),
    ("tensorflow_inter_op_parallelism", int, 0, "inter-op threads (0: auto)"),
    ("use_alts_credentials", _bool, False, "not supported"),
    ("ssl_config_file", str, "", "text SSLConfig: TLS on gRPC"),
    ("platform_config_file", str, "", "ignored"),
    ("per_process_gpu_memory_fraction", float, 0.0, "ignored"),
    ("saved_model_tags", str, "serve", "comma-separated tags of the MetaGraph to load"),
    ("grpc_channel_arguments", str, "", "k=v,k=v gRPC server arguments"),
    ("grpc_max_threads", int, 4 * _CPUS,
     "gRPC worker threads for blocking work (a Predict waiting for its batch holds none)"),
    ("enable_model_warmup", _bool, True, "replay assets.extra/tf_serving_warmup_requests"),
    ("num_request_iterations_for_warmup", int, 0, "times each warmup record runs (0: once)"),
    ("version", _bool, False, "print the version and exit"),
    ("monitoring_config_file", str, "", "text MonitoringConfig (Prometheus)"),
    ("remove_unused_fields_from_bundle_metagraph", _bool, True, "ignored"),
    ("prefer_tflite_model", _bool, False, "ignored"),
    ("num_tflite_pools", int, _CPUS, "ignored"),
    ("num_tflite_interpreters_per_pool", int, 1, "ignored"),
    ("enable_signature_method_name_check", _bool, False, "ignored"),
    ("xla_cpu_compilation_enabled", _bool, False, "ignored"),
    ("xla_gpu_compilation_enabled", _bool, False, "ignored"),
    ("enable_profiler", _bool, True, "ignored"),
    ("thread_pool_factory_config_file", str, "", "ignored"),
    ("mixed_precision", str, "", "ignored"),
    ("skip_initialize_tpu", _bool, False, "ignored"),
    ("enable_grpc_healthcheck_service", _bool, False, "the standard grpc.health.v1 service"),
    ("enable_web_ui", _bool, False, "zoo: the page to try the models at / on the REST port"),
    ("enable_serialization_as_tensor_content", _bool, False, "ignored"),
    # the zoo's own
    ("grpc_max_message_size", int, 0, "zoo: gRPC/REST message limit in bytes (0: none)"),
    ("rest_api_max_body_bytes", int, 16 << 20,
     "zoo: REST body limit in bytes, after decompression (--grpc_max_message_size wins)"),
    ("grpc_default_timeout_in_ms", int, 30000,
     "zoo: deadline of a gRPC request that sets none (<= 0: none, as TF Serving)"),
    *[(name, int, getattr(limits.RequestLimits, name), text)
      for name, text in limits.FLAG_HELP.items()],
    ("rest_api_ssl_config_file", str, "", "zoo: text SSLConfig: TLS on REST"),
    ("shutdown_grace_seconds", float, 30.0, "zoo: time in-flight requests get at shutdown"),
]  # fmt: skip
_IGNORED_IF_SET = {
    name for name, _t, _d, h in FLAGS if h.startswith("ignored") or h == "not supported"
}


def build_parser() -> argparse.ArgumentParser:
    """TF Serving's flags with its defaults (`--flag=value` and `--flag value` both work)."""
    p = _Parser(prog="zoo serve", description=__doc__.split("\n")[0], allow_abbrev=False)
    for name, kind, default, help_text in FLAGS:
        if kind is _bool:
            p.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default,
                           help=help_text)  # fmt: skip
        else:
            p.add_argument(f"--{name}", type=kind, default=default, help=help_text)
    return p


class StartupError(Exception):
    """A Server::BuildAndStart error: (status code name, message)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")


def _read(path: str) -> bytes:
    """The file's bytes (TF Serving's ReadFileToString: NOT_FOUND "path; reason")."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise StartupError("NOT_FOUND", f"{path}; {e.strerror}") from None


def decode_text(data: bytes) -> str:
    """`data` as UTF-8 text; ValueError "LINE:COLUMN : Invalid UTF-8 byte 0xNN" otherwise,
    in the protobuf parser's style (Python's text_format takes only UTF-8)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{line}:{column} : Invalid UTF-8 byte 0x{data[e.start]:02x}") from None


def parse_text_proto(path: str, message, data: bytes | None = None):
    """TF Serving's ParseProtoTextFile: the parser's complaint on stderr, INVALID_ARGUMENT.

    `data` is the file's content when the caller has read it already.
    """
    from google.protobuf import text_format

    try:
        return text_format.Parse(decode_text(_read(path) if data is None else data), message)
    except (text_format.ParseError, ValueError) as e:
        print(
            f"Error parsing text-format {message.DESCRIPTOR.full_name}: {e}",
            file=sys.stderr,
            flush=True,
        )
        raise StartupError("INVALID_ARGUMENT", f"Invalid protobuf file: '{path}'") from None


def reload_config_file(data: bytes, reload_config: Callable) -> str | None:
    """Parse the model config file's content and apply it; None when done, else the line
    TF Serving's poll logs ("Failed to read ModelServerConfig file: ..." or
    "PollFilesystemAndReloadConfig failed to ReloadConfig: ...")."""
    from serving import repository
    from serving.errors import ServingError

    try:
        config = repository.parse_model_server_config(decode_text(data))
    except (ValueError, ServingError) as e:
        return f"Failed to read ModelServerConfig file: {getattr(e, 'message', e)}"
    try:
        reload_config(config)
    except Exception as e:  # any failure leaves the old config serving
        return f"PollFilesystemAndReloadConfig failed to ReloadConfig: {getattr(e, 'message', e)}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the model server; returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.version:
        import tensorflow as tf

        print(f"TensorFlow ModelServer: {VERSION}\nTensorFlow Library: {tf.__version__}")
        return 0
    if unknown:  # main.cc: reported, and the server starts all the same
        print(f"unknown argument: {unknown[0]}\n{parser.format_usage()}", end="", flush=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s] %(message)s"
    )
    for name in sorted(_IGNORED_IF_SET):
        if getattr(args, name) != parser.get_default(name):
            log.warning("--%s is accepted for compatibility and has no effect here", name)
    try:
        return _serve(args)
    except StartupError as e:
        print(f"Failed to start server. Error: {e}", flush=True)
        return STARTUP_FAILED


def _options(args) -> dict:
    """Everything read from files before the server starts (StartupError when bad)."""
    from serving import batching, repository
    from serving.config_protos import MonitoringConfig, SSLConfig
    from serving.errors import ServingError

    if args.port == 0 and not args.grpc_socket_path:
        raise StartupError(
            "INVALID_ARGUMENT",
            "At least one of server_options.grpc_port or server_options.grpc_socket_path "
            "must be set.",
        )
    if not args.model_base_path and not args.model_config_file:
        raise StartupError(
            "INVALID_ARGUMENT",
            "Both server_options.model_base_path and server_options.model_config_file are empty!",
        )
    opts: dict = {"config_bytes": None}
    try:
        if args.model_config_file:  # server.cc: the config file wins
            from tensorflow_serving.config import model_server_config_pb2

            opts["config_bytes"] = _read(args.model_config_file)
            config = parse_text_proto(
                args.model_config_file,
                model_server_config_pb2.ModelServerConfig(),
                opts["config_bytes"],
            )
            repository.validate_config(config)
        else:
            config = repository.single_model_config(args.model_name, args.model_base_path)
        opts["config"] = config
        opts["batching"] = None
        if args.enable_batching:
            opts["batching"] = (
                batching.BatchingOptions.from_proto(
                    parse_text_proto(args.batching_parameters_file, batching.BatchingParameters())
                )
                if args.batching_parameters_file
                else batching.BatchingOptions()
            )
        elif args.batching_parameters_file:
            raise StartupError(
                "INVALID_ARGUMENT",
                "server_options.batching_parameters_file is set without setting "
                "server_options.enable_batching to true.",
            )
    except ServingError as e:
        raise StartupError(e.code.name, e.message) from None
    opts["metrics_path"] = None
    if args.monitoring_config_file:
        mon = parse_text_proto(args.monitoring_config_file, MonitoringConfig())
        if mon.prometheus_config.enable:
            opts["metrics_path"] = mon.prometheus_config.path or "/monitoring/prometheus/metrics"
    opts["grpc_ssl"] = (
        parse_text_proto(args.ssl_config_file, SSLConfig()) if args.ssl_config_file else None
    )
    opts["rest_ssl"] = (
        parse_text_proto(args.rest_api_ssl_config_file, SSLConfig())
        if args.rest_api_ssl_config_file
        else None
    )
    opts["session_config"] = _session_config(args)
    return opts


def _session_config(args):
    """The ConfigProto every session gets (server.cc: config file, then parallelism flags)."""
    import tensorflow as tf

    intra, inter, both = (
        args.tensorflow_intra_op_parallelism,
        args.tensorflow_inter_op_parallelism,
        args.tensorflow_session_parallelism,
    )
    if intra > 0 and inter > 0 and both > 0:
        raise StartupError(
            "INVALID_ARGUMENT",
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. "
            "You cannot configure all.",
        )
    config = tf.compat.v1.ConfigProto()
    if args.tensorflow_session_config_file:
        parse_text_proto(args.tensorflow_session_config_file, config)
    if intra > 0 or inter > 0:
        config.intra_op_parallelism_threads = intra
        config.inter_op_parallelism_threads = inter
    elif both > 0:
        config.intra_op_parallelism_threads = config.inter_op_parallelism_threads = both
    return config if config.ByteSize() else None


def _serve(args) -> int:
    # the flags' own values first, then the files they name, then TensorFlow's slow import
    # (a misconfigured server refuses in a fraction of a second, not after ~3 CPU-s)
    try:
        limits.configure(limits.RequestLimits(**{n: getattr(args, n) for n in limits.FLAG_HELP}))
    except ValueError as e:
        raise StartupError("INVALID_ARGUMENT", str(e)) from None
    if args.rest_api_max_body_bytes <= 0 or args.rest_api_num_threads <= 0:
        raise StartupError(
            "INVALID_ARGUMENT", "--rest_api_max_body_bytes and --rest_api_num_threads must be > 0"
        )
    opts = _options(args)
    import tensorflow as tf  # noqa: F401

    from serving import aio, deadline, grpc_server, rest_server, v2, warmup, web
    from serving.errors import ServingError
    from serving.manager import Manager
    from serving.metrics import LOAD_ATTEMPT_COUNT
    from serving.predict import PredictionCore
    from serving.request_log import RequestLogger
    from serving.servable import Servable

    deadline.set_default_client_timeout(args.grpc_default_timeout_in_ms)
    # TensorFlow's import leaves ~300k long-lived objects; freezing them keeps every later
    # collection (the one after each unload, and the periodic ones) a few ms instead of ~1 s
    # of GIL pause. Models are loaded after this, so their objects stay collectable.
    gc.collect()
    gc.freeze()
    tags = tuple(t for t in args.saved_model_tags.split(",") if t)

    def load(name: str, version: int, path: str) -> Servable:
        try:
            servable = Servable(name, version, path, opts["session_config"], tags)
        except Exception:
            LOAD_ATTEMPT_COUNT.inc(path, "fail")
            raise
        LOAD_ATTEMPT_COUNT.inc(path, "success")
        servable.batching = opts["batching"]
        if args.enable_model_warmup:
            try:
                records = warmup.replay(servable, args.num_request_iterations_for_warmup)
            except Exception as e:
                servable.close()
                raise RuntimeError(f"warmup failed: {getattr(e, 'message', e)}") from e
            if records:
                log.info(
                    "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
                    path,
                    records,
                )
        return servable

    manager = Manager(
        load,
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_seconds=args.load_retry_interval_micros / 1e6,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        num_load_threads=args.num_load_threads,
        num_unload_threads=args.num_unload_threads,
        num_initial_load_threads=args.num_initial_load_threads,
    )
    request_logger = RequestLogger(tags)
    config_lock = threading.Lock()

    def reload_config(new_config) -> None:
        """ServerCore::ReloadConfig: models first, then the request loggers."""
        with config_lock:
            manager.set_config(new_config)
            request_logger.update(new_config)

    try:
        reload_config(opts["config"])
    except ServingError as e:
        manager.stop()
        raise StartupError(e.code.name, e.message) from None

    # From here on the ports may open: a SIGTERM that arrives before the wait loop below
    # must still end in the graceful shutdown, not the default action's exit by -15.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    core = PredictionCore(manager, request_logger)
    v2_api = v2.OpenInferenceApi(core)
    serving_loop = aio.ServingLoop()
    try:
        grpc_srv, health = serving_loop.run(
            grpc_server.build_server(
                core,
                reload_config,
                args.port,
                args.grpc_max_message_size,
                max_workers=max(1, args.grpc_max_threads),
                socket_path=args.grpc_socket_path,
                channel_arguments=args.grpc_channel_arguments,
                ssl_config=opts["grpc_ssl"],
                health_check=args.enable_grpc_healthcheck_service,
                extra_services=(
                    lambda front: v2.GrpcInferenceService(
                        v2_api, front.guard, front.blocking
                    ).handler(),
                ),
            )
        )
        serving_loop.run(grpc_srv.start())
    except (OSError, RuntimeError) as e:
        manager.stop()
        raise StartupError(
            "INVALID_ARGUMENT", f"Failed to BuildAndStart gRPC server: {e}"
        ) from None
    if args.port:
        print(f"Running gRPC ModelServer at 0.0.0.0:{args.port} ...", flush=True)
    if args.grpc_socket_path:
        print(f"Running gRPC ModelServer at UNIX socket {args.grpc_socket_path} ...", flush=True)
    http_srv = None
    if args.rest_api_port and args.rest_api_port == args.port:
        log.error(
            "server_options.http_port cannot be same as grpc_port. Please use a different "
            "port for HTTP/REST API. Skipped exporting HTTP/REST API."
        )
    elif args.rest_api_port:
        max_body = (
            args.grpc_max_message_size
            if args.grpc_max_message_size > 0
            else args.rest_api_max_body_bytes
        )
        app = rest_server.RestApp(
            core,
            opts["metrics_path"],
            max_body,
            args.rest_api_timeout_in_ms,
            cors=args.rest_api_enable_cors_support,
            num_threads=args.rest_api_num_threads,
            web_ui=web.WebUi() if args.enable_web_ui else None,
        )
        try:
            http_srv = serving_loop.run(
                rest_server.start_server(app, args.rest_api_port, ssl_config=opts["rest_ssl"])
            )
        except OSError as e:
            log.error("Failed to start HTTP Server at localhost:%d: %s", args.rest_api_port, e)
        else:
            print(f"Exporting HTTP/REST API at:localhost:{args.rest_api_port} ...", flush=True)

    manager.start_polling(args.file_system_poll_wait_seconds)
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:

        def poll_config() -> None:
            """Server::PollFilesystemAndReloadConfig: a changed file is reloaded, and a
            failed one again on each poll (TF Serving reloads on every poll); the old config
            keeps serving, and a failure is logged once while its message stays the same."""
            last, failure = opts["config_bytes"], None
            while not stop.wait(args.model_config_file_poll_wait_seconds):
                try:
                    data = _read(args.model_config_file)
                except StartupError as e:
                    outcome = f"Failed to read ModelServerConfig file: {e}"
                else:
                    if data == last and failure is None:
                        continue
                    last = data
                    outcome = reload_config_file(data, reload_config)
                if outcome is not None and outcome != failure:
                    log.error("%s", outcome)
                failure = outcome

        threading.Thread(target=poll_config, name="config-poll", daemon=True).start()

    while not stop.wait(0.5):
        pass

    log.info("Shutting down: finishing in-flight requests")
    serving_loop.run(_shutdown(grpc_srv, health, http_srv, args.shutdown_grace_seconds))
    manager.stop()
    request_logger.close()
    serving_loop.close()
    return 0


async def _shutdown(grpc_srv, health, http_srv, grace: float) -> None:
    """Stop accepting on both front ends at once; in-flight requests get `grace` seconds."""
    if health is not None:
        await health.enter_graceful_shutdown()
    jobs = [grpc_srv.stop(grace)]
    if http_srv is not None:
        jobs.append(http_srv.shutdown(grace))
    await asyncio.gather(*jobs)
