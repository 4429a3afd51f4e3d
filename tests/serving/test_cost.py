"""serving.cost: the declaration's format, image headers read without decoding, and each
bound computed as the signature will pay it."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image

from serving import cost, limits
from serving.errors import ServingError
from tests.harness import png_of_side


def encoded(fmt: str, size=(40, 30), frames: int = 1) -> bytes:
    out = io.BytesIO()
    images = [Image.new("RGB", size, (i * 40, 0, 0)) for i in range(frames)]
    if frames > 1:
        images[0].save(out, fmt, save_all=True, append_images=images[1:])
    else:
        images[0].save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    "fmt, frames, pixels",
    [("JPEG", 1, 1200), ("PNG", 1, 1200), ("BMP", 1, 1200), ("WEBP", 1, 1200), ("GIF", 3, 3600)],
)
def test_image_pixels_from_headers(fmt, frames, pixels):
    assert cost.image_pixels(encoded(fmt, frames=frames), strict=True) == pixels


def test_a_header_is_read_at_its_real_size_without_decoding():
    bomb = png_of_side(20000)  # 400 million pixels in a few hundred KB
    assert len(bomb) < 1_000_000
    assert cost.image_pixels(bomb, strict=True) == 400_000_000


def test_text_is_no_image_and_corrupt_images_are_refused_only_where_declared():
    assert cost.image_pixels(b"BMW is a car maker", strict=False) is None
    assert cost.image_pixels(b"Good morning", strict=False) is None
    truncated = encoded("PNG")[:20]
    assert cost.image_pixels(truncated, strict=False) is None
    with pytest.raises(ServingError) as err:
        cost.image_pixels(truncated, strict=True)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_declarations_parse_and_malformed_ones_are_refused(tmp_path):
    costs = cost.parse_costs(
        {
            "translate": {
                "inputs": {
                    "source": {"kind": "text", "weight": 16},
                    "beam_size": {"kind": "beams", "cap": 16},
                },
                "new_tokens": 80,
                "beams": 4,
            }
        }
    )
    assert costs["translate"].inputs["source"] == cost.InputCost("text", 16)
    assert costs["translate"].generates and costs["translate"].beams == 4
    for bad in (
        [],
        {"s": []},
        {"s": {"inputs": {"x": {"kind": "video"}}}},
        {"s": {"inputs": {"x": {"kind": "text", "weight": 0}}}},
        {"s": {"inputs": {"x": {"kind": "text", "weight": True}}}},
        {"s": {"inputs": {}, "new_tokens": -1}},
    ):
        with pytest.raises(ValueError):
            cost.parse_costs(bad)
    assert cost.read_costs(tmp_path) == {}
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / cost.COSTS_PATH).write_bytes(b"\xff{not json")
    with pytest.raises(ValueError, match="request_costs.json"):
        cost.read_costs(tmp_path)
    cost.write_costs(tmp_path, {"s": {"inputs": {"x": {"kind": "text"}}}})
    assert json.loads((tmp_path / cost.COSTS_PATH).read_text())["s"]["inputs"]["x"]["kind"]


def refused(inputs, declared, flag: str) -> str:
    with pytest.raises(ServingError) as err:
        cost.check(inputs, declared)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"(--{flag})" in err.value.message
    return err.value.message


def test_padded_text_counts_rows_times_the_longest_row():
    declared = cost.parse_costs({"s": {"inputs": {"x": {"kind": "text", "weight": 8}}}})["s"]
    limit = limits.current().max_padded_text_bytes
    rows = np.array([b"a" * 100] * (limit // 800), dtype=object)  # exactly at the limit
    cost.check({"x": rows}, declared)
    rows = np.array([b"a" * 101] + [b"a"] * (limit // 800 - 1), dtype=object)
    message = refused({"x": rows}, declared, "max_padded_text_bytes")
    assert str(len(rows) * 101 * 8) in message and "weight 8" in message


def test_generation_counts_rows_beams_and_new_tokens_with_defaults_and_caps():
    declared = cost.parse_costs(
        {
            "s": {
                "inputs": {
                    "x": {"kind": "text"},
                    "n": {"kind": "new_tokens", "cap": 100},
                    "beam": {"kind": "beams", "cap": 4},
                },
                "new_tokens": 50,
                "beams": 2,
            }
        }
    )["s"]
    rows = np.array([b"hi"] * 10, dtype=object)
    # asked for far more than the caps: the signature clamps to 100 tokens x 4 beams
    cost.check({"x": rows, "n": np.int32(10**9), "beam": np.int32(99)}, declared)
    # <= 0 means the defaults: 10 rows x 2 beams x 50 tokens
    cost.check({"x": rows, "n": np.int32(0), "beam": np.int32(0)}, declared)
    big = np.array([b"hi"] * 200, dtype=object)  # 200 x 4 x 100 = 80,000 > 65,536
    message = refused(
        {"x": big, "n": np.int32(100), "beam": np.int32(4)}, declared, "max_generated_tokens"
    )
    assert "80000" in message


def test_images_count_at_least_their_working_cost_and_undeclared_inputs_by_header():
    declared = cost.parse_costs({"s": {"inputs": {"im": {"kind": "image", "weight": 65536}}}})["s"]
    small = encoded("JPEG", (8, 8))
    allowed = limits.current().max_request_pixels // 65536
    cost.check({"im": np.array([small] * allowed, dtype=object)}, declared)
    refused({"im": np.array([small] * (allowed + 1), dtype=object)}, declared, "max_request_pixels")
    bomb = np.array([png_of_side(6000)], dtype=object)
    message = refused({"anything": bomb}, None, "max_image_pixels")  # no declaration needed
    assert "36000000" in message
