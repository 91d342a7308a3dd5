#!/usr/bin/env python3
"""Regenerate docs/web-page.png (English) and docs/web-page.zh-CN.png: the phone page identifying a rendered cake.

    python docs/screenshot.py [--out-dir docs] [--model pipeline/data/models/teaprint-encoder.keras] [--expect-record]

Starts `teaprint serve` on a temp root with the shipped model, registers three
rendered cakes (`pipeline.training.views.disc_photo` of tea-leaf textures: the
same disc of the same texture is the same cake, each generator state another
shot of it), gives each a record sidecar in Chinese beside its photos, and asks
the API whether a new shot of the first cake is `matched` to it (another shot
is tried if not; none matching is an error, not a picture). Then in headless
Chromium (Debian's chromium + chromium-driver) whose language is zh-CN it
identifies that shot, saves the Chinese page, switches the page to English
with its language menu and saves that one (palette PNGs, kept small).

Prints one JSON line: the answer (status, label, confidence, similarities,
model id), whether the page showed the cake's record, and the files written.
`--expect-record` fails when the page shows no record (tests/test_screenshot.py
runs it so).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_server import TOKEN, jpeg, sources, start_server  # noqa: E402

CAKES = (  # label, texture index in bench_server.sources() (the procedural leaf textures are 8..15), record
    ("menghai-7542-2019", 9, {"名称": "勐海 7542 青饼", "年份": 2019, "批次": "1901", "生产商": "勐海茶厂", "重量": "357克", "备注": "昆明干仓，2019 年 3 月入库"}),
    ("下关-沱茶-2018", 11, {"名称": "下关甲级沱茶", "年份": 2018, "生产商": "下关茶厂", "重量": "100克"}),
    ("yiwu-2021", 14, {"名称": "易武古树春茶", "年份": 2021, "生产商": "易武茶厂", "重量": "200克"}),
)
SHOTS = 2
PHONE = (390, 1000)


def shot(texture: np.ndarray, seed: int) -> bytes:
    """One photo of the cake cut from `texture` (always the same disc), taken with generator `seed`."""
    from pipeline.training.views import disc_photo

    side = min(texture.shape[:2])
    return jpeg(disc_photo(texture, np.random.default_rng(seed), (side / 2, side / 2), side * 0.4, out_size=480), 88)


def register(url: str, root: Path, textures: list[np.ndarray]) -> None:
    import requests

    for n, (label, index, record) in enumerate(CAKES):
        photos = [("files", (f"shot-{k}.jpg", shot(textures[index], 1000 * n + k), "image/jpeg")) for k in range(SHOTS)]
        r = requests.post(url + "/catalog", headers={"Authorization": f"Bearer {TOKEN}"}, files=photos, data={"label": label}, timeout=120)
        r.raise_for_status()
        folder = root / "inbox" / "catalog" / label  # where the server stored them: the record goes beside them
        (folder / f"{label}.json").write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")


def matching_query(url: str, texture: np.ndarray, label: str, tries: int = 6) -> tuple[bytes, dict]:
    """A new shot of the cake that the server identifies as `label`, and the answer."""
    import requests

    answer: dict = {}
    for seed in range(500, 500 + tries):
        data = shot(texture, seed)
        r = requests.post(url + "/match", headers={"Authorization": f"Bearer {TOKEN}"},
                          files={"file": ("IMG_2041.jpg", data, "image/jpeg")}, timeout=120)
        answer = r.json()
        if answer.get("status") == "matched" and answer.get("label") == label:
            return data, answer
    raise SystemExit(f"no shot of {label} was matched in {tries} tries; last answer: {json.dumps(answer, ensure_ascii=False)[:600]}")


def browser(profile: str):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--hide-scrollbars", "--lang=zh-CN"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN,zh"})
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": PHONE[0], "height": PHONE[1], "pixelRatio": 1.0}})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def save(driver, path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
    time.sleep(0.3)
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)


def photograph_page(url: str, query: Path, label: str, out_dir: Path) -> tuple[list[Path], bool]:
    """Identify `query` on the page in Chinese, save; switch to English, save. Also: was a record shown?"""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    profile = tempfile.mkdtemp(prefix="teaprint-chromium-")
    driver = browser(profile)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url + "/")
        wait.until(ec.visibility_of_element_located((By.ID, "token"))).send_keys(TOKEN)
        driver.find_element(By.ID, "query-file").send_keys(str(query))
        driver.find_element(By.ID, "identify").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), label))
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#matches figure img')].every(i => i.complete && i.naturalWidth > 0)"))
        record_shown = driver.find_element(By.ID, "record").is_displayed()
        written = [out_dir / "web-page.zh-CN.png", out_dir / "web-page.png"]
        save(driver, written[0])
        Select(driver.find_element(By.ID, "lang")).select_by_value("en")
        wait.until(ec.text_to_be_present_in_element((By.ID, "answer-detail"), "confidence"))
        save(driver, written[1])
        return written, record_shown
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--model", type=Path, default=REPO / "pipeline" / "data" / "models" / "teaprint-encoder.keras")
    parser.add_argument("--expect-record", action="store_true", help="fail unless the page shows the matched cake's record")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"{args.model}: no such model (the picture must show the shipped model's answers)")
    root = Path(tempfile.mkdtemp(prefix="teaprint-screenshot-"))
    config = root / "config.yaml"
    config.write_text(f"model:\n  path: {args.model.resolve()}\n", encoding="utf-8")
    proc, port, log = start_server(root, config)
    url = f"http://127.0.0.1:{port}"
    try:
        textures = sources()
        register(url, root, textures)
        label, index, _ = CAKES[0]
        data, answer = matching_query(url, textures[index], label)
        query = root / "IMG_2041.jpg"
        query.write_bytes(data)
        written, record_shown = photograph_page(url, query, label, args.out_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({
        "status": answer["status"], "label": answer["label"], "confidence": answer["confidence"],
        "similarities": [m["similarity"] for m in answer["matches"][:3]], "matched_labels": [m["label"] for m in answer["matches"][:3]],
        "model": answer["model"]["id"], "record_shown": record_shown, "written": [str(p) for p in written],
    }, ensure_ascii=False))
    if args.expect_record and not record_shown:
        print("the page showed no record for the matched cake", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
