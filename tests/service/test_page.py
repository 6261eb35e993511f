"""The web page end to end: the real server (``python -m service``, uvicorn) on a free
port, driven in a real headless Chromium (Debian's ``chromium`` package) by Playwright.

Skipped only when Playwright is not importable or no chromium executable is installed;
screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright; "
    "the browser is Debian's chromium package, never a Playwright download)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on PATH "
                                "(apt-get install -y chromium)")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m service`` (uvicorn) on a free port: one CPU worker, no LPIPS weights."""
    from tests.e2e.conftest import running

    with running(tmp_path_factory.mktemp("server-logs"), DF_TORCH_THREADS="1",
                 DF_ALLOW_PRIVATE_URLS="true",  # the URL test serves images from 127.0.0.1
                 TORCH_HOME=str(tmp_path_factory.mktemp("page_torch_home"))) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(server + "/")
    pg.wait_for_selector("#step-metric option[value='ssim']", state="attached")
    yield pg
    context.close()


@pytest.fixture(scope="module")
def images(astronaut: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 256 px astronaut, a noisy copy, a better (less noisy) copy with one small edit, a
    wrongly sized one."""
    ref = np.ascontiguousarray(astronaut[::2, ::2])
    rng = np.random.default_rng(3)
    noisy = np.clip(ref + rng.normal(0, 18, ref.shape), 0, 255).astype(np.uint8)
    ours = np.clip(ref + rng.normal(0, 6, ref.shape), 0, 255).astype(np.uint8)
    ours[100:116, 60:76] = (250, 20, 20)  # one real edit: noise alone is no difference
    folder = tmp_path_factory.mktemp("page_images")
    out = {}
    for name, img in (("reference", ref), ("noisy", noisy), ("ours", ours),
                      ("cropped", ours[:, :200])):
        out[name] = folder / f"{name}.png"
        Image.fromarray(img).save(out[name])
    return out


def _psnr(a: Path, b: Path) -> float:
    return peak_signal_noise_ratio(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def _loaded(page, selector: str, count: int) -> None:
    page.wait_for_function(
        "([s, n]) => { const imgs = [...document.querySelectorAll(s)];"
        " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=[selector, count])


def test_page_compares_candidates_and_shows_maps_scores_and_figure(page, images) -> None:
    options = page.eval_on_selector_all("#step-metric option", "os => os.map(o => o.value)")
    assert {"ssim", "psnr", "ms-ssim", "lpips"} <= set(options)  # from /v1/capabilities
    assert page.locator("#params-metric input[data-param='win_size']").input_value() == "11"

    page.set_input_files("#reference-file", str(images["reference"]))
    page.set_input_files("#candidate-files", [str(images["noisy"]), str(images["ours"])])
    labels = page.locator(".label-input")
    assert [labels.nth(i).input_value() for i in range(2)] == ["noisy", "ours"]
    page.select_option("#baseline", "noisy")
    page.click("#compare")
    page.wait_for_selector("#results:not([hidden])")
    _loaded(page, "#cards .heat", 2)
    _loaded(page, "#improvement-cards .heat", 1)

    rows = page.locator("#metrics tbody tr")
    assert rows.count() == 2
    header = page.locator("#metrics thead th").all_inner_texts()
    assert header[:4] == ["candidate", "psnr ↑", "ssim ↑", "ms-ssim ↑"]
    assert "lpips" in header  # no weights on this server: shown as n/a with the reason
    for i, name in enumerate(("noisy", "ours")):
        cells = rows.nth(i).locator("td")
        expected = _psnr(images["reference"], images[name])
        assert cells.nth(0).inner_text() == f"{expected:.2f} dB"
    assert "best" in rows.nth(1).locator("td").nth(0).get_attribute("class")  # ours wins
    summary = page.locator("#improvement-summary").inner_text()
    assert "ours vs noisy: better on" in summary and "lpips" in summary
    assert "better" in page.locator("#improvement-cards figcaption").inner_text()

    card = page.locator("#cards .card").nth(1)
    assert card.get_attribute("data-label") == "ours"
    assert card.locator("rect.region").count() > 0  # the edit's region box drawn
    assert "significant region" in card.locator(".summary").inner_text()
    noisy_card = page.locator("#cards .card").nth(0)
    assert noisy_card.locator("rect.region").count() == 0  # noise alone: nothing boxed
    assert noisy_card.locator(".summary").inner_text().strip() == (
        "no significant difference found")
    # overlay with an opacity slider
    card.locator("input[value='overlay']").check()
    card.locator(".slider").fill("30")
    assert card.locator(".heat").evaluate("e => getComputedStyle(e).opacity") == "0.3"
    assert card.locator(".base").is_visible()
    # before/after swipe: the reference is clipped at the slider position
    noisy_card.locator("input[value='swipe']").check()
    noisy_card.locator(".slider").fill("40")
    assert noisy_card.locator(".ref").is_visible()
    assert "60%" in noisy_card.locator(".ref").evaluate("e => e.style.clipPath")
    assert not noisy_card.locator(".heat").is_visible()
    card.locator(".toggle-boxes").uncheck()
    assert not card.locator("svg.boxes").is_visible()
    card.locator(".toggle-boxes").check()
    assert card.locator("svg.boxes").is_visible()
    noisy_card.locator("input[value='map']").check()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webpage.png"), full_page=True)

    page.fill("#figure-dpi", "150")
    with page.expect_download() as info:
        page.click("#download-figure")
    download = info.value
    assert download.suggested_filename == "comparison.png"
    data = Path(download.path()).read_bytes()
    with Image.open(io.BytesIO(data)) as fig:
        assert fig.format == "PNG"
        assert fig.info["dpi"] == pytest.approx((150, 150), abs=0.05)  # stored per metre
        assert fig.width > 3 * 256

    # the controls build the pipeline: another metric changes the scores sent back
    page.select_option("#step-metric", "mse")
    page.select_option("#step-strategy", "difference")
    page.click("#compare")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#metrics thead th')]"
        ".some(th => th.textContent.startsWith('mse'))")
    assert page.locator("#error").is_hidden()


def test_api_errors_reach_the_user(page, images) -> None:
    page.set_input_files("#reference-file", str(images["reference"]))
    page.set_input_files("#candidate-files", [str(images["ours"]), str(images["cropped"])])
    page.click("#compare")
    error = page.locator("#error")
    error.wait_for(state="visible")
    text = error.inner_text()
    assert "(422)" in text
    assert "candidate 'cropped': image sizes differ: reference is 256x256, candidate is " \
        "200x256" in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webpage-error.png"), full_page=True)

    # an invalid parameter: the problem's field errors are listed
    page.fill("#params-metric input[data-param='win_size']", "4")
    page.locator(".remove").nth(1).click()  # drop the wrongly sized candidate
    assert page.locator(".label-input").count() == 1
    page.click("#compare")
    page.wait_for_function("() => document.querySelector('#error').innerText.includes('win_size')")
    assert "config.metric.win_size" in error.inner_text()


@pytest.fixture(scope="module")
def image_server(images) -> Iterator[str]:
    """The test images over HTTP on 127.0.0.1, for the paste-a-URL path."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(images["reference"].parent))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_pasted_urls_and_files_together(page, images, image_server) -> None:
    page.fill("#reference-url", f"{image_server}/reference.png")
    page.dispatch_event("#reference-url", "change")
    page.fill("#candidate-url", f"{image_server}/noisy.png")
    page.click("#add-url")
    page.set_input_files("#candidate-files", str(images["ours"]))
    page.click("#compare")
    page.wait_for_selector("#results:not([hidden])")
    _loaded(page, "#cards .heat", 2)
    rows = page.locator("#metrics tbody tr")
    assert [rows.nth(i).locator("th").inner_text() for i in range(2)] == ["noisy", "ours"]
    for i, name in enumerate(("noisy", "ours")):
        expected = _psnr(images["reference"], images[name])
        assert rows.nth(i).locator("td").nth(0).inner_text() == f"{expected:.2f} dB"
    assert page.locator("#error").is_hidden()
    assert page.locator("#improvement-block").is_hidden()  # no baseline chosen
