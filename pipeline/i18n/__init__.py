"""Chinese and English for the phone page and the API's error messages.

The message catalogs are package data (`messages/<lang>.json`), one file per
language, each with two sections: `page` (every text the phone page shows)
and `api` (one line per API error code: the `error` code stays, the
`message` is said in the reader's language). The language is chosen from the
browser's `Accept-Language` (`pick_language`); the page can switch it and
remembers the choice.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "en"
_TAG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$|^\*$")
_PAGE_MARK = "<!--teaprint:i18n-->"


@lru_cache(maxsize=None)
def catalog(language: str) -> Mapping[str, Any]:
    """The message catalog of one of `LANGUAGES` (read once)."""
    if language not in LANGUAGES:
        raise KeyError(f"no messages for {language!r}; have {', '.join(LANGUAGES)}")
    text = resources.files("pipeline.i18n").joinpath("messages", f"{language}.json").read_text(encoding="utf-8")
    return json.loads(text)


def message(language: str, section: str, key: str, **params: Any) -> str:
    """One message with its `{name}` parameters filled; English when the language lacks it."""
    template = catalog(language)[section].get(key) or catalog(DEFAULT_LANGUAGE)[section][key]
    return template.format(**params) if params else template


def pick_language(accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """The supported language a browser asks for most (`Accept-Language`, RFC 9110 q-values).

    Any Chinese (`zh`, `zh-CN`, `zh-Hans`, `zh-TW`...) gets zh-CN, any English
    gets en; `*` or nothing usable gets `default`. Ties keep header order.

    Examples
    --------
    >>> pick_language("zh-CN,zh;q=0.9,en;q=0.8")
    'zh-CN'
    >>> pick_language("fr-FR, en-GB;q=0.7, zh;q=0.5")
    'en'
    """
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not _TAG.match(tag):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, tag))
    for _, _, tag in sorted(ranked):
        found = default if tag == "*" else _supported(tag)
        if found:
            return found
    return default


def _supported(tag: str) -> str | None:
    primary = tag.lower().split("-", 1)[0]
    return next((lang for lang in LANGUAGES if lang.lower().split("-", 1)[0] == primary), None)


def localise_error(body: Mapping[str, Any], language: str) -> dict[str, Any]:
    """An API error body (`{"error", "message", ...}`) with its messages in `language`.

    English keeps the server's own detailed message. Otherwise the code's
    catalog line replaces it, prefixed with the file it concerns (a refused
    match's `result.query`, a refused upload's `file`), and each `failed[]`
    item gets the same treatment; codes without a line keep their message.
    """
    out = dict(body)
    if language == DEFAULT_LANGUAGE or not isinstance(body.get("error"), str):
        return out
    lines = catalog(language)["api"]
    failed = body.get("failed")
    if isinstance(failed, list):
        out["failed"] = [_localise_item(item, lines) for item in failed]
    result = body.get("result")
    file = result.get("query") if isinstance(result, Mapping) else None
    if isinstance(failed, list) and out["failed"] and isinstance(out["failed"][0], Mapping):
        out["message"] = f"{lines['no_photo_registered']}：{out['failed'][0].get('message', '')}"
    elif body["error"] in lines:
        out["message"] = _with_file(file, lines[body["error"]])
    return out


def _localise_item(item: Any, lines: Mapping[str, str]) -> Any:
    if not isinstance(item, Mapping) or item.get("error") not in lines:
        return item
    return {**item, "message": _with_file(item.get("file"), lines[item["error"]])}


def _with_file(file: Any, line: str) -> str:
    return f"{file}：{line}" if isinstance(file, str) and file else line


def render_page(template: str, language: str) -> str:
    """The phone page with every catalog's `page` section inlined and `language` chosen first.

    The page shows English as written if served unrendered; rendered, its
    script translates it and can switch language without a request.
    """
    if language not in LANGUAGES:
        raise KeyError(f"no messages for {language!r}")
    messages = {lang: {"name": catalog(lang)["language_name"], **catalog(lang)["page"]} for lang in LANGUAGES}
    data = json.dumps({"default": language, "messages": messages}, ensure_ascii=False).replace("</", "<\\/")
    block = f'<script id="i18n" type="application/json">{data}</script>'
    page = template.replace(_PAGE_MARK, block, 1)
    return page.replace('<html lang="en">', f'<html lang="{language}">', 1)
