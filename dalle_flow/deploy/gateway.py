"""The Flow's gateway: Jina's own gRPC + HTTP + WebSocket gateway (`CompositeGateway`), with what it shows clients
narrowed and what it answers repaired. `flow.yml` names it by module and class (`uses:
dalle_flow.deploy.gateway.DalleFlowGateway`: Jina imports it by name; a `py_modules` entry would crash `jina flow
--uses flow.yml`'s gateway on an empty search path), so `jina flow --uses flow.yml`, `python -m dalle_flow serve` and
the Kubernetes export all run it.

Narrowed (Jina 3.34's gateway answers `/status` and gRPC `_status` with its versions and environment, passes every
executor error on with a Python traceback full of absolute paths, names executor addresses in connection errors, has
no request size limit on HTTP, and with `cors` enabled answers any origin with credentials allowed):

- responses: tracebacks are dropped and internal addresses replaced by `<executor>`; the error's type and message
  (which name the field and the limit) stay;
- an executor that cannot be reached (it died, and the watchdog has not stopped the Flow yet) or did not answer in
  time: Jina answers with the gRPC error's details, which name the executor's address, its deployment and the
  channel's state (and, over HTTP, a traceback of the gRPC call). Every protocol answers a fixed message instead
  (`NETWORK_ERROR_MESSAGES`, by gRPC status code; HTTP keeps its 503/504, WebSocket its close code 1011); the details
  go to the gateway's log;
- the dry run (gRPC `dry_run`, HTTP and WebSocket `GET /dry_run`: the health checks) answers its status without the
  traceback Jina formats into it;
- `/status` and gRPC `_status` say nothing about versions or the environment (the HTTP and WebSocket routes are
  removed: 404); the OpenAPI description (`/openapi.json`, `/docs`, `/redoc`) names this server (`OPENAPI_INFO`), not
  Jina and its version;
- HTTP bodies and WebSocket messages above the request limit (`DALLE_FLOW_MAX_REQUEST_MIB`) are refused (HTTP 413
  before the body is read when it declares its length; WebSocket close code 1009); gRPC has the same limit as
  `grpc.max_receive_message_length` (see flow_config);
- CORS: any origin may call, but never with credentials (`Access-Control-Allow-Origin: *`, no
  `Access-Control-Allow-Credentials`), so a page cannot act with a visitor's cookies.

Cancelled when the client leaves: every request gets a fresh key in its parameters (`REQUEST_KEY`, replacing any a
client sent; the key is removed from the answer). When a client disconnects before all its answers came (gRPC: the
call is cancelled; HTTP: the connection closes before the response is sent; WebSocket: the socket closes), the keys
still unanswered are posted to `CANCEL_ENDPOINT` on every replica of every executor the gateway knows, and each
executor stops that work at its next check between batches (serving/cancellation.py). HTTP and WebSocket departures
are seen by `GuardedApp`, which reads the connection while the answer is being made; gRPC's by the request streamer.

Repaired: each repair is one named function of a finished response, applied on every protocol (they all answer
through the same request streamer):

- `complete_route_times`: Jina 3.34 records a start time but no end time for an executor that a request skips (its
  endpoint is not bound there, or `target_executor` names another). The HTTP gateway then fills the end time with a
  naive datetime, which Jina's own HTTP client cannot parse (`ParseError ... endTime`) although the work was done:
  `fav.post('http://...', target_executor='diffusion')` and `post(f'{url}/upscale', target_executor='upscaler')`
  failed. A skipped executor ends when it started.
- `refuse_unsupported_clip_calls`: clip_client's `index`/`search` and a multi-model clip_server's model choice
  (`encode(..., parameters={'model_name': ...})` posts to `/encode/<name>`, `rank` to `/rank/<name>`) reach no
  executor here and came back unchanged, which clip_client reads as an empty result. They get a clear error instead.

Added: routes on the HTTP server only. Jina 3.34 builds a multi-protocol gateway as a CompositeGateway that picks each
protocol's server class itself; this one picks the same classes except for HTTP, where `DalleFlowHTTPGateway` adds
routes to Jina's default FastAPI app (`/post` and the `GET /` health check stay as Jina serves them). Each addition is
one named installer in `HTTP_APP_ADDITIONS`: `install_web_ui` serves the browser UI under `/ui` (dalle_flow/ui).
"""
from __future__ import annotations

import asyncio
import re
import uuid
from contextvars import ContextVar

