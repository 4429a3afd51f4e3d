"""Command line: TF Serving's `tensorflow_model_server` flags, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("serving")


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "t", "y"):
        return True
    if value in ("0", "false", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """TF Serving's flags with its defaults (`--flag=value` and `--flag value` both work)."""
    p = argparse.ArgumentParser(prog="zoo serve", description=__doc__, allow_abbrev=False)
    p.add_argument("--port", type=int, default=8500, help="gRPC port")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0 = off)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000)
    p.add_argument("--model_name", default="default")
    p.add_argument("--model_base_path", default="")
    p.add_argument("--model_config_file", default="")
    p.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0)
    p.add_argument("--file_system_poll_wait_seconds", type=int, default=1)
    p.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--batching_parameters_file", default="")
    p.add_argument("--monitoring_config_file", default="")
    p.add_argument("--grpc_max_message_size", type=int, default=0, help="bytes (0 = unlimited)")
    p.add_argument("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    p.add_argument("--rest_api_num_threads", type=int, default=0, help="accepted, unused")
    p.add_argument("--shutdown_grace_seconds", type=float, default=30.0)
    return p


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise SystemExit(f"error: cannot read {what} {path}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the model server; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s] %(message)s"
    )

    import tensorflow as tf  # noqa: F401  (slow import, after argument errors)

    from serving import batching, grpc_server, repository, rest_server, warmup
    from serving.config_protos import MonitoringConfig
    from serving.errors import ServingError
    from serving.manager import Manager
    from serving.metrics import LOAD_ATTEMPT_COUNT
    from serving.predict import PredictionCore
    from serving.servable import Servable

    # TensorFlow's import leaves ~300k long-lived objects; freezing them keeps every later
    # collection (the one after each unload, and the periodic ones) a few ms instead of ~1 s
    # of GIL pause. Models are loaded after this, so their objects stay collectable.
    gc.collect()
    gc.freeze()

    if bool(args.model_config_file) == bool(args.model_base_path):
        print(
            "error: give exactly one of --model_base_path or --model_config_file", file=sys.stderr
        )
        return 2
    try:
        if args.model_config_file:
            config_text = _read(args.model_config_file, "model config file")
            config = repository.parse_model_server_config(config_text)
        else:
            config_text = None
            config = repository.single_model_config(args.model_name, args.model_base_path)
        batching_options = None
        if args.enable_batching:
            batching_options = (
                batching.BatchingOptions.from_text(
                    _read(args.batching_parameters_file, "batching file")
                )
                if args.batching_parameters_file
                else batching.BatchingOptions()
            )
        metrics_path = None
        if args.monitoring_config_file:
            from google.protobuf import text_format

            mon = text_format.Parse(
                _read(args.monitoring_config_file, "monitoring file"), MonitoringConfig()
            )
            if mon.prometheus_config.enable:
                metrics_path = mon.prometheus_config.path or "/monitoring/prometheus/metrics"
    except ServingError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2

    session_config = None
    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        session_config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=args.tensorflow_intra_op_parallelism,
            inter_op_parallelism_threads=args.tensorflow_inter_op_parallelism,
        )

    def load(name: str, version: int, path: str) -> Servable:
        try:
            servable = Servable(name, version, path, session_config)
        except Exception:
            LOAD_ATTEMPT_COUNT.inc(path, "fail")
            raise
        LOAD_ATTEMPT_COUNT.inc(path, "success")
        servable.batching = batching_options
        if args.enable_model_warmup:
            try:
                records = warmup.replay(servable)
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

    manager = Manager(load)
    try:
        manager.set_config(config)
    except ServingError as e:
        print(f"error: {e.message}", file=sys.stderr)
        manager.stop()
        return 1

    core = PredictionCore(manager)
    config_lock = threading.Lock()

    def reload_config(new_config) -> None:
        with config_lock:
            manager.set_config(new_config)

    grpc_srv, health = grpc_server.build_server(
        core, reload_config, args.port, args.grpc_max_message_size
    )
    grpc_srv.start()
    print(f"Running gRPC ModelServer at 0.0.0.0:{args.port} ...", flush=True)
    http_srv = None
    app = None
    if args.rest_api_port > 0:
        max_body = args.grpc_max_message_size if args.grpc_max_message_size > 0 else 1 << 30
        app = rest_server.RestApp(core, metrics_path, max_body, args.rest_api_timeout_in_ms)
        try:
            http_srv = rest_server.build_server(app, args.rest_api_port)
        except OSError as e:
            print(f"error: cannot serve REST on port {args.rest_api_port}: {e}", file=sys.stderr)
            grpc_srv.stop(0)
            manager.stop()
            return 1
        threading.Thread(target=http_srv.serve_forever, name="rest", daemon=True).start()
        print(f"Exporting HTTP/REST API at:localhost:{args.rest_api_port} ...", flush=True)

    manager.start_polling(args.file_system_poll_wait_seconds)
    stop = threading.Event()
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:

        def poll_config() -> None:
            last = config_text
            while not stop.wait(args.model_config_file_poll_wait_seconds):
                try:
                    text = Path(args.model_config_file).read_text()
                    if text != last:
                        reload_config(repository.parse_model_server_config(text))
                        last = text
                except Exception as e:  # keep serving the old config
                    log.error("model config reload failed: %s", getattr(e, "message", e))

        threading.Thread(target=poll_config, name="config-poll", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass

    log.info("Shutting down: finishing in-flight requests")
    health.enter_graceful_shutdown()
    if http_srv is not None:
        http_srv.shutdown()  # stop accepting; in-flight handlers keep running
        app.in_flight.wait_idle(args.shutdown_grace_seconds)
    grpc_srv.stop(grace=args.shutdown_grace_seconds).wait()
    manager.stop()
    if http_srv is not None:
        http_srv.server_close()
    return 0
