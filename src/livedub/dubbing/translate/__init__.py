"""Machine translation backends: a local LLM (llama-cpp-python), apertium (Debian CLI), DeepL and Google Cloud
Translation (HTTP). Each declares its `capabilities` (livedub.dubbing.translate.registry)."""

from livedub.dubbing.translate.apertium import ApertiumTranslator
from livedub.dubbing.translate.base import TranslationError, split_sentences
from livedub.dubbing.translate.deepl import DeepLTranslator
from livedub.dubbing.translate.google import GoogleTranslator
from livedub.dubbing.translate.llm import LlmTranslator
from livedub.dubbing.translate.registry import TRANSLATORS, TranslatorCapabilities

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
