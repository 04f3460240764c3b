"""The Flow's gateway: Jina's own gRPC, HTTP and WebSocket gateways, with extra routes on the HTTP one.

flow.yml names it (`gateway: uses: DalleFlowGateway`, `py_modules: [dalle_flow.deploy.gateway]`), so
`jina flow --uses flow.yml` and `python -m dalle_flow serve` both serve it, on the same ports and with the same TLS.
Jina 3.34 builds a multi-protocol gateway as a CompositeGateway that picks each protocol's server class itself; this
one picks the same classes except for HTTP, where `DalleFlowHTTPGateway` adds routes to Jina's default FastAPI app
(`/post`, `/status`, the `GET /` health check stay exactly as Jina serves them).

Each addition to the HTTP app is one named installer in `HTTP_APP_ADDITIONS`, kept apart so they merge and test
independently: `install_web_ui` serves the browser UI under `/ui` (dalle_flow/ui).
"""
from __future__ import annotations

from jina.parsers.helper import _get_gateway_class
from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.http import HTTPGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer


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
    """Jina's multi-protocol gateway, serving HTTP with DalleFlowHTTPGateway."""

    def __init__(self, **kwargs):
        # CompositeServer.__init__ as in Jina 3.34, with the HTTP server class swapped: it looks its classes up itself
        CompositeBaseServer.__init__(self, **kwargs)
        self.servers = []
        for server_kwargs in self._server_kwargs:
            server_cls = _get_gateway_class(server_kwargs["runtime_args"]["protocol"],
                                            works_as_load_balancer=self.works_as_load_balancer)
            if server_cls is HTTPGateway:
                server_cls = DalleFlowHTTPGateway
            self.servers.append(server_cls(**server_kwargs))
        self.gateways = self.servers  # Jina's backwards-compatible alias
