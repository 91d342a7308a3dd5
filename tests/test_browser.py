"""The page at `/` in a real headless Chromium (Debian's chromium + chromium-driver, via Selenium).

Not skipped when Chromium is missing: `make test` installs it (see Makefile);
without it this test fails saying so.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import rendered_cakes
from daemon_support import jpeg_bytes
from test_server import PHOTOS, TOKEN, Api, ServerProcess, files  # noqa: F401  (session fixtures below)
from test_server import api, daemon, server, server_config, shared_root  # noqa: F401

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
PHONE = (390, 844)

FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--no-default-browser-check", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def _first(paths: tuple[str, ...], what: str) -> str:
    for path in paths:
        if Path(path).exists():
            return path
    found = shutil.which(Path(paths[0]).name)
    if found:
        return found
    raise AssertionError(f"{what} not found (tried {', '.join(paths)}); `make test` installs Debian's chromium and chromium-driver")


def phone_browser(width: int = PHONE[0], height: int = PHONE[1], languages: str | None = None):
    """A headless Chromium with a phone-sized window and a fresh profile, driven by Debian's chromedriver.

    `languages` (e.g. "zh-CN,zh") is the browser's language list: its Accept-Language and navigator.languages.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    profile = tempfile.mkdtemp(prefix="teaprint-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}})
    if languages:
        options.add_argument(f"--lang={languages.split(',')[0]}")
        options.add_experimental_option("prefs", {"intl.accept_languages": languages})
    driver = webdriver.Chrome(service=Service(executable_path=_first(CHROMEDRIVER, "chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    driver._teaprint_profile = profile  # type: ignore[attr-defined]
    return driver


def close_browser(driver) -> None:  # type: ignore[no-untyped-def]
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_teaprint_profile", ""), ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    driver = phone_browser()
    yield driver
    close_browser(driver)


def test_pick_a_photo_submit_and_see_the_right_label(api: Api, server: ServerProcess, browser, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    api.call("POST", "/catalog", expect=201, files=files(("yiwu2018-a.jpg", jpeg_bytes(PHOTOS[44])), ("bulang2020-a.jpg", jpeg_bytes(PHOTOS[45]))))
    query = tmp_path / "IMG_0042.jpg"
    query.write_bytes(jpeg_bytes(PHOTOS[45]))
    wait = WebDriverWait(browser, 30)

    browser.get(server.url + "/")
    picker = browser.find_element(By.ID, "query-file")
    assert picker.get_attribute("capture") == "environment" and picker.get_attribute("accept") == "image/*"
    wait.until(ec.visibility_of_element_located((By.ID, "token")))  # the server wants a token: the page asks for it
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    picker.send_keys(str(query))
    browser.find_element(By.ID, "identify").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "bulang2020"))
    assert "confidence" in browser.find_element(By.ID, "answer-detail").text
    figures = browser.find_elements(By.CSS_SELECTOR, "#matches figure")
    matches = browser.find_elements(By.CSS_SELECTOR, "#matches figure.match")
    assert "your photo" in figures[0].text and "bulang2020" in matches[0].text
    # The best match's picture is fetched with the token and shown.
    wait.until(lambda d: d.execute_script(
        "const i = document.querySelector('#matches figure.match img'); return i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0"))

    # Register a new cake from the page, then identify it.
    new_cake = tmp_path / "photo.jpg"
    new_cake.write_bytes(jpeg_bytes(PHOTOS[46]))
    browser.find_element(By.ID, "reg-label").send_keys("jingmai-2021")
    browser.find_element(By.ID, "reg-files").send_keys(str(new_cake))
    browser.find_element(By.ID, "register").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "reg-result"), "1 added as jingmai-2021"))
    picker.send_keys(str(new_cake))
    browser.find_element(By.ID, "identify").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "jingmai-2021"))

    # A photo of a tilted cake: its outline drawn on the photo, the cake rectified beside the matches.
    tilted = tmp_path / "tilted.jpg"
    tilted.write_bytes(jpeg_bytes(rendered_cakes(20, tilt=30.0, tilt_axis=20.0).image))
    picker.send_keys(str(tilted))
    browser.find_element(By.ID, "identify").click()
    wait.until(lambda d: d.execute_script(
        "const c = document.querySelector('#matches canvas.outlined'), r = document.querySelector('#matches .rectified');"
        "return !!(c && c.dataset.drawn && r && r.dataset.drawn)"))
    figures = browser.find_elements(By.CSS_SELECTOR, "#matches figure")
    assert "your photo" in figures[0].text and "your cake" in figures[1].text and "round cake" in figures[1].text
    # the outline is drawn in green over the photo
    green = browser.execute_script(
        "const c = document.querySelector('#matches canvas.outlined'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 200 && d[i] < 80 && d[i + 2] < 80) n++; return n;")
    assert green > 300
    # the rectified view is the photo under a projective transform, clipped to the cake's circle
    transform = browser.execute_script("return document.querySelector('#matches .rectified img').style.transform")
    assert transform.startswith("matrix3d(")

    # A broken photo: a clear message, no crash.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a photo")
    picker.send_keys(str(broken))
    browser.find_element(By.ID, "identify").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "Could not identify"))
    assert "not a recognised image" in browser.find_element(By.ID, "answer-detail").text
