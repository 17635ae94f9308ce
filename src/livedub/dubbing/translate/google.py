"""Google Cloud Translation (Basic, v2 REST) over HTTP (needs GOOGLE_API_KEY).

POST {url}?key=KEY  {"q": text, "source": "en", "target": "fr", "format": "text"}
-> {"data": {"translations": [{"translatedText": "..."}]}}

Glossary terms are protected with markup: the text goes as `format: html`, each term replaced by
`<span translate="no">required translation</span>` (left untranslated), and the answer is turned back into text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import httpx

from livedub.dubbing import glossary
from livedub.dubbing.interfaces import NO_CONTEXT, TranslationContext
from livedub.dubbing.translate.base import TranslationError
from livedub.dubbing.translate.registry import TranslatorCapabilities, TranslatorSpec, register

# Google's v2 takes plain ISO 639-1 codes; these are some of the languages it translates (its own list is longer).
_LANGUAGES = frozenset({"ar", "de", "en", "es", "fr", "hi", "it", "ja", "ko", "nl", "pl", "pt", "ru", "tr", "uk", "zh"})


_KEEP = re.compile(r'<span translate="no">(.*?)</span>', re.DOTALL)


class GoogleTranslator:
    name = "google"
    capabilities = TranslatorCapabilities(languages=_LANGUAGES)

    def __init__(
        self,
        api_key: str,
        api_url: str = "https://translation.googleapis.com/language/translate/v2",
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the google translator needs GOOGLE_API_KEY")
        self.api_url = api_url
        self._key = api_key
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def supports(self, source: str, target: str) -> bool:
        return self.capabilities.supports(source, target)

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        if not self.supports(source, target):
            raise TranslationError(f"google: unsupported pair {source}->{target}")
        if not text.strip():
            return ""
        # format "text": the answer is plain text (the default, "html", escapes apostrophes and the like).
        payload = {"q": text, "source": source, "target": target, "format": "text"}
        marked = glossary.find(text, context.glossary)
        if marked:
            parts, last = [], 0
            for match in marked:
                kept = html.escape(match.translation, quote=False)
                parts += [html.escape(text[last : match.start], quote=False), f'<span translate="no">{kept}</span>']
                last = match.end
            parts.append(html.escape(text[last:], quote=False))
            payload.update(q="".join(parts), format="html")
        answer = self._post(payload)
        if marked:  # back from html: the kept terms unwrapped, entities decoded
            answer = html.unescape(_KEEP.sub(lambda m: m.group(1), answer))
        return answer

    def _post(self, payload: dict[str, str]) -> str:
        try:
            response = self._client.post(self.api_url, params={"key": self._key}, json=payload)
        except httpx.HTTPError as exc:
            raise TranslationError(f"google request failed: {type(exc).__name__}: {exc}", retryable=True) from exc
        if response.status_code != 200:
            # 429 (quota per minute) and 5xx are worth retrying; 400 (bad request, bad key) and 403 (forbidden,
            # daily quota, API not enabled) are not.
            retryable = response.status_code == 429 or response.status_code >= 500
            raise TranslationError(f"google answered HTTP {response.status_code}: {response.text[:200]}", retryable)
        try:
            translations = response.json()["data"]["translations"]
            return " ".join(str(t["translatedText"]) for t in translations).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise TranslationError(f"google answered an unexpected body: {response.text[:200]}") from exc

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class GoogleSettings:
    api_key: str = ""
    api_url: str = "https://translation.googleapis.com/language/translate/v2"


register(
    TranslatorSpec(
        "google",
        GoogleTranslator.capabilities,
        GoogleSettings,
        build=lambda settings: GoogleTranslator(settings.api_key, settings.api_url),
    )
)
