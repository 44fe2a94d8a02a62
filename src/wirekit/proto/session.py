"""The session protocol: at-least-once delivery that survives reconnects, without duplicates.

It runs over :class:`~wirekit.proto.framing.LengthPrefixedFramer`. Each frame starts with a type
byte; integers are unsigned big-endian.

=========  =====  =========================================  =================================
frame      type   body                                       direction
=========  =====  =========================================  =================================
HELLO      0x01   session id (16 bytes), u64 acked through   client -> server, first frame
WELCOME    0x02   u64 last sequence the server has           server -> client, answers HELLO
DATA       0x03   u64 sequence, payload                      client -> server
ACK        0x04   u64 sequence (cumulative)                  server -> client
PING       0x05   (empty)                                    either way
PONG       0x06   (empty)                                    answers PING
PUSH       0x07   payload (unsequenced, best effort)         server -> client
=========  =====  =========================================  =================================

The client numbers messages from 1 and keeps every message until it is acknowledged. On each
(re)connect it says HELLO with the highest sequence already acknowledged to it (so a restarted
server that forgot the session knows where the numbering stands); the server answers with the
last sequence it has delivered for that session, the client drops what the server already has
and resends the rest in order. The server delivers a sequence exactly once per session (it
re-acknowledges duplicates without delivering them) and acknowledges only after its handler has
run, so an acknowledged message is never lost.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass

from ..errors import BadMessage, UsageError
from ..limits import DEFAULTS
from .framing import LengthPrefixedFramer
from .heartbeat import Beat, Heartbeat

SESSION_ID_SIZE = 16
_SEQ = 8


class Frame(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    DATA = 3
    ACK = 4
    PING = 5
    PONG = 6
    PUSH = 7


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The server knows this session up to ``last_seq``."""

    last_seq: int


@dataclass(frozen=True, slots=True)
class Acked:
    """Every message up to and including ``seq`` is acknowledged."""

    seq: int


@dataclass(frozen=True, slots=True)
class Pushed:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Received:
    """A new message for the server's handler; acknowledge it with :meth:`ServerSession.ack`."""

    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class PeerDead:
    """Nothing arrived within the heartbeat timeout."""


Event = Welcomed | Acked | Pushed | Received | PeerDead


def _u64(n: int) -> bytes:
    return n.to_bytes(_SEQ, "big")


def _read_u64(body: bytes, what: str) -> int:
    if len(body) < _SEQ:
        raise BadMessage(f"{what} frame too short: {len(body)} bytes")
    return int.from_bytes(body[:_SEQ], "big")


class ClientState(enum.Enum):
    DISCONNECTED = "disconnected"
    HANDSHAKE = "handshake"
    READY = "ready"


