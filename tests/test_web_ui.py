"""The web UI (/ui on the HTTP gateway) in real headless Chromium against the tiny Flow: prompt → grid → refine →
upscale → download → history → segment, server errors shown next to their field, phone width in dark mode.

Chromium is Debian's `chromium` (or $DALLE_FLOW_CHROMIUM), driven by pip's playwright through `executable_path`.
Without it these tests are skipped with the reason, except under CI=true, where a missing browser is a failure.
Screenshots go to $DALLE_FLOW_UI_SCREENSHOTS, else a temporary folder; the path is printed.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from jina import Client
from PIL import Image

from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT
from dalle_flow.ui.routes import STATIC_DIR

pytestmark = pytest.mark.flow

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STEP_TIMEOUT_MS = 120_000  # one tiny-Flow request on a busy 2-core machine; a hang fails instead of blocking


def find_chromium() -> str | None:
    explicit = os.environ.get("DALLE_FLOW_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)


def unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true needs the browser tests to run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DALLE_FLOW_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nweb UI screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = find_chromium()
    if chromium is None:
        unavailable("no Chromium found (apt-get install chromium, or set DALLE_FLOW_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -r requirements.txt)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, accept_downloads=True, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(STEP_TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser, tiny_flow):
    page = browser.new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    page.goto(tiny_flow.url("http") + "/ui/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    page.close()
    assert not problems, problems


def data_uri_image(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def set_range(page, selector: str, value: float):
    page.locator(selector).evaluate(
        "(input, value) => { input.value = value; input.dispatchEvent(new Event('input', {bubbles: true})); }", value)


def test_a_missing_browser_skips_with_the_reason_but_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("DALLE_FLOW_CHROMIUM", str(tmp_path / "no-such-chrome"))
    assert find_chromium() is None
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true needs the browser tests to run: no Chromium"):
        unavailable("no Chromium found")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium found"):
        unavailable("no Chromium found")


def test_ui_is_served_by_the_gateway_and_loads_nothing_from_elsewhere(tiny_flow):
    with urllib.request.urlopen(tiny_flow.url("http") + "/ui") as reply:  # redirected to /ui/
        assert reply.url.endswith("/ui/")
        assert "<title>DALL·E Flow</title>" in reply.read().decode()
        assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
    for name in ("app.js", "app.css"):
        with urllib.request.urlopen(f"{tiny_flow.url('http')}/ui/{name}") as reply:
            assert reply.status == 200
    with urllib.request.urlopen(tiny_flow.url("http") + "/") as reply:  # Jina's health check is untouched
        assert reply.status == 200
    for path in STATIC_DIR.iterdir():  # offline: no CDN, no remote font, no absolute URL at all
        assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", path.read_text()), path.name


def test_parameters_endpoint_declares_each_executors_parameters(tiny_flow):
    docs = Client(host=tiny_flow.url("grpc")).post(PARAMETERS_ENDPOINT)
    declared = {doc.tags["executor"]: doc.tags["endpoints"] for doc in docs}
    assert set(declared) == {"dalle", "diffusion", "upscaler", "store", "clipseg"}  # both branches merged
    by_name = lambda params: {p["name"]: p for p in params}  # noqa: E731
    dalle = by_name(declared["dalle"]["/"])
    assert (dalle["num_images"]["default"], dalle["num_images"]["high"]) == (8, 32)
    assert dalle["num_images"]["description"] == "an integer between 1 and 32"
    generate, refine = by_name(declared["diffusion"]["/"]), by_name(declared["diffusion"]["/diffuse"])
    assert (generate["num_images"]["default"], refine["num_images"]["default"]) == (2, 36)
    assert refine["steps"]["default"] == 10  # the running executor's own default: tiny_steps of its config
    assert by_name(declared["clipseg"]["/segment"])["thresholding_type"]["choices"] == [
        "none", "binary", "adaptive_mean", "adaptive_gaussian"]
    assert by_name(declared["store"]["/history"])["limit"]["default"] == 20


def test_whole_loop_in_chromium(page, screenshots, tmp_path):
    # fields come from the server's declarations: one `Images` field for both generators, with both ranges
    images = page.locator("#generate-form [data-param=num_images]")
    assert images.locator("input").get_attribute("placeholder") == "DALL·E Mega 8 · GLID-3 XL 2"
    assert "an integer between 1 and 32" in images.inner_text() and "an integer between 1 and 36" in images.inner_text()
    assert not page.locator("#refine-form button[type=submit]").is_enabled()  # nothing chosen yet

    prompt = "a lighthouse in a storm, oil painting"
    page.fill("#generate-form textarea[name=text]", prompt)
    page.fill("#generate-form input[name=num_images]", "2")
    page.fill("#generate-form input[name=seed]", "7")
    page.click("#generate-form button[type=submit]")
    candidates = page.locator("#candidates .card")
    candidates.nth(3).wait_for()
    assert candidates.count() == 4  # 2 from each generator, ranked together
    captions = candidates.locator(".meta").all_inner_texts()
    assert all(re.search(r"CLIP [\d.]+ · seed 7$", c) for c in captions), captions
    assert {c.split(" · ")[0] for c in captions} == {"DALL·E Mega", "GLID-3 XL"}
    scores = [float(re.search(r"CLIP ([\d.]+)", c).group(1)) for c in captions]
    assert scores == sorted(scores, reverse=True)  # best first
    assert page.locator("#preset-banner").is_visible()  # tiny images are noise, and the page says so
    assert re.match(r"Done in [\d.]+ s\.", page.inner_text("#generate-form .progress"))
    assert json.loads(page.evaluate("localStorage.getItem('dalle-flow-ui/timings')"))["/"]  # feeds the estimate
    page.screenshot(path=str(screenshots / "1-candidates.png"), full_page=True)

    # enlarge, then choose from the enlarged view
    candidates.nth(1).locator(".thumb").click()
    assert page.locator("#viewer").is_visible()
    assert prompt in page.inner_text("#viewer-caption")
    page.screenshot(path=str(screenshots / "2-enlarged.png"))
    page.click("#viewer-choose")
    assert not page.locator("#viewer").is_visible()
    assert "is-chosen" in candidates.nth(1).get_attribute("class")
    assert page.locator("#selection").is_visible()

    # refine: skip_rate slider and count
    set_range(page, "#refine-form input[name=skip_rate]", 0.6)
    assert page.inner_text("#refine-form [data-param=skip_rate] output") == "0.6"
    page.fill("#refine-form input[name=num_images]", "3")
    page.locator("#refine-form details.advanced summary").click()
    page.fill("#refine-form input[name=seed]", "11")
    page.click("#refine-form button[type=submit]")
    refinements = page.locator("#refinements .card")
    refinements.nth(2).wait_for()
    assert refinements.count() == 3
    assert all("skip_rate 0.6" in c for c in refinements.locator(".meta").all_inner_texts())
    refinements.nth(2).locator(".choose").click()
    chosen_uri = page.get_attribute("#chosen-image", "src")
    chosen_side = data_uri_image(chosen_uri).size[0]
    page.screenshot(path=str(screenshots / "3-refinements.png"), full_page=True)

    # upscale ×4, download the PNG, reproduction info
    page.click("#upscale-form button[type=submit]")
    page.locator("#upscaled").wait_for()
    assert data_uri_image(page.get_attribute("#upscaled-image", "src")).size == (4 * chosen_side, 4 * chosen_side)
    with page.expect_download() as download_info:
        page.click("#download")
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    assert saved.name.startswith("dalle-flow-a-lighthouse-in-a-storm") and saved.suffix == ".png"
    assert Image.open(saved).size == (4 * chosen_side, 4 * chosen_side)
    repro = json.loads(page.inner_text("#repro"))
    assert repro["prompt"] == prompt and repro["generator"] == "GLID3-XL" and repro["seed"] == 11
    assert repro["parameters"]["skip_rate"] == 0.6
    assert not page.locator("#upscale-form button[type=submit]").is_enabled()  # already upscaled
    page.screenshot(path=str(screenshots / "4-upscaled.png"), full_page=True)

    # history: the upscaled image is stored, newest first, and can be chosen again
    page.click("#history-form button[type=submit]")
    stored = page.locator("#stored .card")
    stored.first.wait_for()
    assert data_uri_image(stored.first.locator("img").get_attribute("src")).size[0] == 4 * chosen_side
    assert "upscaled" in stored.first.locator(".meta").inner_text()
    assert re.match(r"Images 1–\d+, newest first\.", page.inner_text("#history-form .progress"))
    stored.first.locator(".choose").click()
    page.screenshot(path=str(screenshots / "5-history.png"), full_page=True)

    # segment the chosen image: RGBA over a checkerboard
    page.fill("#segment-form input[name=text]", "the lighthouse")
    page.click("#segment-form button[type=submit]")
    page.locator("#segmented").wait_for()
    segmented = data_uri_image(page.get_attribute("#segmented-image", "src"))
    assert segmented.mode == "RGBA" and segmented.size[0] == 4 * chosen_side
    assert "checkerboard" in page.get_attribute("#segmented .full", "class")
    page.locator("#segment").screenshot(path=str(screenshots / "6-segmented.png"))


def test_server_errors_are_shown_next_to_their_field_and_the_page_keeps_working(page, screenshots):
    page.fill("#generate-form textarea[name=text]", "a cat")
    page.fill("#generate-form input[name=num_images]", "40")
    page.click("#generate-form button[type=submit]")
    field = page.locator("#generate-form [data-param=num_images]")
    field.locator(".field-error").wait_for()
    # the server's own words (either generator may answer first; both name the field and their limit)
    assert re.fullmatch(r"num_images: must be an integer between 1 and 3[26], got 40",
                        field.locator(".field-error").inner_text())
    assert field.locator("input").get_attribute("aria-invalid") == "true"
    page.screenshot(path=str(screenshots / "7-error.png"))

    page.fill("#generate-form input[name=num_images]", "")
    page.fill("#generate-form textarea[name=text]", "")
    page.click("#generate-form button[type=submit]")
    prompt_error = page.locator("#generate-form [data-param=text] .field-error")
    prompt_error.wait_for()
    assert "the prompt is empty" in prompt_error.inner_text()

    # an advanced field's error opens "Advanced" to show it
    page.fill("#generate-form textarea[name=text]", "a cat")
    page.locator("#generate-form details.advanced summary").click()
    page.fill("#generate-form input[name=top_p]", "2")
    page.locator("#generate-form details.advanced summary").click()  # folded again
    page.click("#generate-form button[type=submit]")
    top_p = page.locator("#generate-form [data-param=top_p] .field-error")
    top_p.wait_for()
    # (JSON numbers reach the executors as doubles: the server's message says 2.0)
    assert re.fullmatch(r"top_p: must be a number between 0.01 and 1, got 2(\.0)?", top_p.inner_text())
    assert page.locator("#generate-form details.advanced").get_attribute("open") is not None

    # a valid request then goes through: the earlier errors are cleared
    page.fill("#generate-form input[name=top_p]", "")
    page.fill("#generate-form input[name=num_images]", "1")
    page.click("#generate-form button[type=submit]")
    page.locator("#candidates .card").nth(1).wait_for()
    assert page.locator("#generate-form .field-error:not(:empty)").count() == 0


def test_running_request_disables_its_controls_and_can_be_cancelled(page, tiny_flow):
    log_before = tiny_flow.log_size()
    page.fill("#generate-form textarea[name=text]", "a slow request")
    page.fill("#generate-form input[name=num_images]", "4")
    page.click("#generate-form button[type=submit]")
    assert not page.locator("#generate-form button[type=submit]").is_enabled()  # no double submit
    assert not page.locator("#generate-form textarea").is_enabled()
    assert page.inner_text("#generate-form .progress").startswith("Working…")
    page.click("#generate-form .cancel")
    assert page.inner_text("#generate-form .progress").startswith("Cancelled")
    assert page.locator("#generate-form button[type=submit]").is_enabled()
    assert not page.locator("#generate-form .cancel").is_visible()
    # the aborted fetch closes its connection: the gateway cancels the request's work at the executors
    deadline = time.monotonic() + 60
    while "a client left (HTTP) with 1 request(s) unanswered" not in tiny_flow.log_words(since=log_before):
        assert time.monotonic() < deadline, "the server never heard that the browser cancelled"
        time.sleep(0.2)


def test_phone_width_in_dark_mode(browser, tiny_flow, screenshots):
    page = browser.new_page()  # (a persistent context sets viewport and colour scheme per page, not at creation)
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        page.emulate_media(color_scheme="dark")
        page.goto(tiny_flow.url("http") + "/ui/")
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#generate-form textarea[name=text]", "a fox in the snow")
        page.fill("#generate-form input[name=num_images]", "1")
        page.keyboard.press("Tab")
        page.focus("#generate-form textarea")
        page.keyboard.press("Control+Enter")  # the keyboard shortcut submits
        page.locator("#candidates .card").nth(1).wait_for()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(20, 20, 22)", background  # the dark palette follows the system setting
        page.screenshot(path=str(screenshots / "8-phone-dark.png"), full_page=True)
    finally:
        page.close()
