"""TF Serving's command-line flags: names, defaults, syntax, and what a bad command line does.

Sources (tensorflow/serving at 9d981c5): model_servers/main.cc (flag list, lines 87-314;
parsing and exit, 316-335), model_servers/server.h (defaults, lines 43-107),
model_servers/server.cc Server::BuildAndStart (startup checks, lines 182-243), and
tsl/util/command_line_flags.cc Flags::Parse (unknown flags are kept, bad values fail).
"""

from __future__ import annotations

import pytest

from serving.main import STARTUP_FAILED, build_parser, main

# main.cc's flag list, every one of which `zoo serve` must accept
TF_SERVING_FLAGS = """port grpc_socket_path rest_api_port rest_api_num_threads rest_api_timeout_in_ms
rest_api_enable_cors_support enable_batching allow_version_labels_for_unavailable_models
batching_parameters_file enable_per_model_batching_parameters model_config_file
model_config_file_poll_wait_seconds model_name model_base_path num_load_threads
num_unload_threads max_num_load_retries load_retry_interval_micros
file_system_poll_wait_seconds flush_filesystem_caches tensorflow_session_parallelism
tensorflow_session_config_file tensorflow_intra_op_parallelism tensorflow_inter_op_parallelism
use_alts_credentials ssl_config_file platform_config_file per_process_gpu_memory_fraction
saved_model_tags grpc_channel_arguments grpc_max_threads enable_model_warmup
num_request_iterations_for_warmup version monitoring_config_file
remove_unused_fields_from_bundle_metagraph prefer_tflite_model num_tflite_pools
num_tflite_interpreters_per_pool enable_signature_method_name_check
xla_cpu_compilation_enabled xla_gpu_compilation_enabled enable_profiler
thread_pool_factory_config_file mixed_precision skip_initialize_tpu
enable_grpc_healthcheck_service enable_serialization_as_tensor_content""".split()


def test_every_tf_serving_flag_exists_with_its_default():
    """main.cc:87-314 lists the flags; server.h:43-107 gives their defaults (REST off:
    `http_port = 0`; `max_num_load_retries = 5`; a one-minute retry interval; health off)."""
    args = build_parser().parse_args([])
    for flag in TF_SERVING_FLAGS:
        assert hasattr(args, flag), flag
    assert (args.port, args.rest_api_port, args.model_name) == (8500, 0, "default")
    assert (args.file_system_poll_wait_seconds, args.rest_api_timeout_in_ms) == (1, 30000)
    assert (args.max_num_load_retries, args.load_retry_interval_micros) == (5, 60_000_000)
    assert args.enable_model_warmup is True and args.enable_batching is False
    assert args.enable_grpc_healthcheck_service is False
    assert args.rest_api_enable_cors_support is False
    assert args.saved_model_tags == "serve" and args.model_config_file_poll_wait_seconds == 0


def test_both_flag_syntaxes():
    """TF's parser takes `--flag=value` and a bare `--bool_flag` (command_line_flags.cc
    ParseBoolFlag); `--flag value` is accepted too."""
    args = build_parser().parse_args(
        ["--port", "9000", "--rest_api_port=0", "--model_name=m", "--model_base_path", "/x",
         "--enable_batching", "--enable_model_warmup=false", "--grpc_max_message_size=10"]
    )  # fmt: skip
    assert (args.port, args.rest_api_port, args.model_name, args.model_base_path) == (
        9000,
        0,
        "m",
        "/x",
    )
    assert args.enable_batching is True and args.enable_model_warmup is False
    assert args.grpc_max_message_size == 10
    assert build_parser().parse_args(["--enable_batching=true"]).enable_batching is True


def test_bad_value_of_a_known_flag_exits_255(capsys):
    """Flags::Parse fails on a value it cannot read; main.cc:317-320 prints the usage and
    returns -1 (exit status 255)."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--enable_batching=maybe"])
    assert exit_.value.code == STARTUP_FAILED
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (["--model_base_path=/m", "--batching_parameters_file=/b.txt"],
         "batching_parameters_file is set without setting server_options.enable_batching"),
        (["--model_base_path=/m", "--port=0"],
         "At least one of server_options.grpc_port or server_options.grpc_socket_path"),
    ],
)  # fmt: skip
def test_startup_errors_fail_the_start(argv, message, capsys):
    """Server::BuildAndStart's checks (server.cc:183-202, 239-243) end in main.cc:343-345:
    "Failed to start server. Error: ..." and status -1."""
    assert main(argv) == STARTUP_FAILED
    out = capsys.readouterr().out
    assert "Failed to start server. Error: INVALID_ARGUMENT: " in out
    assert message in out


def test_config_file_that_does_not_parse(tmp_path, capsys):
    """tensorflow_model_server_test.py testBadModelConfig expects "Error parsing text-format
    tensorflow.serving.ModelServerConfig" on stderr; ParseProtoTextFile answers
    INVALID_ARGUMENT "Invalid protobuf file"."""
    cfg = tmp_path / "bad.config"
    cfg.write_text("model_config_list { config { name: 'a' } ")
    assert main([f"--model_config_file={cfg}"]) == STARTUP_FAILED
    captured = capsys.readouterr()
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in captured.err
    assert f"Invalid protobuf file: '{cfg}'" in captured.out


def test_version_flag(capsys):
    """main.cc:327-331: --version prints the versions and exits 0."""
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert "TensorFlow ModelServer: " in out and "TensorFlow Library: " in out
