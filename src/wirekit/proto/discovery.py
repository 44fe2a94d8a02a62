"""Service discovery messages and the listener's registry (sans-I/O).

An announcer multicasts one datagram every ``interval`` seconds and a ``bye`` when it stops::

    {"v": 1, "kind": "announce", "name": "api", "port": 8080, "ttl": 15, "instance": "a1b2..."}
    {"v": 1, "kind": "bye", "name": "api", "port": 8080, "instance": "a1b2..."}

The host is the datagram's source address. A listener keeps each (instance, name) until
``ttl`` seconds pass without an announcement, then reports it gone.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from ..errors import BadMessage

VERSION = 1
MAX_DATAGRAM = 1024
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class Announcement:
    kind: str  # "announce" | "bye"
    name: str
    port: int
    instance: str
    ttl: float = 15.0

    def encode(self) -> bytes:
        body: dict[str, object] = {
            "v": VERSION,
            "kind": self.kind,
            "name": self.name,
            "port": self.port,
            "instance": self.instance,
        }
        if self.kind == "announce":
            body["ttl"] = self.ttl
        return json.dumps(body, separators=(",", ":")).encode()


def decode(datagram: bytes) -> Announcement:
    """Parse one datagram; :class:`BadMessage` for anything that is not a valid announcement."""
    if len(datagram) > MAX_DATAGRAM:
        raise BadMessage(f"announcement of {len(datagram)} bytes exceeds {MAX_DATAGRAM}")
    try:
        body = json.loads(datagram)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage(f"announcement is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise BadMessage("not a version-1 announcement")
    kind, name, port = body.get("kind"), body.get("name"), body.get("port")
    instance, ttl = body.get("instance"), body.get("ttl", 15.0)
    if kind not in ("announce", "bye"):
        raise BadMessage(f"unknown announcement kind {kind!r}")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise BadMessage("announcement name must be 1-64 characters")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise BadMessage("announcement port must be 1-65535")
    if not isinstance(instance, str) or not 0 < len(instance) <= MAX_NAME:
        raise BadMessage("announcement instance must be 1-64 characters")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= 3600:
        raise BadMessage("announcement ttl must be in (0, 3600]")
    return Announcement(kind, name, port, instance, float(ttl))


class Change(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    host: str
    port: int
    instance: str
    expires: float


@dataclass(frozen=True, slots=True)
class ServiceChange:
    change: Change
    service: Service
    reason: str  # "announce" | "bye" | "expired"


class Registry:
    """Services currently alive, bounded in size (oldest expiry evicted first)."""

    def __init__(self, max_services: int = 4096) -> None:
        self.max_services = max_services
        self._services: dict[tuple[str, str, int], Service] = {}

    def services(self) -> list[Service]:
        return sorted(self._services.values(), key=lambda s: (s.name, s.host, s.port))

    def handle(self, ann: Announcement, host: str, now: float) -> ServiceChange | None:
        """Apply an announcement from ``host``. Returns a change when one happened."""
        key = (ann.instance, ann.name, ann.port)
        known = self._services.get(key)
        if ann.kind == "bye":
            if known is None:
                return None
            del self._services[key]
            return ServiceChange(Change.DOWN, known, "bye")
        service = Service(ann.name, host, ann.port, ann.instance, now + ann.ttl)
        self._services[key] = service
        if len(self._services) > self.max_services:
            oldest = min(self._services, key=lambda k: self._services[k].expires)
            del self._services[oldest]
        if known is None or known.host != host:
            return ServiceChange(Change.UP, service, "announce")
        return None

    def get_timer(self) -> float | None:
        return min((s.expires for s in self._services.values()), default=None)

    def handle_timer(self, now: float) -> list[ServiceChange]:
        gone = [k for k, s in self._services.items() if s.expires <= now]
        return [ServiceChange(Change.DOWN, self._services.pop(k), "expired") for k in gone]
