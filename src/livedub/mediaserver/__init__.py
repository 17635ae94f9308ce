"""The embedded RTMP media server: Debian's nginx + libnginx-mod-rtmp, run with a generated config."""

from livedub.mediaserver.nginx import NginxRtmpServer, RtmpServerConfig

__all__ = ["NginxRtmpServer", "RtmpServerConfig"]
