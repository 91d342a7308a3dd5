"""Chinese and English: complete catalogs, the language a browser asks for, the real server's page and errors,
and the real page in headless Chromium switching language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon_support import jpeg_bytes
from test_browser import close_browser, phone_browser
from test_server import PHOTOS, TOKEN, Api, ServerProcess, files  # noqa: F401
from test_server import api, daemon, server, server_config, shared_root  # noqa: F401
from pipeline.i18n import LANGUAGES, catalog, localise_error, pick_language, render_page
from pipeline.intake import CODES

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "pipeline" / "server" / "static" / "index.html"
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_both_catalogs_hold_the_same_keys_and_chinese_is_chinese() -> None:
    en, zh = catalog("en"), catalog("zh-CN")
    for section in ("page", "api"):
        assert set(en[section]) == set(zh[section]), section
        assert all(isinstance(v, str) and v for v in (*en[section].values(), *zh[section].values()))
        for key, text in en[section].items():
            assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", zh[section][key])), key
    untranslated = [k for k, v in zh["page"].items() if not CJK.search(v) and k not in ("http_status", "list_separator", "sentence_end")]
    assert untranslated == []
    assert all(CJK.search(v) for v in zh["api"].values())


def test_every_text_the_page_shows_and_every_api_error_code_has_messages() -> None:
    page = PAGE.read_text(encoding="utf-8")
    keys = set(catalog("en")["page"])
    asked = set(re.findall(r'data-i18n(?:-placeholder|-label)?="(\w+)"', page)) | set(re.findall(r'\bt\("(\w+)"', page))
    assert asked - keys == set(), "the page asks for a message no catalog has"
    quoted = set(re.findall(r'"(\w+)"', page))
    assert keys - quoted == set(), "a catalog message the page never shows"
    # Codes: every error the server and intake can answer with.
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "pipeline" / "server").glob("*.py"))
    codes = set(re.findall(r'ServiceError\(\d+, "(\w+)"', sources)) | set(re.findall(r'error_response\(\d+, "(\w+)"', sources))
    codes |= set(re.findall(r'"error": "(\w+)"', sources)) | set(CODES)
    codes |= {"not_found", "method_not_allowed", "http_error", "all_refused", "timeout", "processing_failed", "worker_crashed", "crashed_daemon"}
    assert len(codes) > 25
    assert codes - set(catalog("zh-CN")["api"]) == set()


@pytest.mark.parametrize("header, expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
    ("zh-TW", "zh-CN"),
    ("zh-Hans-CN", "zh-CN"),
    ("en-US,en;q=0.9", "en"),
    ("fr-FR, en-GB;q=0.7, zh;q=0.5", "en"),
    ("en;q=0.3, zh;q=0.8", "zh-CN"),
    ("de, *;q=0.1", "en"),
    ("zh;q=0, en", "en"),
    ("", "en"),
    (None, "en"),
    ("garbage;;;, ,", "en"),
])
def test_pick_language_follows_accept_language(header: str | None, expected: str) -> None:
    assert pick_language(header) == expected


def test_localised_error_keeps_codes_and_names_the_file() -> None:
    body = {"error": "not_an_image", "message": "IMG_1.jpg: not a recognised image (accepted: JPEG, ...)",
            "result": {"query": "普洱.jpg", "status": "rejected"}}
    zh = localise_error(body, "zh-CN")
    assert zh["error"] == "not_an_image" and zh["result"] == body["result"]
    assert zh["message"] == "普洱.jpg：不是可识别的图片（支持 JPEG、PNG、WebP、BMP、TIFF）。"
    assert localise_error(body, "en") == body
    refused = {"error": "truncated", "message": "no photo registered: a.jpg: truncated JPEG",
               "failed": [{"file": "a.jpg", "error": "truncated", "message": "a.jpg: truncated JPEG"}]}
    zh = localise_error(refused, "zh-CN")
    assert zh["failed"][0]["message"] == "a.jpg：图片不完整（文件被截断）。"
    assert zh["message"] == "没有登记任何照片：a.jpg：图片不完整（文件被截断）。"
    assert localise_error({"error": "brand_new_code", "message": "x"}, "zh-CN")["message"] == "x"


def test_render_page_inlines_every_catalog_safely() -> None:
    page = render_page(PAGE.read_text(encoding="utf-8"), "zh-CN")
    assert page.startswith("<!doctype html>") and '<html lang="zh-CN">' in page
    block = re.search(r'<script id="i18n" type="application/json">(.*?)</script>', page, re.S)
    assert block is not None and "</" not in block.group(1)
    assert "识别茶饼" in block.group(1) and "Identify a cake" in block.group(1)
    for language in LANGUAGES:
        assert f'"{language}"' in block.group(1)


def test_the_server_answers_in_the_language_asked(api: Api, server: ServerProcess) -> None:  # noqa: F811
    import requests

    page = requests.get(server.url + "/", headers={"Accept-Language": "zh-CN,zh;q=0.9"}, timeout=30)
    assert page.headers["Content-Language"] == "zh-CN" and '<html lang="zh-CN">' in page.text and "识别茶饼" in page.text
    assert "Accept-Language" in page.headers["Vary"]
    english = requests.get(server.url + "/", headers={"Accept-Language": "en-GB"}, timeout=30)
    assert '<html lang="en">' in english.text

    broken = files(("破损.jpg", b"definitely not a photo"))
    zh = api.call("POST", "/match", files=[("file", broken[0][1])], headers={"Accept-Language": "zh-CN"})
    assert zh.status_code == 415 and zh.json()["error"] == "not_an_image"
    assert zh.json()["message"] == "破损.jpg：不是可识别的图片（支持 JPEG、PNG、WebP、BMP、TIFF）。"
    assert zh.headers["Content-Language"] == "zh-CN" and int(zh.headers["Content-Length"]) == len(zh.content)
    en = api.call("POST", "/match", files=[("file", broken[0][1])], headers={"Accept-Language": "en-US"})
    assert en.json()["error"] == "not_an_image" and "not a recognised image" in en.json()["message"]
    unauthorized = api.call("GET", "/status", token="wrong-token-0123456789", headers={"Accept-Language": "zh"})
    assert unauthorized.status_code == 401 and unauthorized.json()["message"] == "缺少访问令牌或令牌错误。"
    assert unauthorized.headers["WWW-Authenticate"] == "Bearer"


def test_the_page_follows_the_browser_language_and_switches(api: Api, server: ServerProcess, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    api.call("POST", "/catalog", expect=201, files=files(("jingmai2016-a.jpg", jpeg_bytes(PHOTOS[40]))), data={"label": "景迈-2016"})
    api.call("PUT", "/records/{label}", expect=200, at={"label": "景迈-2016"},
             json={"名称": "景迈古树春饼", "年份": "2016年", "生产商": "景迈山茶厂", "重量": "357克", "仓位": "B-12"})
    query = tmp_path / "照片.jpg"
    query.write_bytes(jpeg_bytes(PHOTOS[40]))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a photo")
    browser = phone_browser(languages="zh-CN,zh")
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(server.url + "/")
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "h2[data-i18n=identify_title]"), "识别茶饼"))
        assert browser.find_element(By.ID, "identify").text == "识别"
        assert browser.execute_script("return document.documentElement.lang") == "zh-CN"
        wait.until(ec.visibility_of_element_located((By.ID, "token"))).send_keys(TOKEN)
        picker = browser.find_element(By.ID, "query-file")
        picker.send_keys(str(broken))
        browser.find_element(By.ID, "identify").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "无法识别"))
        assert "不是可识别的图片" in browser.find_element(By.ID, "answer-detail").text
        picker.send_keys(str(query))
        browser.find_element(By.ID, "identify").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "verdict"), "景迈-2016"))
        assert browser.find_element(By.ID, "verdict").text == "景迈古树春饼 · 景迈-2016"  # the record's name
        assert "置信度" in browser.find_element(By.ID, "answer-detail").text
        assert "您的照片" in browser.find_elements(By.CSS_SELECTOR, "#matches figure")[0].text
        card = browser.find_element(By.ID, "record")
        assert card.is_displayed() and "茶饼档案" in card.text
        for shown in ("名称\n景迈古树春饼", "年份\n2016", "生产商\n景迈山茶厂", "重量\n357 克", "仓位\nB-12", "此茶饼首次核验"):
            assert shown in card.text, (shown, card.text)

        Select(browser.find_element(By.ID, "lang")).select_by_value("en")
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "h2[data-i18n=identify_title]"), "Identify a cake"))
        assert "confidence" in browser.find_element(By.ID, "answer-detail").text  # the answer shown is said again
        assert "your photo" in browser.find_elements(By.CSS_SELECTOR, "#matches figure")[0].text
        card = browser.find_element(By.ID, "record").text
        for shown in ("About this cake", "Name\n景迈古树春饼", "Producer\n景迈山茶厂", "Weight\n357 g", "First check of this cake"):
            assert shown in card, (shown, card)
        browser.refresh()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "h2[data-i18n=identify_title]"), "Identify a cake"))
        assert browser.execute_script("return document.documentElement.lang") == "en"  # the choice is remembered
    finally:
        close_browser(browser)
