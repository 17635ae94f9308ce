"""The Socket.IO contract between the media-service and the STS service.

Every event payload is a pydantic model defined once here and used by both sides.
Wire-compatible with the seed system's protocol (see docs/protocol.md).
"""

from livedub.protocol.events import *  # noqa: F403
from livedub.protocol.events import __all__  # noqa: F401
