"""Machine translation backends: a local LLM (llama-cpp-python), apertium (Debian CLI) and DeepL (HTTP)."""

from livedub.sts.translate.apertium import ApertiumTranslator
from livedub.sts.translate.base import TranslationError, split_sentences
from livedub.sts.translate.deepl import DeepLTranslator
from livedub.sts.translate.llm import LlmTranslator

__all__ = ["ApertiumTranslator", "DeepLTranslator", "LlmTranslator", "TranslationError", "split_sentences"]
