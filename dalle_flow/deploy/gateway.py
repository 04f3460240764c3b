"""The Flow's gateway: Jina's own (gRPC, HTTP and WebSocket on one process), with what it shows clients narrowed.

Jina 3.34's gateway answers `/status` (and gRPC `_status`) with its versions and environment, passes every executor
error on with a Python traceback full of absolute paths, names executor addresses (127.0.0.1:PORT) in connection
errors, has no request size limit on HTTP, and with `cors` enabled it answers any origin with credentials allowed.
`HardenedGateway` keeps Jina's servers and changes only that:

- responses: tracebacks are dropped and internal addresses replaced by `<executor>`; the error's type and message
  (which name the field and the limit) stay;
- `/status` and gRPC `_status` say nothing about versions or the environment;
- HTTP bodies and WebSocket messages above the request limit (`DALLE_FLOW_MAX_REQUEST_MIB`) are refused (HTTP 413
  before the body is read when it declares its length; WebSocket close code 1009); gRPC has the same limit as
  `grpc.max_receive_message_length` (see flow_config);
- CORS: any origin may call, but never with credentials (`Access-Control-Allow-Origin: *`, no
  `Access-Control-Allow-Credentials`), so a page cannot act with a visitor's cookies.
"""
from __future__ import annotations

import re

from jina.proto import jina_pb2
from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.request_handling import GatewayRequestHandler

from dalle_flow.serving.limits import request_limits

INTERNAL_ADDRESS = re.compile(r"(?:ipv4:|ipv6:)?(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost):\d{1,5}")
HIDDEN_ADDRESS = "<executor>"


def scrub_text(text: str) -> str:
    return INTERNAL_ADDRESS.sub(HIDDEN_ADDRESS, text)


def scrub_response(response):
    """Drop the traceback and internal addresses from a response's error status (in place); others pass as they are."""
    status = response.header.status
    if status.code == jina_pb2.StatusProto.ERROR:
        del status.exception.stacks[:]
        status.description = scrub_text(status.description)
        args = [scrub_text(arg) for arg in status.exception.args]
        del status.exception.args[:]
        status.exception.args.extend(args)
    return response


class HardenedRequestHandler(GatewayRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # every protocol's requests go through this one streamer: scrub its responses once, here
        inner = self.streamer._streamer
        stream, process_single_data = inner.stream, inner.process_single_data

        async def scrubbed_stream(*a, **kw):
            async for response in stream(*a, **kw):
                yield scrub_response(response)

        async def scrubbed_single(*a, **kw):
            return scrub_response(await process_single_data(*a, **kw))

        inner.stream, inner.process_single_data = scrubbed_stream, scrubbed_single

    async def _status(self, empty, context) -> jina_pb2.JinaInfoProto:
        return jina_pb2.JinaInfoProto()  # no versions, no environment

    def _http_fastapi_default_app(self, *args, **kwargs):
        return GuardedApp(super()._http_fastapi_default_app(*args, **kwargs))

    def _websocket_fastapi_default_app(self, *args, **kwargs):
        return GuardedApp(super()._websocket_fastapi_default_app(*args, **kwargs))


class RequestTooLarge(Exception):
    pass


class GuardedApp:
    """ASGI wrapper around Jina's FastAPI apps: request size, `/status`, CORS without credentials."""

    def __init__(self, app):
        self.app = app
        self.max_bytes = request_limits().max_request_mib * 1024 * 1024
        self.limit_text = (f"request: larger than the limit of {request_limits().max_request_mib} MiB "
                           f"(DALLE_FLOW_MAX_REQUEST_MIB)").encode()

    def __getattr__(self, name):  # Jina's server reads attributes of the FastAPI app (routes, state, ...)
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            return await self._http(scope, receive, send)
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _http(self, scope, receive, send):
        if scope["path"].rstrip("/") == "/status":
            return await _plain(send, 404, b"not found")
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _plain(send, 413, self.limit_text)
        received = 0

        async def bounded_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge
            return message

        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": _without_credentials(message.get("headers", []))}
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except RequestTooLarge:
            if not started:
                await _plain(send, 413, self.limit_text)

    async def _websocket(self, scope, receive, send):
        async def bounded_receive():
            message = await receive()
            if message["type"] == "websocket.receive":
                size = len(message.get("bytes") or b"") + len((message.get("text") or "").encode())
                if size > self.max_bytes:
                    await send({"type": "websocket.close", "code": 1009, "reason": self.limit_text.decode()[:120]})
                    return {"type": "websocket.disconnect", "code": 1009}
            return message

        await self.app(scope, bounded_receive, send)


def _without_credentials(headers) -> list:
    """A reflected origin with credentials becomes `*` without them."""
    out = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"access-control-allow-credentials":
            continue
        if lowered == b"access-control-allow-origin":
            value = b"*"
        out.append((name, value))
    return out


async def _plain(send, status: int, body: bytes):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class HardenedGateway(CompositeGateway):
    """Jina's composite gateway (one server per protocol) with `HardenedRequestHandler` behind all of them."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "req_handler_cls": HardenedRequestHandler})