import grpc
from google.protobuf.json_format import MessageToDict
from jina.excepts import InternalNetworkError
from jina.parsers.helper import _get_gateway_class
from jina.proto import jina_pb2
from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.http import HTTPGateway
from jina.serve.runtimes.gateway.request_handling import GatewayRequestHandler
from jina.serve.runtimes.servers.composite import CompositeBaseServer
from jina.types.request.data import DataRequest

from dalle_flow.serving.cancellation import CANCEL_ENDPOINT, REQUEST_KEY
from dalle_flow.serving.limits import request_limits


INTERNAL_ADDRESS = re.compile(r"(?:ipv4:|ipv6:)?(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost):\d{1,5}")
HIDDEN_ADDRESS = "<executor>"


def scrub_text(text: str) -> str:
    return INTERNAL_ADDRESS.sub(HIDDEN_ADDRESS, text)


def scrub_status(status) -> None:
    """Drop the traceback and internal addresses from an error status (in place); others stay as they are."""
    if status.code == jina_pb2.StatusProto.ERROR:
        del status.exception.stacks[:]
        status.description = scrub_text(status.description)
        args = [scrub_text(arg) for arg in status.exception.args]
        del status.exception.args[:]
        status.exception.args.extend(args)


def scrub_response(response):
    scrub_status(response.header.status)
    return response


# what a client reads when the gateway cannot get an answer from an executor, by the gRPC code of the failure
NETWORK_ERROR_MESSAGES = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "the server did not answer in time: an internal service is overloaded or "
                                       "stuck; retry later",
}
UNAVAILABLE_MESSAGE = "the server is temporarily unavailable: an internal service stopped; retry later"


def generic_network_error(error: InternalNetworkError) -> InternalNetworkError:
    """The same failure (gRPC code, request id) with a fixed message: no address, executor, channel state or
    traceback (the replacement was never raised, so it has none)."""
    message = NETWORK_ERROR_MESSAGES.get(error.code(), UNAVAILABLE_MESSAGE)
    bare = grpc.aio.AioRpcError(error.code(), grpc.aio.Metadata(), grpc.aio.Metadata(), message, None)
    return InternalNetworkError(bare, request_id=error.request_id, dest_addr={HIDDEN_ADDRESS}, details=message)


def _with_generic_network_errors(generate, logger):
    """An async generator of the request streamer whose network errors reach the protocols' servers (which put the
    error's details into the answer) only as `generic_network_error`; the details go to the gateway's log."""

    async def generate_with_generic_errors(*args, **kwargs):
        try:
            async for response in generate(*args, **kwargs):
                yield response
        except InternalNetworkError as error:
            generic = generic_network_error(error)
            logger.error(f"an executor failed to answer ({error.code()}): {error.details()}; "
                         f"the client is told: {generic.details()}")
            raise generic from None

    return generate_with_generic_errors


# what the HTTP and WebSocket gateways' OpenAPI description (/openapi.json, /docs, /redoc) says about the server:
# Jina's names Jina and its version; `version` is the version of this HTTP interface (OpenAPI requires one)
OPENAPI_INFO = {
    "title": "DALL·E Flow",
    "description": "Text-to-image server: post Documents to /post with an execEndpoint (/, /diffuse, /upscale, "
                   "/segment, /history, /encode, /rank); see the project's README for the parameters.",
    "version": "1",
}


class Departure:
    """One client connection's leaving: what to do when the client disconnects before it has all its answers."""

    def __init__(self, protocol: str):
        self.protocol = protocol  # for the log
        self.left = False
        self._callbacks = []

    def on_leave(self, callback) -> None:
        if self.left:
            callback()
        else:
            self._callbacks.append(callback)

    def forget(self, callback) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def leave(self) -> None:
        if not self.left:
            self.left = True
            for callback in self._callbacks:
                callback()


# the Departure of the HTTP or WebSocket connection whose request is being streamed (set by GuardedApp); gRPC calls
# have none: a departed gRPC client cancels the call, which ends the stream
CLIENT_DEPARTURE: ContextVar[Departure | None] = ContextVar("client_departure", default=None)
CANCEL_SEND_TIMEOUT_S = 5  # how long the gateway tries to reach one executor replica with a cancellation


