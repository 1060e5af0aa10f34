"""gradvis explore in a real browser: headless Chromium driven by Selenium against
``gradvis explore --no-browser`` on a free port of 127.0.0.1.

The tests run in order on one page (load, upload, top-5, two maps side by side,
a DeepDream started and cancelled, the downloads, the keyboard). Every wait is
bounded. With GRADVIS_SCREENSHOTS set they write the README's screenshots into
docs/images/ (otherwise into a temporary directory). Under CI (the CI variable
set) a missing Chromium, chromedriver, Selenium or Starlette fails them.
"""
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import require

require("starlette")
require("uvicorn")
require("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30       # seconds, the longest any one step may take


def _find(*names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


CHROMIUM = _find("chromium", "chromium-browser", "google-chrome")
DRIVER = _find("chromedriver")
if CHROMIUM is None or DRIVER is None:
    msg = "Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(msg + " when CI is set", pytrace=False)
    pytest.skip(msg, allow_module_level=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    if os.environ.get("GRADVIS_SCREENSHOTS"):
        d = ROOT / "docs" / "images"
        d.mkdir(parents=True, exist_ok=True)
        return d
    return tmp_path_factory.mktemp("shots")


def screenshot(driver, path):
    """A small PNG of the page (960 px wide, 256 colours) for the docs."""
    import io

    from PIL import Image
    im = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    w, h = im.size
    im = im.resize((960, round(h * 960 / w)), Image.LANCZOS)
    im.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``gradvis explore --no-browser`` on a free port; yields (base URL, images dir)."""
    import matplotlib
    images = tmp_path_factory.mktemp("photos")
    shutil.copy(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", images / "hopper.jpg")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "gradvis", "explore", "--no-browser", "--port", "0",
                          "--images", str(images)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env)
    lines = []
    threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")), daemon=True).start()
    t0 = time.monotonic()
    url = None
    while url is None:
        for ln in list(lines):
            m = re.search(r"serving on (http://\S+)", ln)
            if m:
                url = m.group(1)
        if url is None and (p.poll() is not None or time.monotonic() - t0 > 60):
            p.kill()
            pytest.fail("gradvis explore did not start:\n" + "".join(lines))
        time.sleep(0.05)
    yield url, images
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,1400", "--disable-extensions", "--no-first-run"]:
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_page_load_timeout(WAIT)
    d.set_script_timeout(WAIT)
    d.downloads = downloads
    yield d
    d.quit()


def tid(driver, name, many=False):
    sel = f'[data-testid="{name}"]'
    return driver.find_elements(By.CSS_SELECTOR, sel) if many else driver.find_element(By.CSS_SELECTOR, sel)


def wait(driver, cond, what, timeout=WAIT):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: cond(d), message=what)


def card(driver, method):
    cards = driver.find_elements(By.CSS_SELECTOR, f'[data-testid="result-card"][data-method="{method}"]')
    return cards[-1] if cards else None


def run_method(driver, method, params=None):
    Select(tid(driver, "method-select")).select_by_value(method)
    for k, v in (params or {}).items():
        el = tid(driver, f"param-{k}")
        el.clear()
        el.send_keys(str(v))
    n = len(driver.find_elements(By.CSS_SELECTOR, f'[data-testid="result-card"][data-method="{method}"]'))
    tid(driver, "run-button").click()
    wait(driver, lambda d: len(d.find_elements(
        By.CSS_SELECTOR, f'[data-testid="result-card"][data-method="{method}"]')) == n + 1, f"a {method} card")
    return card(driver, method)


def test_page_loads(server, driver):
    url, _ = server
    driver.get(url)
    wait(driver, lambda d: "Model:" in tid(d, "model-info").text, "the model line")
    assert "gradvis-default" in tid(driver, "model-info").text
    # nothing is fetched from anywhere but the server (no CDN)
    hosts = driver.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).host)")
    assert set(hosts) <= {url.split("/")[2]}, hosts
    nav = driver.execute_script("const n = performance.getEntriesByType('navigation')[0];"
                                "return [n.domContentLoadedEventEnd, n.loadEventEnd];")
    assert 0 < nav[0] < 5000, nav
    methods = [o.get_attribute("value") for o in Select(tid(driver, "method-select")).options]
    assert {"saliency", "smoothgrad", "fooling", "classvis", "inversion", "deepdream"} <= set(methods)


def test_upload_shows_top5(server, driver, shots):
    _, images = server
    tid(driver, "upload-input").send_keys(str(images / "hopper.jpg"))
    wait(driver, lambda d: len(tid(d, "top5-item", many=True)) == 5, "the top-5")
    items = tid(driver, "top5-item", many=True)
    probs = [float(re.search(r"([\d.]+)%", b.text).group(1)) for b in items]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.5
    assert items[0].get_attribute("aria-pressed") == "true"
    assert "Target:" in tid(driver, "target-current").text
    notes = tid(driver, "image-notes").text
    assert "64x64" in notes and "much larger" in notes
    img = tid(driver, "input-image")
    wait(driver, lambda d: d.execute_script("return arguments[0].naturalWidth", img) == 64, "the input image")
    assert "as the model sees it" in img.get_attribute("alt")
    # a class found by name becomes the target
    search = tid(driver, "target-search")
    search.send_keys("goldfish", Keys.ENTER)
    wait(driver, lambda d: "goldfish" in tid(d, "target-current").text.lower(), "the searched target")
    items[0].click()
    assert tid(driver, "top5-item", many=True)[0].get_attribute("aria-pressed") == "true"


def wait_done(driver, method, timeout=WAIT):
    wait(driver, lambda d: card(d, method).get_attribute("data-status") in ("done", "failed", "error", "cancelled"),
         f"{method} to finish", timeout)
    c = card(driver, method)
    assert c.get_attribute("data-status") == "done", c.text
    return c


def test_two_maps_side_by_side(driver, shots):
    # saliency beside Grad-CAM where the CAMs are registered, else beside SmoothGrad
    offered = [o.get_attribute("value") for o in Select(tid(driver, "method-select")).options]
    other, params = ("grad_cam", {}) if "grad_cam" in offered else ("smoothgrad", {"num_samples": 8})
    run_method(driver, "saliency")
    run_method(driver, other, params)
    for m in ("saliency", other):
        c = wait_done(driver, m)
        img = c.find_element(By.CSS_SELECTOR, '[data-testid="result-image"]')
        wait(driver, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 64,
             f"the {m} image")
        assert img.get_attribute("src").startswith("data:image/png")
        assert "colour scale runs from" in img.get_attribute("alt")
        scale = c.find_element(By.CSS_SELECTOR, '[data-testid="color-scale"]').text
        assert "float32" in scale
    before = card(driver, "saliency").find_element(By.CSS_SELECTOR, "img.result").get_attribute("src")
    modes = Select(tid(driver, "display-mode"))
    for mode in ("overlay", "masked", "signed", "heat"):
        modes.select_by_value(mode)
        img = card(driver, "saliency").find_element(By.CSS_SELECTOR, "img.result")
        assert ("signed" in img.get_attribute("alt")) == (mode == "signed")
        if mode == "overlay":
            driver.execute_script("arguments[0].scrollIntoView()", tid(driver, "compare-grid"))
            screenshot(driver, shots / "explore_compare.png")
            driver.execute_script("window.scrollTo(0, 0)")
            assert img.get_attribute("src") != before
    assert card(driver, "saliency").find_element(By.CSS_SELECTOR, "img.result").get_attribute("src") == before


def test_deepdream_streams_and_cancels(driver, shots):
    c = run_method(driver, "deepdream", {"iterations": 400, "octaves": 1, "max_size": 96})
    wait(driver, lambda d: card(d, "deepdream").get_attribute("data-status") == "running", "the dream to start")
    prog = c.find_element(By.CSS_SELECTOR, '[data-testid="progress"]')
    wait(driver, lambda d: float(prog.get_attribute("value") or 0) >= 10, "a few steps")
    img = c.find_element(By.CSS_SELECTOR, '[data-testid="result-image"]')
    wait(driver, lambda d: img.is_displayed() and "in progress" in img.get_attribute("alt"), "a preview")
    # the page stays responsive: a saliency finishes while the dream runs
    run_method(driver, "saliency")
    wait_done(driver, "saliency")
    assert card(driver, "deepdream").get_attribute("data-status") == "running"
    screenshot(driver, shots / "explore_deepdream.png")
    c.find_element(By.CSS_SELECTOR, '[data-testid="cancel-button"]').click()
    wait(driver, lambda d: card(d, "deepdream").get_attribute("data-status") == "cancelled", "the cancel", 10)
    status = c.find_element(By.CSS_SELECTOR, '[data-testid="result-status"]').text
    steps = int(re.search(r"Cancelled at step (\d+) of 400", status).group(1))
    assert 10 <= steps < 400


def _wait_file(folder, suffix, timeout=WAIT):
    """The downloaded file once it is whole: the browser may create it under its
    final name before it has written all of it, so its size must be the same on two
    looks 0.1 s apart, with no download in progress beside it."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        done = [p for p in folder.iterdir() if p.name.endswith(suffix)]
        busy = any(p.name.endswith(".crdownload") for p in folder.iterdir())
        if done and not busy:
            size = done[0].stat().st_size
            if size > 0 and size == last:
                return done[0]
            last = size
        time.sleep(0.1)
    raise AssertionError(f"no whole {suffix} file downloaded into {folder}: {list(folder.iterdir())}")


def test_downloads(driver):
    from PIL import Image
    c = card(driver, "saliency")
    c.find_element(By.CSS_SELECTOR, '[data-testid="download-npy"]').click()
    npy = _wait_file(driver.downloads, ".npy")
    a = np.load(npy, allow_pickle=False)
    assert a.shape == (64, 64) and a.dtype == np.float32 and (a >= 0).all() and a.max() > 0
    c.find_element(By.CSS_SELECTOR, '[data-testid="download-png"]').click()
    png = _wait_file(driver.downloads, "_heat.png")
    with Image.open(png) as im:
        assert im.size == (64, 64)
    code = c.find_element(By.CSS_SELECTOR, '[data-testid="python-code"]').get_attribute("textContent")
    assert "gradvis.compute_saliency_maps(X, np.array([" in code and "hopper.jpg" in code
    cli = c.find_element(By.CSS_SELECTOR, '[data-testid="cli-command"]').get_attribute("textContent")
    assert re.fullmatch(r"gradvis saliency hopper\.jpg --class \d+ --save-npy", cli), cli


def test_keyboard_and_alt_text(driver):
    # every image has alt text
    for img in driver.find_elements(By.TAG_NAME, "img"):
        if img.is_displayed():
            assert img.get_attribute("alt").strip(), img.get_attribute("outerHTML")[:200]
    # the controls are reached with Tab, and Enter on the Run button runs the method
    Select(tid(driver, "method-select")).select_by_value("saliency")
    driver.find_element(By.TAG_NAME, "body").click()
    driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    reached = []
    for _ in range(40):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        t = driver.switch_to.active_element.get_attribute("data-testid")
        reached.append(t)
        if t == "run-button":
            break
    for t in ("drop-zone", "upload-input", "image-picker", "top5-item", "target-search", "method-select",
              "run-button"):
        assert t in reached, (t, reached)
    n = len(tid(driver, "result-card", many=True))
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    wait(driver, lambda d: len(tid(d, "result-card", many=True)) == n + 1, "a card run from the keyboard")
    wait_done(driver, "saliency")
