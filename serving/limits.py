"""The request limits: what one request may cost the server, checked before it is paid.

One frozen set of limits for the whole process, set once from the command line
(`configure`) and read by every decoder and by the cost check (`current()`). Each limit is a
`zoo serve` flag of the same name; a request over one gets INVALID_ARGUMENT (HTTP 400) with
a message that names the flag, so a client knows what to change.

TF Serving has no such flags (its C++ decoders allocate what a request declares); the
defaults are sized so that the largest request they admit costs each of the six zoo models
a few hundred MB at most on a CPU server.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from serving.errors import invalid


@dataclass(frozen=True)
class RequestLimits:
    """Upper bounds on one request, each a `zoo serve` flag."""

    #: elements of one input tensor, as declared by its shape (every protocol)
    max_request_elements: int = 1 << 22
    #: nesting depth of a JSON request body
    max_json_depth: int = 64
    #: rows x longest element, in bytes, of a text (DT_STRING, not image) input: the padded
    #: batch a text model tokenizes
    max_padded_text_bytes: int = 1 << 18
    #: pixels of one encoded image, read from its header before it is decoded
    max_image_pixels: int = 1 << 25
    #: pixels of all the images of one request
    max_request_pixels: int = 1 << 27
    #: tokens one request may ask a model to generate (rows x beams x new tokens)
    max_generated_tokens: int = 1 << 16

    def exceeded(self, flag: str, what: str, value: int):
        """The INVALID_ARGUMENT error for `value` over the limit named `flag`."""
        return invalid(
            f"{what} is {value}, over the server's limit of {getattr(self, flag)} (--{flag})"
        )


_current = RequestLimits()


def current() -> RequestLimits:
    """The limits in force."""
    return _current


def configure(limits: RequestLimits) -> None:
    """Set the process's limits (at startup, from the flags)."""
    global _current
    for f in fields(limits):
        if getattr(limits, f.name) <= 0:
            raise ValueError(f"--{f.name} must be positive, got {getattr(limits, f.name)}")
    _current = limits


FLAG_HELP = {
    "max_request_elements": "zoo: elements of one input tensor (every protocol)",
    "max_json_depth": "zoo: nesting depth of a JSON request body",
    "max_padded_text_bytes": "zoo: rows x longest string (bytes) of a text input",
    "max_image_pixels": "zoo: pixels of one encoded image (from its header)",
    "max_request_pixels": "zoo: pixels of all images of one request",
    "max_generated_tokens": "zoo: rows x beams x new tokens a request may ask for",
}
