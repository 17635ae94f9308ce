"""Test and benchmark tooling: the speech corpus, the speech-over-music fixture, an ffmpeg publisher and an echo
DubClient.

The product never imports this package (tests/unit/test_layers.py checks it); tests and benches import its modules:
`livedub.testing.corpus`, `livedub.testing.fixture_music`, `livedub.testing.media`.
"""
