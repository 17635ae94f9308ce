"""Machine translation backends: a local LLM (llama-cpp-python), apertium (Debian CLI), DeepL and Google Cloud
Translation (HTTP). Each declares its `capabilities` (livedub.sts.translate.registry)."""

from livedub.sts.translate.apertium import ApertiumTranslator
from livedub.sts.translate.base import TranslationError, split_sentences
from livedub.sts.translate.deepl import DeepLTranslator
from livedub.sts.translate.google import GoogleTranslator
from livedub.sts.translate.llm import LlmTranslator
from livedub.sts.translate.registry import TRANSLATORS, TranslatorCapabilities

__all__ = [
    "TRANSLATORS",
    "ApertiumTranslator",
    "DeepLTranslator",
    "GoogleTranslator",
    "LlmTranslator",
    "TranslationError",
    "TranslatorCapabilities",
    "split_sentences",
]
