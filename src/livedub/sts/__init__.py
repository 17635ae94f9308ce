"""The STS (speech-to-speech) service: ASR -> translation -> TTS per fragment, over Socket.IO."""
