"""The tier policy over typed tiers: each tier of a translator or voice is a stage of its own (its own learnt cost),
and a target offered one tier of a kind always gets it."""

from __future__ import annotations

import pytest

from livedub.deadline import NO_DEADLINE, Deadline
from livedub.dubbing.costs import StageCosts, Work
from livedub.dubbing.tiers import Offer, TierPolicy
from livedub.dubbing.values import (
    TRANSLATION_STAGES,
    VOICE_STAGES,
    Stage,
    TranslatorTier,
    VoiceTier,
    seconds_of,
    step_of,
)

pytestmark = pytest.mark.unit

PRIORS = {Stage.ASR: 0.0, Stage.TRANSLATION: 0.3, Stage.FAST_TRANSLATION: 0.01, Stage.TTS: 0.4, Stage.FAST_TTS: 0.01}
WORK = Work(5.0, 75)


def test_each_tier_is_a_stage_and_the_wire_sees_its_step() -> None:
    assert Stage.of_translator(TranslatorTier.FAST) is Stage.FAST_TRANSLATION == "translation_fast"
    assert Stage.of_voice(VoiceTier.FAST) is Stage.FAST_TTS == "tts_fast"
    assert (step_of(Stage.FAST_TTS), step_of(Stage.FAST_TRANSLATION), step_of("timeout")) == (
        "tts",
        "translation",
        "timeout",
    )
    # A stopped main translator, then its stand-in: the main one's time, as the wire has always reported.
    assert seconds_of({"translation": 0.5, "translation_fast": 0.1}, TRANSLATION_STAGES) == 0.5
    assert seconds_of({"tts_fast": 0.2}, VOICE_STAGES) == 0.2 and seconds_of({}, VOICE_STAGES) == 0.0


def test_a_target_offered_one_tier_gets_it_whatever_the_time() -> None:
    policy = TierPolicy(StageCosts(priors=PRIORS))
    late = Deadline.after(0.01)
    only_main = Offer()
    assert policy.translator(WORK, late, only_main) is TranslatorTier.MAIN
    assert policy.voice(WORK, WORK, late, only_main) is VoiceTier.USUAL
    assert only_main.cheapest_path() == (Stage.ASR, Stage.TRANSLATION, Stage.TTS, Stage.FIT)


def test_the_stand_ins_are_chosen_when_the_time_is_short_and_not_otherwise() -> None:
    policy = TierPolicy(StageCosts(priors=PRIORS))
    offer = Offer.of(fast_translator=True, fast_voice=True)
    assert offer.cheapest_path() == (Stage.ASR, Stage.FAST_TRANSLATION, Stage.FAST_TTS, Stage.FIT)
    assert policy.translator(WORK, NO_DEADLINE, offer) is TranslatorTier.MAIN
    assert policy.voice(WORK, WORK, NO_DEADLINE, offer) is VoiceTier.USUAL
    short = Deadline.after(0.5)
    assert policy.translator(WORK, short, offer) is TranslatorTier.FAST
    assert policy.voice(WORK, WORK, short, offer) is VoiceTier.FAST
    assert policy.cheapest_after_asr(WORK, offer) == pytest.approx(0.01 * 5 + 0.01 * 5 + 0.0 * 5)