def _each(iterator, function):
    """`function` applied to each item of a sync or async iterator, keeping its kind (Jina's streamer takes both)."""
    if hasattr(iterator, "__aiter__"):
        async def mapped():
            async for item in iterator:
                yield function(item)

        return mapped()
    return map(function, iterator)


def _with_request_keys(stream, cancel):
    """The streamer's `stream`, giving each request a fresh key (`REQUEST_KEY`) and calling `cancel(keys, protocol)`
    with the keys still unanswered when the client departs or the stream ends early."""

    async def keyed_stream(request_iterator, *args, **kwargs):
        unanswered: dict[str, list[str]] = {}  # request id -> keys (a client may reuse a request id)

        def stamp(request):
            key = uuid.uuid4().hex
            request.parameters = {**(request.parameters or {}), REQUEST_KEY: key}
            unanswered.setdefault(request.header.request_id, []).append(key)
            return request

        def cancel_unanswered():
            keys = [key for keys in unanswered.values() for key in keys]
            unanswered.clear()
            if keys:
                cancel(keys, departure.protocol if departure is not None else "gRPC")

        departure = CLIENT_DEPARTURE.get()
        if departure is not None:
            departure.on_leave(cancel_unanswered)
        try:
            async for response in stream(_each(request_iterator, stamp), *args, **kwargs):
                keys = unanswered.get(response.header.request_id)
                if keys:
                    keys.pop(0)
                    if not keys:
                        del unanswered[response.header.request_id]
                yield response
        finally:  # normally nothing is left; a cancelled gRPC call or a failed stream leaves work nobody will read
            if departure is not None:
                departure.forget(cancel_unanswered)
            cancel_unanswered()

    return keyed_stream


