"""The `/ui` routes of the HTTP gateway: the page and its files, from this package (installed by
dalle_flow.deploy.gateway)."""
from __future__ import annotations

from pathlib import Path

UI_PATH = "/ui"
STATIC_DIR = Path(__file__).resolve().parent / "static"
# the page loads nothing from elsewhere: scripts, styles and requests stay on this origin; images are data: URIs
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def install_ui(app) -> None:
    """Serve STATIC_DIR at UI_PATH/ (index.html at the folder itself); `GET /ui` redirects to `/ui/`."""
    from starlette.staticfiles import StaticFiles

    class UIFiles(StaticFiles):
        async def get_response(self, path, scope):
            response = await super().get_response(path, scope)
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response

    app.mount(UI_PATH, UIFiles(directory=STATIC_DIR, html=True), name="ui")
