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

from livedub.dubbing.costs import StageCosts, Work
from livedub.dubbing.deadline import Deadline

MAIN_TRANSLATION = "translation"
FAST_TRANSLATION = "translation_fast"
USUAL_VOICE = ("tts", "fit")
FAST_VOICE = ("tts_fast", "fit")


@dataclass(frozen=True)
class TierPolicy:
    """Decides per target: the main or the fast translator, then the usual or the fast voice."""

    costs: StageCosts

    def main_translator(
        self,
        work: Work,
        deadline: Deadline,
        *,
        has_fast_translator: bool,
        has_fast_voice: bool,
        later_s: float = 0.0,
        share: float = 1.0,
        stoppable: bool = False,
    ) -> bool:
        """The main translator (LLM) when it is likely on time with the cheapest voice after it and `later_s` (the
        cheapest work of the targets still to come) after that; always when there is no stand-in. `share`: the part
        of the dub due by the deadline (a dub spoken in chunks: its first clause; the rest is due as it plays).
        `stoppable`: the main translator is stopped if its first clause is late and the stand-in says the phrase
        (a dub in chunks): then its average cost is enough, with the stand-in's likely cost kept in reserve."""
        if not has_fast_translator:
            return True
        voice = FAST_VOICE if has_fast_voice else USUAL_VOICE
        voice_s = self.costs.expected(voice, work)
        main_s = (self.costs.expected if stoppable else self.costs.likely_max)((MAIN_TRANSLATION,), work)
        reserve_s = self.costs.likely_max((FAST_TRANSLATION, *voice), work) if stoppable else 0.0
        extra_s = main_s - self.costs.expected((FAST_TRANSLATION,), work)
        return deadline.affords(share * (main_s + voice_s) + reserve_s + later_s, extra_s)

    def usual_voice(
        self, usual: Work, fast: Work, deadline: Deadline, *, has_fast_voice: bool, later_s: float = 0.0
    ) -> bool:
        """The usual (natural) voice when it is likely on time on the dub its pace predicts (`usual`), with `later_s`
        left for the targets still to come; always when there is no fast voice."""
        if not has_fast_voice:
            return True
        usual_s = self.costs.likely_max(USUAL_VOICE, usual)
        extra_s = usual_s - self.costs.expected(FAST_VOICE, fast)
        return deadline.affords(usual_s + later_s, extra_s)

    def usual_voice_in_chunks(
        self,
        usual: Work,
        fast: Work,
        translation: str,
        deadline: Deadline,
        *,
        share: float,
        has_fast_voice: bool,
        later_s: float = 0.0,
    ) -> bool:
        """For a dub spoken clause by clause as `translation` makes the words (chosen before they are known, on the
        dub's predicted length): the usual voice when its first clause (`share` of the dub) is likely out by the
        deadline and it speaks faster than the dub plays (the later clauses are due as the earlier ones play)."""
        if not has_fast_voice:
            return True
        usual_s = self.costs.likely_max(USUAL_VOICE, usual)
        keeps_pace = usual.dub_s is None or usual_s <= usual.dub_s
        first_s = share * (self.costs.likely_max((translation,), usual) + usual_s)
        extra_s = usual_s - self.costs.expected(FAST_VOICE, fast)
        return keeps_pace and deadline.affords(first_s + later_s, extra_s)

    def cheapest_after_asr(self, work: Work, *, has_fast_translator: bool, has_fast_voice: bool) -> float:
        """What a target costs at least once the transcript is known (its reserve while earlier targets speak)."""
        translation = FAST_TRANSLATION if has_fast_translator else MAIN_TRANSLATION
        return self.costs.expected((translation, *(FAST_VOICE if has_fast_voice else USUAL_VOICE)), work)


__all__ = ["FAST_TRANSLATION", "FAST_VOICE", "MAIN_TRANSLATION", "USUAL_VOICE", "TierPolicy"]
