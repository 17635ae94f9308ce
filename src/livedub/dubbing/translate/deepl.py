"""DeepL API translation over HTTP (needs DEEPL_API_KEY).

Glossary terms are protected with XML markup: the text is sent with `tag_handling: xml` and each term replaced by
`<keep>required translation</keep>`, a tag in `ignore_tags` (DeepL leaves its content untranslated); the markup is
taken out of the answer."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import httpx

from livedub.dubbing import glossary
from livedub.dubbing.interfaces import NO_CONTEXT, TranslationContext
from livedub.dubbing.translate.base import TranslationError
from livedub.dubbing.translate.registry import TranslatorCapabilities, TranslatorSpec, register

# DeepL's target codes (it wants a regional variant for English targets); its list is longer.
_KEEP = re.compile(r"<keep>(.*?)</keep>", re.DOTALL)
_TARGET_CODES = {"de": "DE", "en": "EN-US", "es": "ES", "fr": "FR", "it": "IT", "nl": "NL", "pl": "PL", "ru": "RU"}


class DeepLTranslator:
    name = "deepl"
    capabilities = TranslatorCapabilities(languages=frozenset(_TARGET_CODES))

    def __init__(
        self,
        api_key: str,
        api_url: str = "https://api-free.deepl.com/v2/translate",
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the deepl translator needs DEEPL_API_KEY")
        self.api_url = api_url
        self._client = httpx.Client(
            timeout=timeout_s,
            transport=transport,
            headers={"Authorization": f"DeepL-Auth-Key {api_key}"},
        )

    def supports(self, source: str, target: str) -> bool:
        return self.capabilities.supports(source, target)

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        if not self.supports(source, target):
            raise TranslationError(f"deepl: unsupported pair {source}->{target}")
        if not text.strip():
            return ""
        payload: dict[str, object] = {
            "text": [text],
            "source_lang": source.upper(),
            "target_lang": _TARGET_CODES[target],
        }
        marked = glossary.find(text, context.glossary)
        if marked:
            parts, last = [], 0
            for match in marked:
                parts += [
                    html.escape(text[last : match.start], quote=False),
                    f"<keep>{html.escape(match.translation)}</keep>",
                ]
                last = match.end
            parts.append(html.escape(text[last:], quote=False))
            payload.update(text=["".join(parts)], tag_handling="xml", ignore_tags=["keep"])
        answer = self._post(payload)
        if marked:
            answer = html.unescape(_KEEP.sub(lambda m: m.group(1), answer))
        return answer

    def _post(self, payload: dict[str, object]) -> str:
        try:
            response = self._client.post(self.api_url, json=payload)
        except httpx.HTTPError as exc:
            raise TranslationError(f"deepl request failed: {exc}", retryable=True) from exc
        if response.status_code != 200:
            # 429 (too many requests) and 5xx are worth retrying; 403 (bad key) and 456 (quota) are not.
            retryable = response.status_code == 429 or response.status_code >= 500
            raise TranslationError(f"deepl answered HTTP {response.status_code}: {response.text[:200]}", retryable)
        try:
            return " ".join(t["text"] for t in response.json()["translations"]).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise TranslationError(f"deepl answered an unexpected body: {response.text[:200]}") from exc

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class DeepLSettings:
    api_key: str = ""
    api_url: str = "https://api-free.deepl.com/v2/translate"


register(
    TranslatorSpec(
        "deepl",
        DeepLTranslator.capabilities,
        DeepLSettings,
        build=lambda settings: DeepLTranslator(settings.api_key, settings.api_url),
    )
)
