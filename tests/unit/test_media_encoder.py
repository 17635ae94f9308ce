"""One AAC encoder per language, shared by every output of that language (RTMP publishers, the HLS rendition)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from livedub.media.outputs.hls import HlsPresentation, renditions_for
from livedub.media.outputs.publisher import AAC_FRAME, AacEncoder, FlvPublisher

pytestmark = pytest.mark.unit

RATE = 48_000
FRAMES = 50  # about 1 s


def frame(i: int) -> av.AudioFrame:
    t = (np.arange(AAC_FRAME) + i * AAC_FRAME) / RATE
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    pcm = np.repeat(tone[:, None], 2, axis=1)
    out = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
    out.sample_rate = RATE
    out.pts = 4800 + i * AAC_FRAME
    out.time_base = Fraction(1, RATE)
    return out


def audio_packets(path: Path) -> list[tuple[bytes, int | None]]:
    with av.open(str(path)) as container:
        return [(bytes(p), p.pts) for p in container.demux(audio=0) if p.size]


def test_every_output_of_a_language_muxes_the_same_packets_of_one_encoding(tmp_path: Path) -> None:
    encoder = AacEncoder(RATE, 2)
    outs = [FlvPublisher(str(tmp_path / f"{name}.flv"), None, encoder) for name in ("out", "out-es")]
    hls = HlsPresentation(
        tmp_path / "hls", None, RATE, 2, renditions_for("en", ["es"]), shared_encoders={"es": encoder}
    )
    for i in range(FRAMES):
        f = frame(i)
        for out in outs:
            out.write_audio(f)
        hls.write_audio("es", f)
        hls.write_audio("en", f)  # the original rendition: its own encoder
    for out in outs:
        out.close()
    hls.close()

    assert encoder.frames_encoded == FRAMES  # once, not once per output
    assert hls.encoders["es"] is encoder and hls.encoders["en"] is not encoder
    first, second = (audio_packets(tmp_path / f"{name}.flv") for name in ("out", "out-es"))
    assert first == second  # the same packets, flush included
    assert len(first) >= FRAMES  # every frame came out, the encoder's last ones too (flushed once, given to both)
    with av.open(str(tmp_path / "out.flv")) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert samples >= FRAMES * AAC_FRAME
    assert sorted(p.name for p in (tmp_path / "hls").glob("audio_*.m3u8"))  # the HLS renditions were written


def test_a_frame_given_again_is_not_encoded_again_and_each_output_gets_its_own_copies() -> None:
    encoder = AacEncoder(RATE, 1)
    mono = av.AudioFrame.from_ndarray(np.zeros((1, AAC_FRAME), np.int16), format="s16", layout="mono")
    mono.sample_rate, mono.pts, mono.time_base = RATE, 0, Fraction(1, RATE)
    packets = []
    for _ in range(3):  # the encoder delays its first packets: feed until some come out
        fresh = av.AudioFrame.from_ndarray(mono.to_ndarray(), format="s16", layout="mono")
        fresh.sample_rate, fresh.pts, fresh.time_base = RATE, (mono.pts or 0) + AAC_FRAME, Fraction(1, RATE)
        mono = fresh
        packets = encoder.packets(mono)
    again = encoder.packets(mono)
    assert encoder.frames_encoded == 3
    assert packets and [bytes(p) for p in packets] == [bytes(p) for p in again]
    assert [p.pts for p in packets] == [p.pts for p in again]
    assert all(a is not b for a, b in zip(packets, again, strict=True))
    flushed = encoder.packets(None)
    assert [bytes(p) for p in encoder.packets(None)] == [bytes(p) for p in flushed]  # flushed once
