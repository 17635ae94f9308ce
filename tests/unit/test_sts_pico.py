"""SVOX Pico's text is markup: hostile text must reach it as plain words (livedub.dubbing.tts.pico), and its voices are
named and registered like the other backends'."""

from __future__ import annotations

import pytest

from livedub.dubbing.tts import TTS_BACKENDS, PicoTTS
from livedub.dubbing.tts.pico import PicoMarkupOnlyError, sanitise, speakable, voice_of
from livedub.dubbing.tts.registry import fast_voices_of
from livedub.languages import LANGUAGES, VoiceRef
from livedub.sts.backends import voices_of
from livedub.sts.settings import StsSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("hostile", "spoken"),
    [
        ("Hola <speed level='500'>señor</speed>.", "Hola señor ."),
        ('<pitch level="50">Bonjour', "Bonjour"),
        ("<pitch", "pitch"),  # unclosed: its word is read, it cannot act
        ('</speed></pitch><genfile file="/tmp/pwn.wav">hola</genfile>', "hola"),
        ('<play file="/etc/passwd"/> fin', "fin"),
        ("<!-- x --><?xml version='1.0'?>ciao", "ciao"),
        ("&lt;speed level='500'&gt;vite", "vite"),  # decoded, then removed like any tag
        ("<<speed>speed level='9'>>hola", "speed level='9' hola"),  # what is left of a tag is words
        ("Tom & Jerry", "Tom y Jerry"),
        ("a < b > c", "a b c"),
        ("hola\x00<speed level='500'>\x1b[31m\u200badiós", "hola [31m adiós"),
        ("¿Dónde está la estación? Ça va, naïve 😀", "¿Dónde está la estación? Ça va, naïve 😀"),
    ],
)
def test_markup_never_reaches_pico(hostile: str, spoken: str) -> None:
    clean = sanitise(hostile, "es")
    assert clean == spoken
    assert "<" not in clean and ">" not in clean and "&" not in clean and "\x00" not in clean


def test_text_that_is_only_markup_is_a_clear_error_and_blank_text_is_silence() -> None:
    for only_markup in ("<speed level='500'>", "<pitch level='50'></pitch>", "&lt;&gt;", " <> \x00 "):
        with pytest.raises(PicoMarkupOnlyError, match="markup"):
            speakable(only_markup, "fr")
    assert speakable("   ", "fr") == ""
    assert speakable("Et toi & moi", "fr") == "Et toi et moi"


def test_voice_names() -> None:
    assert voice_of("default", "es") == ("es-ES", 1.0)
    assert voice_of("", "fr") == ("fr-FR", 1.0)
    assert voice_of("es-ES+low", "es") == ("es-ES", 0.8)
    assert voice_of("en-GB", "en") == ("en-GB", 1.0)
    with pytest.raises(ValueError, match="does not speak 'ru'"):
        voice_of("default", "ru")
    with pytest.raises(ValueError, match="does not speak 'es'"):
        voice_of("fr-FR", "es")
    with pytest.raises(ValueError, match="variant"):
        voice_of("es-ES+shout", "es")


def test_pico_is_a_backend_that_settings_and_the_table_can_name() -> None:
    assert "pico" in TTS_BACKENDS
    assert PicoTTS.capabilities.speaks("it") and not PicoTTS.capabilities.speaks("ru")
    assert PicoTTS.capabilities.speaking_rate and PicoTTS.sample_rate == 16000
    pinned = StsSettings(STS_TTS_VOICES="es=pico,es=kokoro:jm_kumo,it=pico:it-IT")
    assert voices_of(pinned, "es")[0] == VoiceRef("pico", "es-ES", "female")
    assert voices_of(pinned, "it") == [VoiceRef("pico", "it-IT", "female")]
    # Every Pico voice of the table is one that its language's lingware speaks.
    for code, row in LANGUAGES.items():
        for ref in (*row.voices, *fast_voices_of(code)):
            if ref.backend == "pico":
                voice_of(ref.voice, code)
