"""DeepL translator against a mock HTTP transport (no network)."""

from __future__ import annotations

import json

import httpx
import pytest

from livedub.dubbing.translate import DeepLTranslator, TranslationError

pytestmark = pytest.mark.unit


def make(handler) -> DeepLTranslator:  # type: ignore[no-untyped-def]
    return DeepLTranslator("secret-key", "https://deepl.test/v2/translate", transport=httpx.MockTransport(handler))


def test_sends_the_key_and_languages_and_returns_the_translation() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"translations": [{"detected_source_language": "ES", "text": "Thank you."}]})

    assert make(handler).translate("Gracias.", "es", "en") == "Thank you."
    request = seen[0]
    assert request.url == "https://deepl.test/v2/translate"
    assert request.headers["Authorization"] == "DeepL-Auth-Key secret-key"
    # English targets need a regional variant.
    assert json.loads(request.content) == {"text": ["Gracias."], "source_lang": "ES", "target_lang": "EN-US"}


@pytest.mark.parametrize(("status", "retryable"), [(403, False), (456, False), (429, True), (503, True)])
def test_http_errors_become_translation_errors(status: int, retryable: bool) -> None:
    translator = make(lambda request: httpx.Response(status, text="nope"))
    with pytest.raises(TranslationError) as info:
        translator.translate("Hello.", "en", "es")
    assert info.value.retryable is retryable
    assert str(status) in str(info.value)


def test_malformed_body_and_connection_errors() -> None:
    with pytest.raises(TranslationError, match="unexpected body"):
        make(lambda request: httpx.Response(200, json={"oops": []})).translate("Hello.", "en", "es")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TranslationError) as info:
        make(refuse).translate("Hello.", "en", "es")
    assert info.value.retryable


def test_empty_text_and_unsupported_pairs_make_no_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    translator = make(handler)
    assert translator.translate("  ", "en", "es") == ""
    with pytest.raises(TranslationError):
        translator.translate("Hello.", "en", "xx")


def test_a_key_is_required() -> None:
    with pytest.raises(ValueError, match="DEEPL_API_KEY"):
        DeepLTranslator("")