class HardenedRequestHandler(GatewayRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # every protocol's requests go through this one streamer: key its requests and scrub its responses once, here
        inner = self.streamer._streamer
        stream = _with_request_keys(inner.stream, self._cancel_at_executors)
        process_single_data = inner.process_single_data
        self._cancellations = set()  # tasks posting cancellations (kept referenced until done)

        async def scrubbed_stream(*a, **kw):
            async for response in stream(*a, **kw):
                yield scrub_response(response)

        async def scrubbed_single(*a, **kw):
            return scrub_response(await process_single_data(*a, **kw))

        inner.stream, inner.process_single_data = scrubbed_stream, scrubbed_single
        # ...whose `stream` runs every protocol's requests and dry runs through this generator
        inner._stream_requests = _with_generic_network_errors(inner._stream_requests, self.logger)

    def _cancel_at_executors(self, keys: list[str], protocol: str) -> None:
        task = asyncio.ensure_future(self._post_cancellations(keys, protocol))
        self._cancellations.add(task)
        task.add_done_callback(self._cancellations.discard)

    async def _post_cancellations(self, keys: list[str], protocol: str) -> None:
        """Post the keys to CANCEL_ENDPOINT on every replica the gateway is connected to (Jina's gateway holds one
        connection per replica address; on Kubernetes that is one per executor Service, so one pod hears it)."""
        request = DataRequest()
        request.header.exec_endpoint = CANCEL_ENDPOINT
        request.parameters = {REQUEST_KEY: keys}
        pool = self.streamer._connection_pool
        stubs = []
        for deployment in self.streamer._executor_addresses:
            replicas = pool._connections.get_replicas(deployment, True)  # the gateway adds every address as a head
            stubs += replicas.get_all_connections() if replicas is not None else []
        results = await asyncio.gather(*(self._post_once_more_on_failure(stub, request) for stub in stubs))
        failed = [f"{stub.deployment_name} ({error!r:.200})" for stub, error in zip(stubs, results) if error]
        self.logger.info(f"a client left ({protocol}) with {len(keys)} request(s) unanswered: cancelled at "
                         f"{len(stubs) - len(failed)} of {len(stubs)} executor replicas"
                         + (f"; not reached: {', '.join(failed)}" if failed else ""))

    @staticmethod
    async def _post_once_more_on_failure(stub, request) -> BaseException | None:
        """None when the replica took the request; else the second attempt's error (a channel that an executor's
        keepalive policy just closed fails once, then reconnects)."""
        for attempt in range(2):
            try:
                await stub.send_requests([request], metadata=None, compression=None, timeout=CANCEL_SEND_TIMEOUT_S)
                return None
            except Exception as error:  # noqa: BLE001 - reported in the log line, never to a client
                if attempt:
                    return error

    async def _status(self, empty, context) -> jina_pb2.JinaInfoProto:
        return jina_pb2.JinaInfoProto()  # no versions, no environment

    async def dry_run(self, empty, context) -> jina_pb2.StatusProto:
        status = await super().dry_run(empty, context)
        scrub_status(status)
        return status

    def _http_fastapi_default_app(self, *args, **kwargs):
        return GuardedApp(self._narrowed(super()._http_fastapi_default_app(*args, **kwargs)))

    def _websocket_fastapi_default_app(self, *args, **kwargs):
        return GuardedApp(self._narrowed(super()._websocket_fastapi_default_app(*args, **kwargs)))

    def _narrowed(self, app):
        """Jina's FastAPI app without `/status`, with this server's OpenAPI description, and `GET /dry_run` answered
        by `dry_run` (Jina's formats the exception's traceback into its answer)."""
        app.router.routes[:] = [route for route in app.router.routes
                                if not (getattr(route, "path", None) in ("/status", "/dry_run")
                                        and "GET" in (getattr(route, "methods", None) or ()))]
        for name, value in OPENAPI_INFO.items():
            setattr(app, name, value)

        @app.get("/dry_run", summary="Health: an empty request through every executor")
        async def scrubbed_dry_run():
            status = await self.dry_run(None, None)
            # with `code` even on success (0, a default protobuf omits): Jina's HTTP client reads it
            return {"code": status.code,
                    **MessageToDict(status, preserving_proto_field_name=True, use_integers_for_enums=True)}

        return app


WEBSOCKET_READ_AHEAD = 16  # WebSocket messages read ahead of Jina's handler (it reads as fast as it can anyway)


class RequestTooLarge(Exception):
    pass


class GuardedApp:
    """ASGI wrapper around Jina's FastAPI apps: request size, CORS without credentials."""

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
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _plain(send, 413, self.limit_text)
        received = 0
        departure = Departure("HTTP")
        watcher = None  # reads the connection once the body is in: its next message says the client has gone

        async def watch_for_departure():
            try:  # uvicorn answers `http.disconnect` when the client goes or the response ends
                message = await receive()
            except Exception:  # noqa: BLE001 - the connection broke: the client is gone all the same
                message = {"type": "http.disconnect"}
            if message["type"] == "http.disconnect" and not finished:
                departure.leave()
            return message

        async def bounded_receive():
            nonlocal received, watcher
            if watcher is not None:
                return await asyncio.shield(watcher)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge
                if not message.get("more_body"):
                    watcher = asyncio.ensure_future(watch_for_departure())
            return message

        started = finished = False

        async def tracked_send(message):
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": _without_credentials(message.get("headers", []))}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        token = CLIENT_DEPARTURE.set(departure)
        try:
            await self.app(scope, bounded_receive, tracked_send)
        except RequestTooLarge:
            if not started:
                await _plain(send, 413, self.limit_text)
        finally:
            CLIENT_DEPARTURE.reset(token)
            if watcher is not None:
                watcher.cancel()

    async def _websocket(self, scope, receive, send):
        """Messages are read by one task for the whole connection, so a close is seen even while Jina's handler only
        waits for answers (its client sends an end marker, then nothing until it closes)."""
        departure = Departure("WebSocket")
        inbox = asyncio.Queue(maxsize=WEBSOCKET_READ_AHEAD)

        async def read_connection():
            while True:
                try:
                    message = await receive()
                except Exception:  # noqa: BLE001 - the connection broke: to Jina's handler, a disconnect
                    message = {"type": "websocket.disconnect", "code": 1006}
                if message["type"] == "websocket.receive":
                    size = len(message.get("bytes") or b"") + len((message.get("text") or "").encode())
                    if size > self.max_bytes:
                        await send({"type": "websocket.close", "code": 1009,
                                    "reason": self.limit_text.decode()[:120]})
                        message = {"type": "websocket.disconnect", "code": 1009}
                if message["type"] == "websocket.disconnect":
                    departure.leave()
                    await inbox.put(message)
                    return
                await inbox.put(message)

        reader = asyncio.ensure_future(read_connection())
        token = CLIENT_DEPARTURE.set(departure)
        try:
            await self.app(scope, inbox.get, send)
        finally:
            CLIENT_DEPARTURE.reset(token)
            reader.cancel()


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

# clip_client calls this server does not offer (the model choice arrives as a suffix of the endpoint)
CLIP_SEARCH_ENDPOINTS = ("/index", "/search")
CLIP_MODEL_ENDPOINT_PREFIXES = ("/encode/", "/rank/")


def complete_route_times(response) -> None:
    """Give every route an end time: a skipped executor's is its start time (it did nothing)."""
    for route in response.routes:
        if route.HasField("start_time") and not route.HasField("end_time"):
            route.end_time.CopyFrom(route.start_time)


def unsupported_clip_call(endpoint: str) -> str | None:
    """Why this server refuses a CLIP-as-service call to `endpoint`, or None when it is not such a call."""
    if endpoint in CLIP_SEARCH_ENDPOINTS:
        return (f"{endpoint}: not supported by this server: it answers CLIP-as-service's encode and rank "
                f"(/encode, /rank), not index and search (it keeps no index)")
    if endpoint.startswith(CLIP_MODEL_ENDPOINT_PREFIXES):
        name = endpoint.split("/", 2)[2]
        return (f"model_name: not supported by this server: it serves one CLIP model, so call "
                f"{endpoint.split('/')[1]} without parameters={{'model_name': ...}} (got {name!r})")
    return None


def refuse_unsupported_clip_calls(response) -> None:
    message = unsupported_clip_call(response.header.exec_endpoint)
    if message is None or response.header.status.code == jina_pb2.StatusProto.ERROR:
        return
    status = response.header.status
    status.code = jina_pb2.StatusProto.ERROR
    status.description = f"ValueError({message!r})"
    status.exception.name = "ValueError"
    status.exception.args.append(message)


def drop_request_key(response) -> None:
    """The client gets its parameters back as it sent them, without the key the gateway added."""
    parameters = response.parameters
    if isinstance(parameters, dict) and REQUEST_KEY in parameters:
        response.parameters = {name: value for name, value in parameters.items() if name != REQUEST_KEY}


RESPONSE_REPAIRS = (complete_route_times, refuse_unsupported_clip_calls, drop_request_key)


def install_web_ui(app, gateway) -> None:
    """The browser UI of the human-in-the-loop cycle, at /ui (see dalle_flow/ui)."""
    from dalle_flow.ui.routes import install_ui

    install_ui(app)


# (name, installer(app, gateway)) applied in order to the FastAPI app of the HTTP gateway
HTTP_APP_ADDITIONS = (
    ("web_ui", install_web_ui),
)


class DalleFlowHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway plus this project's routes (HTTP_APP_ADDITIONS)."""

    @property
    def app(self):
        app = super().app  # Jina builds a fresh app on each access; setup_server reads it once
        for _, install in HTTP_APP_ADDITIONS:
            install(app, self)
        return app


class DalleFlowGateway(CompositeGateway):
    """Jina's gateway on every protocol of `protocol:` in flow.yml, with `HardenedRequestHandler` behind all of them,
    answering through `RESPONSE_REPAIRS`, and serving HTTP with `DalleFlowHTTPGateway`."""

    def __init__(self, **kwargs):
        # CompositeServer.__init__ as in Jina 3.34, with the HTTP server class swapped: it looks its classes up itself
        CompositeBaseServer.__init__(self, **{**kwargs, "req_handler_cls": HardenedRequestHandler})
        self.servers = []
        for server_kwargs in self._server_kwargs:
            server_cls = _get_gateway_class(server_kwargs["runtime_args"]["protocol"],
                                            works_as_load_balancer=self.works_as_load_balancer)
            if server_cls is HTTPGateway:
                server_cls = DalleFlowHTTPGateway
            self.servers.append(server_cls(**server_kwargs))
        self.gateways = self.servers  # Jina's backwards-compatible alias
        # every protocol's server shares this request handler, and every answer leaves through the streamer's result
        # handler (jina.serve.stream.RequestStreamer); checked here so that another Jina version fails at start-up
        streamer = getattr(getattr(self._request_handler, "streamer", None), "_streamer", None)
        if not callable(getattr(streamer, "_result_handler", None)):
            raise RuntimeError("DalleFlowGateway: this Jina version has no RequestStreamer._result_handler to wrap; "
                               "the gateway was written for jina 3.34")
        streamer._result_handler = _with_repairs(streamer._result_handler)


def _with_repairs(handle_result):
    def handle_and_repair(result):
        response = handle_result(result)
        for repair in RESPONSE_REPAIRS:
            repair(response)
        return response

    return handle_and_repair
