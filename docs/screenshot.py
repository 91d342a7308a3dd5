#!/usr/bin/env python3
"""Regenerate docs/web-page.png: the page at `/` on a phone-sized viewport with a real answer.

    python docs/screenshot.py [--out docs/web-page.png]

Starts `teaprint serve` on a temp root (shipped model if present, else the
tiny test encoder), registers a few cakes through the API, then in headless
Chromium (Debian's chromium + chromium-driver) picks a photo, identifies it
and saves the screenshot (palette PNG, kept small).
"""

from __future__ import annotations

import argparse
import io
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_server import TOKEN, cake, jpeg, sources, start_server, tiny_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "web-page.png")
    args = parser.parse_args(argv)
    import requests
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    root = Path(tempfile.mkdtemp(prefix="teaprint-screenshot-"))
    model = REPO / "pipeline" / "data" / "models" / "teaprint-encoder.keras"
    model = model if model.is_file() else tiny_model(root)
    config = root / "config.yaml"
    config.write_text(f"model:\n  path: {model}\n")
    proc, port, _ = start_server(root, config)
    url = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp(prefix="teaprint-chromium-")
    driver = None
    try:
        rng = np.random.default_rng(5)
        srcs = sources()
        names = ["menghai-7542-2019", "dayi-7572-2020", "xiaguan-tuo-2018", "yiwu-2021", "bulang-2017"]
        query = None
        for i, name in enumerate(names):
            src = srcs[[6, 5, 7, 1, 12][i]]
            state = rng.bit_generator.state
            img = cake(src, rng, side=480)
            r = requests.post(url + "/catalog", headers={"Authorization": f"Bearer {TOKEN}"},
                              files=[("files", (f"{name}.jpg", jpeg(img), "image/jpeg"))], data={"label": name}, timeout=60)
            r.raise_for_status()
            if i == 0:
                replay = np.random.default_rng()
                replay.bit_generator.state = state
                query = jpeg(cake(src, replay, side=480, view=True), 85)
        shot = root / "IMG_2041.jpg"
        shot.write_bytes(query)

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", "--hide-scrollbars"):
            options.add_argument(flag)
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": 390, "height": 900, "pixelRatio": 1.0}})
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(ec.visibility_of_element_located((By.ID, "token"))).send_keys(TOKEN)
        driver.find_element(By.ID, "query-file").send_keys(str(shot))
        driver.find_element(By.ID, "identify").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), names[0]))
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#matches figure img')].every(i => i.complete && i.naturalWidth > 0)"))
        driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
        time.sleep(0.3)
        png = driver.get_screenshot_as_png()
        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        image.save(args.out, optimize=True)
        print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB, {image.width}x{image.height})")
    finally:
        if driver is not None:
            driver.quit()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
