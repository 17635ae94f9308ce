"""Which translator and which voice a phrase gets: the best ones that its deadline and the stream's backlog afford.

The tiers are ranked by what a listener loses in them. Measured on 20 held-out English prompts dubbed into Spanish
(Whisper base on the dub, against human Spanish recordings; issue #17):

    tier                         ASR-BLEU   dub heard back (WER vs its own text)
    LLM + Kokoro                 19.7       19.7 %  (jf_nezumi, picked by speaker matching)
    LLM + SVOX Pico              22.3        5.4 %
    LLM + espeak-ng              10.2       56 %
    Apertium + Kokoro             6.6       20.2 %

The words matter most (Apertium costs 13 points, more than any voice), so the main translator is kept whenever it
can be on time with the cheapest voice after it, and the natural voice comes second: it speaks when time is left
once the words are there. Each step up over the cheapest way must also leave the work queued behind it on time: its
extra seconds delay the phrases waiting for a thread (`Deadline.affords`, fed by the scheduler's slack).

A step up is decided on its *likely* cost (average plus the learnt overrun of slow runs) where a cheaper stand-in
exists: a dub past its deadline loses the whole phrase, the stand-in only some quality.
"""

from __future__ import annotations

from dataclasses import dataclass

from livedub.deadline import Deadline
from livedub.dubbing.costs import StageCosts, Work
from livedub.dubbing.values import Stage, TranslatorTier, VoiceTier


@dataclass(frozen=True)
class Offer:
    """The tiers that serve one target, best first: its translators (a fast one where a translator registered as
    the stand-in serves the pair) and its voices (a fast one where a voice registered as the language's stand-in
    differs from the usual voice). The cheapest of each is the last."""

    translators: tuple[TranslatorTier, ...] = (TranslatorTier.MAIN,)
    voices: tuple[VoiceTier, ...] = (VoiceTier.USUAL,)

    @classmethod
    def of(cls, *, fast_translator: bool, fast_voice: bool) -> Offer:
        return cls(
            (TranslatorTier.MAIN, TranslatorTier.FAST) if fast_translator else (TranslatorTier.MAIN,),
            (VoiceTier.USUAL, VoiceTier.FAST) if fast_voice else (VoiceTier.USUAL,),
        )

    @property
    def cheapest_translator(self) -> TranslatorTier:
        return self.translators[-1]

    @property
    def cheapest_voice(self) -> VoiceTier:
        return self.voices[-1]

    def cheapest_path(self) -> tuple[Stage, ...]:
        """The cheapest way through the stages for this target."""
        return (Stage.ASR, Stage.of_translator(self.cheapest_translator), *voice_path(self.cheapest_voice))


def voice_path(tier: VoiceTier) -> tuple[Stage, ...]:
    """The stages after the words in a voice of `tier`."""
    return Stage.of_voice(tier), Stage.FIT


@dataclass(frozen=True)
class TierPolicy:
    """Decides per target, among the tiers its `Offer` holds: the main or the fast translator, then the usual or
    the fast voice. A target offered one tier of a kind always gets it."""

    costs: StageCosts

    def translator(
        self,
        work: Work,
        deadline: Deadline,
        offer: Offer,
        *,
        later_s: float = 0.0,
        share: float = 1.0,
        stoppable: bool = False,
    ) -> TranslatorTier:
        """The main translator (LLM) when it is likely on time with the cheapest voice after it and `later_s` (the
        cheapest work of the targets still to come) after that; always when there is no stand-in. `share`: the part
        of the dub due by the deadline (a dub spoken in chunks: its first clause; the rest is due as it plays).
        `stoppable`: the main translator is stopped if its first clause is late and the stand-in says the phrase
        (a dub in chunks): then its average cost is enough, with the stand-in's likely cost kept in reserve."""
        fast = offer.cheapest_translator
        if fast is TranslatorTier.MAIN:
            return TranslatorTier.MAIN
        main_stage, fast_stage = Stage.of_translator(TranslatorTier.MAIN), Stage.of_translator(fast)
        voice = voice_path(offer.cheapest_voice)
        voice_s = self.costs.expected(voice, work)
        main_s = (self.costs.expected if stoppable else self.costs.likely_max)((main_stage,), work)
        reserve_s = self.costs.likely_max((fast_stage, *voice), work) if stoppable else 0.0
        extra_s = main_s - self.costs.expected((fast_stage,), work)
        affords = deadline.affords(share * (main_s + voice_s) + reserve_s + later_s, extra_s)
        return TranslatorTier.MAIN if affords else fast

    def voice(self, usual: Work, fast: Work, deadline: Deadline, offer: Offer, *, later_s: float = 0.0) -> VoiceTier:
        """The usual (natural) voice when it is likely on time on the dub its pace predicts (`usual`), with `later_s`
        left for the targets still to come; always when there is no fast voice."""
        stand_in = offer.cheapest_voice
        if stand_in is VoiceTier.USUAL:
            return VoiceTier.USUAL
        usual_s = self.costs.likely_max(voice_path(VoiceTier.USUAL), usual)
        extra_s = usual_s - self.costs.expected(voice_path(stand_in), fast)
        return VoiceTier.USUAL if deadline.affords(usual_s + later_s, extra_s) else stand_in

    def voice_in_chunks(
        self,
        usual: Work,
        fast: Work,
        translator: TranslatorTier,
        deadline: Deadline,
        offer: Offer,
        *,
        share: float,
        later_s: float = 0.0,
    ) -> VoiceTier:
        """For a dub spoken clause by clause as `translator` makes the words (chosen before they are known, on the
        dub's predicted length): the usual voice when its first clause (`share` of the dub) is likely out by the
        deadline and it speaks faster than the dub plays (the later clauses are due as the earlier ones play)."""
        stand_in = offer.cheapest_voice
        if stand_in is VoiceTier.USUAL:
            return VoiceTier.USUAL
        usual_s = self.costs.likely_max(voice_path(VoiceTier.USUAL), usual)
        keeps_pace = usual.dub_s is None or usual_s <= usual.dub_s
        first_s = share * (self.costs.likely_max((Stage.of_translator(translator),), usual) + usual_s)
        extra_s = usual_s - self.costs.expected(voice_path(stand_in), fast)
        return VoiceTier.USUAL if keeps_pace and deadline.affords(first_s + later_s, extra_s) else stand_in

    def cheapest_after_asr(self, work: Work, offer: Offer) -> float:
        """What a target costs at least once the transcript is known (its reserve while earlier targets speak)."""
        return self.costs.expected(offer.cheapest_path()[1:], work)


__all__ = ["Offer", "TierPolicy", "voice_path"]
