"""TF Serving's command-line flags."""

from __future__ import annotations

import pytest

from serving.main import build_parser, main


def test_flags_defaults_and_both_syntaxes():
    args = build_parser().parse_args([])
    assert (args.port, args.rest_api_port, args.model_name) == (8500, 8501, "default")
    assert (args.file_system_poll_wait_seconds, args.rest_api_timeout_in_ms) == (1, 30000)
    assert args.enable_model_warmup is True and args.enable_batching is False
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


def test_bad_flags_are_reported(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--enable_batching=maybe"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--no_such_flag=1"])
    assert main([]) == 2
    assert "exactly one of --model_base_path or --model_config_file" in capsys.readouterr().err


def test_bad_config_file_is_reported(tmp_path, capsys):
    cfg = tmp_path / "bad.config"
    cfg.write_text("model_config_list { config { name: 'a' } ")
    assert main([f"--model_config_file={cfg}"]) == 2
    assert "Invalid model config file" in capsys.readouterr().err