class ClientSession:
    """The client side. Keeps unacknowledged messages across any number of connections.

    ``max_unacked`` bounds the outbox: :meth:`send` raises :class:`UsageError` when it is full;
    check :attr:`outbox_full` (the asyncio layer waits for acks instead).
    """

    def __init__(
        self,
        session_id: bytes,
        *,
        max_unacked: int = 1024,
        max_frame: int = DEFAULTS.max_frame,
        ping_interval: float = 15.0,
        ping_timeout: float = 45.0,
    ) -> None:
        if len(session_id) != SESSION_ID_SIZE:
            raise UsageError(f"session id must be {SESSION_ID_SIZE} bytes")
        self.session_id = session_id
        self.max_unacked = max_unacked
        self._max_frame = max_frame
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._framer = LengthPrefixedFramer(max_frame)
        self._outbox: deque[tuple[int, bytes]] = deque()
        self._next_seq = 1
        self._out = bytearray()
        self._heartbeat: Heartbeat | None = None
        self.state = ClientState.DISCONNECTED

    # -- what the caller asks ---------------------------------------------------------------
    @property
    def outbox_full(self) -> bool:
        return len(self._outbox) >= self.max_unacked

    @property
    def unacked(self) -> int:
        return len(self._outbox)

    @property
    def last_sent_seq(self) -> int:
        return self._next_seq - 1

    def send(self, payload: bytes) -> int:
        """Queue ``payload``; returns its sequence number. Sent now if connected."""
        if self.outbox_full:
            raise UsageError(f"outbox full ({self.max_unacked} unacknowledged messages)")
        if len(payload) + 1 + _SEQ > self._max_frame:
            raise UsageError(f"message of {len(payload)} bytes exceeds the frame limit")
        seq = self._next_seq
        self._next_seq += 1
        self._outbox.append((seq, payload))
        if self.state is ClientState.READY:
            self._emit(Frame.DATA, _u64(seq) + payload)
        return seq

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- connection lifecycle -----------------------------------------------------------------
    def connection_made(self, now: float) -> None:
        self._framer = LengthPrefixedFramer(self._max_frame)
        self._out.clear()
        self._heartbeat = Heartbeat(self._ping_interval, self._ping_timeout, now)
        self.state = ClientState.HANDSHAKE
        acked_through = self._outbox[0][0] - 1 if self._outbox else self._next_seq - 1
        self._emit(Frame.HELLO, self.session_id + _u64(acked_through))

    def connection_lost(self) -> None:
        self.state = ClientState.DISCONNECTED
        self._heartbeat = None
        self._out.clear()

    def get_timer(self) -> float | None:
        return self._heartbeat.get_timer() if self._heartbeat else None

    def handle_timer(self, now: float) -> list[Event]:
        if self._heartbeat is None:
            return []
        beat = self._heartbeat.handle_timer(now)
        if beat is Beat.SEND_PING:
            self._emit(Frame.PING, b"")
        elif beat is Beat.PEER_DEAD:
            return [PeerDead()]
        return []

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the server. Raises :class:`~wirekit.errors.PeerError` on garbage."""
        if self._heartbeat is not None:
            self._heartbeat.received(now)
        events: list[Event] = []
        for frame in self._framer.receive_data(data):
            if not frame:
                raise BadMessage("empty frame")
            kind, body = frame[0], frame[1:]
            if kind == Frame.WELCOME and self.state is ClientState.HANDSHAKE:
                last = _read_u64(body, "WELCOME")
                self._drop_through(last)
                self.state = ClientState.READY
                for seq, payload in self._outbox:
                    self._emit(Frame.DATA, _u64(seq) + payload)
                events.append(Welcomed(last))
            elif kind == Frame.ACK and self.state is ClientState.READY:
                seq = _read_u64(body, "ACK")
                if seq >= self._next_seq:
                    raise BadMessage(f"ACK for {seq}, which was never sent")
                self._drop_through(seq)
                events.append(Acked(seq))
            elif kind == Frame.PUSH and self.state is ClientState.READY:
                events.append(Pushed(bytes(body)))
            elif kind == Frame.PING:
                self._emit(Frame.PONG, b"")
            elif kind == Frame.PONG:
                pass
            else:
                raise BadMessage(f"unexpected frame type {kind} in state {self.state.value}")
        return events

    def _drop_through(self, seq: int) -> None:
        outbox = self._outbox
        while outbox and outbox[0][0] <= seq:
            outbox.popleft()

    def _emit(self, kind: Frame, body: bytes) -> None:
        self._out += self._framer.encode(bytes((kind,)) + body)


class SessionTable:
    """Server-wide memory of the last delivered sequence per session, bounded (LRU)."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        self.max_sessions = max_sessions
        self._last: OrderedDict[bytes, int] = OrderedDict()

    def last_seq(self, session_id: bytes) -> int:
        last = self._last.get(session_id, 0)
        if session_id in self._last:
            self._last.move_to_end(session_id)
        return last

    def record(self, session_id: bytes, seq: int) -> None:
        self._last[session_id] = seq
        self._last.move_to_end(session_id)
        while len(self._last) > self.max_sessions:
            self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._last)


class ServerSession:
    """The server side of one connection."""

    def __init__(self, table: SessionTable, *, max_frame: int = DEFAULTS.max_frame) -> None:
        self._table = table
        self._framer = LengthPrefixedFramer(max_frame)
        self._out = bytearray()
        self.session_id: bytes | None = None
        self._expected = 0

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Received]:
        """New messages to hand to the application, in order, each once per session."""
        events: list[Received] = []
        for frame in self._framer.receive_data(data):
            if not frame:
                raise BadMessage("empty frame")
            kind, body = frame[0], frame[1:]
            if kind == Frame.HELLO and self.session_id is None:
                if len(body) != SESSION_ID_SIZE + _SEQ:
                    raise BadMessage("HELLO needs a 16-byte session id and a u64")
                self.session_id = bytes(body[:SESSION_ID_SIZE])
                acked = _read_u64(body[SESSION_ID_SIZE:], "HELLO")
                last = max(self._table.last_seq(self.session_id), acked)
                self._table.record(self.session_id, last)
                self._expected = last + 1
                self._emit(Frame.WELCOME, _u64(last))
            elif kind == Frame.DATA and self.session_id is not None:
                seq = _read_u64(body, "DATA")
                if seq >= self._expected:
                    if seq != self._expected:
                        raise BadMessage(f"DATA {seq} skips ahead of {self._expected}")
                    self._expected += 1
                    events.append(Received(seq, bytes(body[_SEQ:])))
                else:
                    # Already delivered (its ACK was lost): re-acknowledge, do not deliver.
                    self._emit(Frame.ACK, _u64(self._table.last_seq(self.session_id)))
            elif kind == Frame.PING:
                self._emit(Frame.PONG, b"")
            elif kind == Frame.PONG:
                pass
            else:
                raise BadMessage(f"unexpected frame type {kind}")
        return events

    def ack(self, seq: int) -> None:
        """The handler finished with ``seq`` (and everything before it)."""
        if self.session_id is None:
            raise UsageError("ack before HELLO")
        self._table.record(self.session_id, seq)
        self._emit(Frame.ACK, _u64(seq))

    def push(self, payload: bytes) -> None:
        self._emit(Frame.PUSH, payload)

    def ping(self) -> None:
        self._emit(Frame.PING, b"")

    def _emit(self, kind: Frame, body: bytes) -> None:
        self._out += self._framer.encode(bytes((kind,)) + body)
