"""Two network namespaces joined by a veth pair: a "server" host and another host, for tests of what a peer that is
not on loopback may do. Only the namespaces (and addresses inside them) that the fixture creates are touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class TwoHosts:
    server_ns: str
    other_ns: str
    server_ip: str
    other_ip: str

    def argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, argv: Sequence[str], timeout: float = 30, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(ns, argv), capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]

    def curl(self, ns: str, url: str, *args: str) -> tuple[int, str]:
        """(HTTP status, body) of curl run inside `ns`; status 0 when nothing answered."""
        done = self.run(ns, ["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", *args, url])
        body, _, code = done.stdout.rpartition("\n")
        return int(code or 0), body


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def two_hosts() -> Iterator[TwoHosts]:
    """Set up the two hosts, yield them, tear them down (use with `yield from` in a fixture); skips when this
    machine does not allow network namespaces."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip netns)")
    if os.geteuid() != 0:
        pytest.skip("ip netns needs root")
    tag = uuid.uuid4().hex[:6]
    server, other = f"ld9s{tag}", f"ld9o{tag}"
    octet = int(tag[:2], 16) % 250 + 1
    hosts = TwoHosts(server, other, f"10.209.{octet}.1", f"10.209.{octet}.2")
    created: list[str] = []
    try:
        for ns in (server, other):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        # The veth pair is created inside the server namespace, so no interface ever exists outside the two.
        _ip("-n", server, "link", "add", "v9s", "type", "veth", "peer", "name", "v9o", "netns", other)
        _ip("-n", server, "addr", "add", f"{hosts.server_ip}/24", "dev", "v9s")
        _ip("-n", other, "addr", "add", f"{hosts.other_ip}/24", "dev", "v9o")
        _ip("-n", server, "link", "set", "v9s", "up")
        _ip("-n", other, "link", "set", "v9o", "up")
    except subprocess.CalledProcessError as exc:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"network namespaces are not permitted here: {exc.stderr.strip() or exc}")
    try:
        yield hosts
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
