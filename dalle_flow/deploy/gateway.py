"""The Flow's gateway: Jina's own gRPC + HTTP + WebSocket gateway (`CompositeGateway`), plus repairs to what it
answers. `flow.yml` names it by module and class (`uses: dalle_flow.deploy.gateway.DalleFlowGateway`: Jina imports it
by name; a `py_modules` entry would crash `jina flow --uses flow.yml`'s gateway on an empty search path), so
`jina flow --uses flow.yml`, `python -m dalle_flow serve` and the Kubernetes export all run it.

Each repair is one named function of a finished response, applied on every protocol (they all answer through the
same request streamer); further gateway features go beside them as their own pieces:

- `complete_route_times`: Jina 3.34 records a start time but no end time for an executor that a request skips (its
  endpoint is not bound there, or `target_executor` names another). The HTTP gateway then fills the end time with a
  naive datetime, which Jina's own HTTP client cannot parse (`ParseError ... endTime`) although the work was done:
  `fav.post('http://...', target_executor='diffusion')` and `post(f'{url}/upscale', target_executor='upscaler')`
  failed. A skipped executor ends when it started.
- `refuse_unsupported_clip_calls`: clip_client's `index`/`search` and a multi-model clip_server's model choice
  (`encode(..., parameters={'model_name': ...})` posts to `/encode/<name>`, `rank` to `/rank/<name>`) reach no
  executor here and came back unchanged, which clip_client reads as an empty result. They get a clear error instead.
"""
from __future__ import annotations

from jina.proto import jina_pb2
from jina.serve.runtimes.gateway.composite import CompositeGateway

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


RESPONSE_REPAIRS = (complete_route_times, refuse_unsupported_clip_calls)


class DalleFlowGateway(CompositeGateway):
    """Jina's gateway on every protocol of `protocol:` in flow.yml, answering through `RESPONSE_REPAIRS`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
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
