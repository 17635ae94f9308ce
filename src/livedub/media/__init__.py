"""The media-service: ingest -> segment -> STS -> align -> mux -> publish, one worker per stream."""
