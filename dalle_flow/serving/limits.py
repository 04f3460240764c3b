"""Request limits: how much one request may ask of the Flow, written once here and checked before any work.

Each limit has a default and an environment variable that changes it (read once per process, when an executor or
the gateway starts; a bad value stops the start with the variable's name). Every message names the field, the limit
and the variable, e.g. ``docs: at most 16 Documents per request (DALLE_FLOW_MAX_DOCS), got 100``.

Work that runs in batches (DALL·E Mega and GLID-3 XL images, upscaled and segmented images) also stops, checked
between batches, when the request's deadline has passed (no request holds an executor for longer than
`request_timeout_s`; the gateway gives up on an executor shortly after it) or when its client has disconnected
(serving/cancellation.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache

from dalle_flow.serving.cancellation import CANCELLED, request_key


@dataclass(frozen=True)
class Limit:
    field: str  # the attribute of `Limits`
    variable: str  # the environment variable that changes it
    default: int
    low: int
    high: int
    meaning: str  # for the README table and error messages


LIMITS = (
    Limit("max_docs", "DALLE_FLOW_MAX_DOCS", 16, 1, 10_000, "Documents per request"),
    Limit("max_images", "DALLE_FLOW_MAX_IMAGES", 64, 1, 100_000,
          "images one executor makes or processes for one request (Documents × num_images; images to upscale, "
          "segment, encode or rank)"),
    Limit("max_diffusion_work", "DALLE_FLOW_MAX_DIFFUSION_WORK", 3600, 1, 10_000_000,
          "GLID-3 XL work per request: the sum over its Documents of num_images × steps"),
    Limit("max_prompt_chars", "DALLE_FLOW_MAX_PROMPT_CHARS", 2000, 1, 1_000_000,
          "characters of one prompt (checked before it is normalised or tokenised)"),
    Limit("request_timeout_s", "DALLE_FLOW_REQUEST_TIMEOUT_S", 600, 1, 86_400,
          "seconds an executor may work on one request; checked between batches, then the request fails"),
    Limit("max_request_mib", "DALLE_FLOW_MAX_REQUEST_MIB", 64, 1, 2047,
          "MiB of one request message at the gateway (gRPC and WebSocket)"),
    Limit("max_history_mib", "DALLE_FLOW_MAX_HISTORY_MIB", 32, 1, 4096,
          "MiB of images in one /history response (it returns fewer rows rather than more bytes)"),
)


@dataclass(frozen=True)
class Limits:
    max_docs: int
    max_images: int
    max_diffusion_work: int
    max_prompt_chars: int
    request_timeout_s: int
    max_request_mib: int
    max_history_mib: int

    @classmethod
    def from_env(cls, environ=None) -> "Limits":
        environ = os.environ if environ is None else environ
        return cls(**{limit.field: _read(limit, environ) for limit in LIMITS})

    def check_docs(self, docs, endpoint: str) -> None:
        if len(docs) > self.max_docs:
            raise ValueError(f"docs: at most {self.max_docs} Documents per request on {endpoint} "
                             f"({_variable('max_docs')}), got {len(docs)}")

    def check_images(self, count: int, how: str) -> None:
        """`how` says where the count comes from, e.g. '3 Documents × num_images 32'."""
        if count > self.max_images:
            raise ValueError(f"num_images: at most {self.max_images} images per request ({_variable('max_images')}), "
                             f"got {how} = {count}")

    def check_diffusion_work(self, work: int, how: str) -> None:
        if work > self.max_diffusion_work:
            raise ValueError(f"steps: GLID-3 XL work is at most {self.max_diffusion_work} image-steps per request "
                             f"({_variable('max_diffusion_work')}), got {how} = {work}")

    def check_prompt(self, text: str, field: str) -> None:
        if isinstance(text, str) and len(text) > self.max_prompt_chars:
            raise ValueError(f"{field}: a prompt is at most {self.max_prompt_chars} characters "
                             f"({_variable('max_prompt_chars')}), got {len(text)}")

    def deadline(self, parameters: dict | None = None) -> "Deadline":
        """The deadline of a request starting now; with its parameters, it also ends when the request is cancelled."""
        return Deadline(time.monotonic() + self.request_timeout_s, self.request_timeout_s, request_key(parameters))


class RequestCancelled(RuntimeError):
    pass


class Deadline:
    """When a request must stop: its time is up, or its client has gone. `check` is called between batches (and
    before the first) and raises then."""

    def __init__(self, at: float, budget_s: float, key: str | None = None):
        self.at = at
        self.budget_s = budget_s
        self.key = key

    def check(self, done: int | None = None, total: int | None = None) -> None:
        progress = f" after {done} of {total} images" if done is not None else ""
        if self.key is not None and self.key in CANCELLED:
            raise RequestCancelled(f"request: cancelled{progress}: its client disconnected")
        if time.monotonic() > self.at:
            raise TimeoutError(f"request_timeout_s: the request ran past {self.budget_s:g} s "
                               f"({_variable('request_timeout_s')}) and was stopped{progress}")


def _variable(field: str) -> str:
    return next(limit.variable for limit in LIMITS if limit.field == field)


def _read(limit: Limit, environ) -> int:
    text = environ.get(limit.variable, "").strip()
    if not text:
        return limit.default
    if not text.isdigit() or not limit.low <= int(text) <= limit.high:
        raise ValueError(f"{limit.variable}: must be an integer between {limit.low} and {limit.high} "
                         f"({limit.meaning}), got {text!r}")
    return int(text)


@lru_cache(maxsize=1)
def request_limits() -> Limits:
    """The limits of this process, read from the environment once."""
    return Limits.from_env()


def release_memory() -> None:
    """Give memory a large request took back to the system: Python's cycles, the CUDA cache, glibc's free heap pages
    (without malloc_trim, glibc keeps freed arenas and RSS stays at its peak)."""
    import ctypes
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass
