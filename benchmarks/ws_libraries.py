"""Measure the two sans-I/O WebSocket protocol libraries Nessen could build on, server side.

Candidates: ``wsproto`` (``wsproto.connection.Connection``, post-handshake) and the sans-I/O
layer of ``websockets`` (``websockets.protocol.Protocol(Side.SERVER, state=State.OPEN)``).

Run (from the repository root, after
``python3 -m venv .venv && .venv/bin/pip install -e '.[test]' websockets==17.4 wsproto==1.3.2``)::

    taskset -c 1 .venv/bin/python benchmarks/ws_libraries.py             # ~2 minutes
    taskset -c 1 .venv/bin/python benchmarks/ws_libraries.py --rounds 3  # a quick look

What it does:

- parse: masked client frames fed to a fresh server connection object, messages/s until
  complete messages (``str`` for text, ``bytes`` for binary) are in the server's hands;
- serialize: server messages to the bytes to write, messages/s;
- memory: tracemalloc bytes retained per connection object, 10,000 objects in OPEN state;
- safety: pass/fail facts (zip bomb, invalid UTF-8, protocol errors, frame size limit).

The same work for both: each library sits behind a small adapter, the one a server would
have, that returns complete messages. wsproto yields partial messages (one event per frame
or per received chunk), so its adapter joins them; websockets' sans-I/O layer yields
frames and leaves UTF-8 decoding to its asyncio layer, so its adapter decodes text (with an
incremental decoder across fragments) and fails the connection with 1007 on invalid UTF-8,
as ``websockets.asyncio`` does. wsproto has no message size limit, so its adapter counts
bytes and closes with 1009 past 1 MiB, the limit websockets is given. The safety table
shows the library alone and the library behind its adapter.

Timing: each workload runs the candidates alternately (A B, then B A in the next round, for
``--rounds`` rounds), each measurement repeats the workload for at least ``--min-time``
seconds, and the medians are printed. Pin it to one core (``taskset -c 1``) on a shared
machine so that load affects both alike.
"""

from __future__ import annotations

import argparse
import codecs
import gc
import os
import platform
import random
import statistics
import struct
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
import wsproto
from websockets.extensions.permessage_deflate import PerMessageDeflate as WsDeflate
from websockets.frames import Opcode as WsOp
from websockets.protocol import Protocol, Side, State
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate as WpDeflate

MAX_MESSAGE = 2**20  # 1 MiB, the server's message limit in every workload
UTF8Decoder = codecs.getincrementaldecoder("utf-8")

# ---------------------------------------------------------------------------------------
# Client frames (what a browser sends): masked, optionally compressed (RFC 7692).


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    masked: bool = True,
    key: bytes = b"\x37\xfa\x21\x3d",
) -> bytes:
    head = bytearray([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0)])
    head[0] |= opcode
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 2**16:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if not masked:
        return bytes(head) + payload
    return bytes(head) + key + _mask(payload, key)


class ClientDeflater:
    """A client's permessage-deflate encoder, context takeover on, 15-bit window."""

    def __init__(self, wbits: int = 15) -> None:
        self.c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)

    def compress(self, data: bytes) -> bytes:
        out = self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


# ---------------------------------------------------------------------------------------
# Adapters: what a server would wrap around each library to get complete messages.


@dataclass
class Closed:
    code: int
    reason: str = ""


class WsprotoServer:
    name = "wsproto"

    def __init__(
        self,
        deflate: bool = False,
        offer: str = "permessage-deflate",
        max_message: int | None = MAX_MESSAGE,
    ) -> None:
        exts = []
        if deflate:
            ext = WpDeflate()
            ext.accept(offer)  # what the handshake does on the server side
            exts.append(ext)
        self.conn = Connection(ConnectionType.SERVER, extensions=exts)
        self.max_message = max_message
        self.parts: list[Any] = []
        self.size = 0
        self.out: list[bytes] = []
        self.closed: Closed | None = None

    def receive(self, data: bytes) -> list[Any]:
        if self.closed is not None:
            return []
        self.conn.receive_data(data)
        msgs: list[Any] = []
        for ev in self.conn.events():
            if isinstance(ev, Message):
                if self.max_message is not None:
                    self.size += len(ev.data)
                    if self.size > self.max_message:
                        self.fail(1009, "message too big")
                        break
                if ev.message_finished:
                    if self.parts:
                        self.parts.append(ev.data)
                        sep = "" if isinstance(ev, TextMessage) else b""
                        msgs.append(sep.join(self.parts))
                        self.parts = []
                    else:
                        msgs.append(ev.data)
                    self.size = 0
                else:
                    self.parts.append(ev.data)
            elif isinstance(ev, CloseConnection):
                self.closed = Closed(ev.code, ev.reason or "")
                if self.conn.state.name == "REMOTE_CLOSING":  # the peer closed
                    self.out.append(self.conn.send(ev.response()))
                elif self.conn.state.name == "OPEN":  # a parse error: fail with its code
                    self.out.append(self.conn.send(CloseConnection(ev.code, ev.reason)))
                msgs.append(self.closed)
                break
            elif isinstance(ev, Ping):
                self.out.append(self.conn.send(ev.response()))
        return msgs

    def fail(self, code: int, reason: str) -> None:
        self.closed = Closed(code, reason)
        self.out.append(self.conn.send(CloseConnection(code=code, reason=reason)))

    def send_text(self, text: str) -> bytes:
        return self.conn.send(TextMessage(data=text))

    def send_binary(self, data: bytes) -> bytes:
        return self.conn.send(BytesMessage(data=data))


class WebsocketsServer:
    name = "websockets"

    def __init__(
        self,
        deflate: bool = False,
        wbits: int = 15,
        compress_settings: dict[str, int] | None = None,
        max_size: Any = (MAX_MESSAGE, None),
        validate_utf8: bool = True,
    ) -> None:
        self.p = Protocol(Side.SERVER, state=State.OPEN, max_size=max_size)
        if deflate:
            self.p.extensions = [WsDeflate(False, False, wbits, wbits, compress_settings)]
        self.validate_utf8 = validate_utf8
        self.parts: list[Any] = []
        self.decoder: Any = None
        self.text = False
        self.out: list[bytes] = []
        self.closed: Closed | None = None

    def receive(self, data: bytes) -> list[Any]:
        p = self.p
        if self.closed is not None:
            return []
        p.receive_data(data)
        msgs: list[Any] = []
        try:
            for f in p.events_received():
                op = f.opcode
                if op is WsOp.TEXT:
                    if f.fin:
                        msgs.append(self._text(f.data))
                    else:
                        self.text = True
                        self.decoder = UTF8Decoder()
                        self.parts = [self._text_part(f.data, False)]
                elif op is WsOp.BINARY:
                    if f.fin:
                        msgs.append(f.data)
                    else:
                        self.text = False
                        self.parts = [f.data]
                elif op is WsOp.CONT:
                    if self.text:
                        self.parts.append(self._text_part(f.data, f.fin))
                    else:
                        self.parts.append(f.data)
                    if f.fin:
                        sep = "" if self.text and self.validate_utf8 else b""
                        msgs.append(sep.join(self.parts))
                        self.parts = []
                elif op is WsOp.CLOSE:
                    break
        except UnicodeDecodeError as exc:
            # What websockets.asyncio does: fail the connection with 1007.
            p.fail(1007, f"{exc.reason} at position {exc.start}")
        if p.close_sent is not None and self.closed is None:
            self.closed = Closed(p.close_sent.code, p.close_sent.reason)
            msgs.append(self.closed)
        self.out.extend(p.data_to_send())
        return msgs

    def _text(self, data: bytes) -> str | bytes:
        if self.validate_utf8:
            return data.decode()
        return data

    def _text_part(self, data: bytes, final: bool) -> str | bytes:
        if self.validate_utf8:
            return self.decoder.decode(data, final)
        return data

    def send_text(self, text: str) -> list[bytes]:
        self.p.send_text(text.encode())
        return self.p.data_to_send()

    def send_binary(self, data: bytes) -> list[bytes]:
        self.p.send_binary(data)
        return self.p.data_to_send()


LIBS: dict[str, Callable[..., Any]] = {"wsproto": WsprotoServer, "websockets": WebsocketsServer}

# ---------------------------------------------------------------------------------------
# Workloads


@dataclass
class Workload:
    name: str
    kind: str  # "parse" or "serialize"
    n: int  # messages per run
    run: dict[str, Callable[[], int]] = field(default_factory=dict)


def text32(i: int) -> bytes:
    return (f'{{"seq":{i:08d},"op":"tick!"}}' + " " * 32)[:32].encode()


def json_text(i: int, size: int = 4096) -> bytes:
    # Compressible text: a JSON array of similar records (about 5:1 with deflate).
    rng = random.Random(i)
    items = []
    while sum(map(len, items)) < size:
        items.append(
            f'{{"id":{rng.randrange(10**6)},"user":"user{rng.randrange(1000)}",'
            f'"status":"{rng.choice(["active", "idle", "away"])}","score":{rng.random():.4f}}}'
        )
    return ("[" + ",".join(items) + "]").encode()[:size]


def parse_workload(
    name: str,
    frames: list[bytes],
    n_msgs: int,
    *,
    batch: bool,
    deflate: bool,
    check: Callable[[list[Any]], None],
) -> Workload:
    chunks = [b"".join(frames)] if batch else frames
    wl = Workload(name, "parse", n_msgs)
    for lib, cls in LIBS.items():

        def run(cls: Any = cls) -> int:
            server = cls(deflate=deflate)
            recv = server.receive
            count = 0
            for chunk in chunks:
                count += len(recv(chunk))
            return count

        # Verify once, outside the timing, that the adapter yields the right messages.
        server = cls(deflate=deflate)
        got: list[Any] = []
        for chunk in chunks:
            got.extend(server.receive(chunk))
        if len(got) != n_msgs:
            raise SystemExit(f"{lib} {name}: {len(got)} messages, expected {n_msgs}")
        check(got)
        wl.run[lib] = run
    return wl


def serialize_workload(name: str, n: int, deflate: bool, text: bool, payload: Any) -> Workload:
    wl = Workload(name, "serialize", n)
    for lib, cls in LIBS.items():

        def run(cls: Any = cls) -> int:
            server = cls(deflate=deflate)
            send = server.send_text if text else server.send_binary
            for _ in range(n):
                send(payload)
            return n

        wl.run[lib] = run
    return wl


def build_workloads() -> list[Workload]:
    wls = []
    n = 1000
    texts = [text32(i) for i in range(n)]
    want_text = [t.decode() for t in texts]

    def eq_text(got: list[Any], want: list[str] = want_text) -> None:
        assert got == want, "text messages differ"

    frames = [client_frame(0x1, t) for t in texts]
    wls.append(
        parse_workload(
            "32 B text, 1000 per buffer", frames, n, batch=True, deflate=False, check=eq_text
        )
    )
    wls.append(
        parse_workload(
            "32 B text, one per receive", frames, n, batch=False, deflate=False, check=eq_text
        )
    )

    nb = 50
    rng = random.Random(1)
    blobs = [rng.randbytes(65536) for _ in range(nb)]

    def eq_bin(got: list[Any]) -> None:
        assert [bytes(g) for g in got] == blobs, "binary messages differ"

    bframes = [client_frame(0x2, b) for b in blobs]
    wls.append(
        parse_workload(
            "64 KiB binary, one per receive", bframes, nb, batch=False, deflate=False, check=eq_bin
        )
    )

    # Same messages split into 4 fragments of 16 KiB (browsers fragment large messages).
    fr = []
    for b in blobs:
        for j in range(4):
            op = 0x2 if j == 0 else 0x0
            fr.append(client_frame(op, b[j * 16384 : (j + 1) * 16384], fin=j == 3))
    fragmented = [b"".join(fr[i * 4 : (i + 1) * 4]) for i in range(nb)]
    wls.append(
        parse_workload(
            "64 KiB binary in 4 fragments, one message per receive",
            fragmented,
            nb,
            batch=False,
            deflate=False,
            check=eq_bin,
        )
    )

    # permessage-deflate, client context takeover, 15-bit windows.
    d = ClientDeflater()
    dframes = [client_frame(0x1, d.compress(t), rsv1=True) for t in texts]
    wls.append(
        parse_workload(
            "deflate: 32 B text, 1000 per buffer",
            dframes,
            n,
            batch=True,
            deflate=True,
            check=eq_text,
        )
    )
    nj = 200
    jsons = [json_text(i) for i in range(nj)]
    want_json = [j.decode() for j in jsons]

    def eq_json(got: list[Any]) -> None:
        assert got == want_json, "json messages differ"

    d = ClientDeflater()
    jframes = [client_frame(0x1, d.compress(j), rsv1=True) for j in jsons]
    ratio = sum(map(len, jsons)) / sum(map(len, jframes))
    wls.append(
        parse_workload(
            f"deflate: 4 KiB JSON text ({ratio:.1f}:1), one per receive",
            jframes,
            nj,
            batch=False,
            deflate=True,
            check=eq_json,
        )
    )

    s32 = text32(7).decode()
    wls.append(serialize_workload("32 B text", 1000, False, True, s32))
    wls.append(serialize_workload("64 KiB binary", 200, False, False, blobs[0]))
    wls.append(serialize_workload("deflate: 32 B text", 1000, True, True, s32))
    wls.append(serialize_workload("deflate: 4 KiB JSON text", 200, True, True, want_json[0]))
    return wls


def time_one(fn: Callable[[], int], min_time: float) -> float:
    """Messages per second: repeat fn until min_time has passed."""
    fn()  # warm up
    msgs = 0
    t0 = time.perf_counter()
    while True:
        msgs += fn()
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return msgs / dt


def measure(wls: list[Workload], rounds: int, min_time: float) -> dict[tuple[str, str], float]:
    results: dict[tuple[str, str], float] = {}
    names = list(LIBS)
    for wl in wls:
        samples: dict[str, list[float]] = {lib: [] for lib in names}
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for lib in order:
                gc.collect()
                samples[lib].append(time_one(wl.run[lib], min_time))
        for lib in names:
            results[(wl.name, lib)] = statistics.median(samples[lib])
        print(
            f"  {wl.kind:9s} {wl.name}: "
            + ", ".join(f"{lib} {results[(wl.name, lib)]:,.0f}/s" for lib in names),
            file=sys.stderr,
        )
    return results


# ---------------------------------------------------------------------------------------
# Memory per connection


def per_connection_bytes(factory: Callable[[], Any], n: int, warm: Callable[[Any], None]) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    conns = []
    for _ in range(n):
        c = factory()
        warm(c)
        conns.append(c)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del conns
    gc.collect()
    return (after - before) // n


def memory_rows(n: int) -> list[tuple[str, dict[str, int]]]:
    msg = client_frame(0x1, ClientDeflater().compress(b'{"hello":"world"}'), rsv1=True)

    def idle(c: Any) -> None:
        pass

    def exchange(c: Any) -> None:
        # One compressed message in, one out: both zlib contexts now exist in both libraries.
        assert c.receive(msg) == ['{"hello":"world"}']
        c.send_text("hi there")

    offer12 = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    cases: list[tuple[str, dict[str, Callable[[], Any]], Callable[[Any], None]]] = [
        (
            "no extension, idle",
            {"wsproto": WsprotoServer, "websockets": WebsocketsServer},
            idle,
        ),
        (
            "permessage-deflate (15-bit windows), idle",
            {
                "wsproto": lambda: WsprotoServer(deflate=True),
                "websockets": lambda: WebsocketsServer(deflate=True),
            },
            idle,
        ),
        (
            "permessage-deflate (15-bit), after 1 message in + 1 out",
            {
                "wsproto": lambda: WsprotoServer(deflate=True),
                "websockets": lambda: WebsocketsServer(deflate=True),
            },
            exchange,
        ),
        (
            "permessage-deflate (12-bit windows), after 1 in + 1 out",
            {
                "wsproto": lambda: WsprotoServer(deflate=True, offer=offer12),
                "websockets": lambda: WebsocketsServer(deflate=True, wbits=12),
            },
            exchange,
        ),
        (
            "  same, websockets' server default memLevel=5 (wsproto: no knob)",
            {
                "wsproto": lambda: WsprotoServer(deflate=True, offer=offer12),
                "websockets": lambda: WebsocketsServer(
                    deflate=True, wbits=12, compress_settings={"memLevel": 5}
                ),
            },
            exchange,
        ),
    ]
    rows = []
    for label, factories, warm in cases:
        row = {}
        for lib in LIBS:
            row[lib] = per_connection_bytes(factories[lib], n, warm)
        rows.append((label, row))
        print(f"  memory {label}: {row}", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------
# Safety facts


def _feed(server: Any, chunks: list[bytes]) -> tuple[list[Any], Closed | None]:
    got: list[Any] = []
    for c in chunks:
        got.extend(m for m in server.receive(c) if not isinstance(m, Closed))
        if server.closed is not None:
            break
    return got, server.closed


def _lib_alone(lib: str, **kw: Any) -> Any:
    """The library with no adapter checks: wsproto without the size count, websockets
    without UTF-8 decoding."""
    if lib == "wsproto":
        return WsprotoServer(max_message=None, **kw)
    return WebsocketsServer(validate_utf8=False, **kw)


def zip_bomb(lib: str, adapter: bool, inflated: int, chunk: int) -> tuple[str, float]:
    d = ClientDeflater()
    comp = d.compress(b"\x00" * inflated)
    frame = client_frame(0x2, comp, rsv1=True)
    chunks = [frame[i : i + chunk] for i in range(0, len(frame), chunk)]
    gc.collect()
    tracemalloc.start()
    server = LIBS[lib](deflate=True) if adapter else _lib_alone(lib, deflate=True)
    tracemalloc.reset_peak()
    got, closed = _feed(server, chunks)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    delivered = sum(len(m) for m in got)
    if closed is not None:
        verdict = f"closed {closed.code}"
    else:
        verdict = f"no close, delivered {delivered / 2**20:.0f} MiB"
    return verdict, peak / 2**20


def safety_rows(bomb_mib: int) -> list[tuple[str, dict[str, str]]]:
    rows: list[tuple[str, dict[str, str]]] = []

    # Zip bomb: a frame of ~100 KiB inflating to bomb_mib MiB, max message 1 MiB.
    inflated = bomb_mib * 2**20
    comp_len = len(client_frame(0x2, ClientDeflater().compress(b"\x00" * inflated), rsv1=True))
    for adapter, chunk in ((False, 65536), (True, 65536), (True, 1024)):
        row = {}
        for lib in LIBS:
            verdict, peak = zip_bomb(lib, adapter, inflated, chunk)
            ok = verdict.startswith("closed 1009") and peak < 8
            row[lib] = f"{'PASS' if ok else 'FAIL'}: {verdict}, peak {peak:.1f} MiB"
        who = "with adapter" if adapter else "library alone"
        rows.append(
            (
                f"zip bomb: {comp_len // 1024} KiB frame -> {bomb_mib} MiB, limit 1 MiB, "
                f"fed in {chunk // 1024} KiB reads ({who})",
                row,
            )
        )

    def close_code(lib: str, adapter: bool, chunks: list[bytes], **kw: Any) -> tuple[Any, Any]:
        server = LIBS[lib](**kw) if adapter else _lib_alone(lib, **kw)
        got, closed = _feed(server, chunks)
        return got, (closed.code if closed else None)

    # Invalid UTF-8.
    bad = client_frame(0x1, b"Hello-\xc0\xaf-world")
    split_ok = [client_frame(0x1, b"caf\xc3", fin=False), client_frame(0x0, b"\xa9!", fin=True)]
    # Fragment 1 is a valid prefix; fragment 2 continues it into a UTF-16 surrogate (invalid).
    split_bad = [
        client_frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed", fin=False),
        client_frame(0x0, b"\xa0\x80edited", fin=True),
    ]
    # Invalid in the first fragment already: fail fast (Autobahn 6.4.x) or at the end.
    early_bad = [
        client_frame(0x1, b"ok\xf4\x90\x80\x80", fin=False),
        client_frame(0x0, b"more", fin=False),
    ]
    for adapter in (False, True):
        who = "with adapter" if adapter else "library alone"
        for label, chunks, want in [
            ("invalid UTF-8 in one text frame -> 1007", [bad], 1007),
            ("invalid UTF-8 split across 2 fragments -> 1007", split_bad, 1007),
            ("invalid UTF-8 in 1st fragment, message unfinished -> 1007 at once", early_bad, 1007),
            ("valid UTF-8 char split across fragments -> accepted", split_ok, None),
        ]:
            row = {}
            for lib in LIBS:
                got, code = close_code(lib, adapter, chunks)
                if lib == "websockets" and not adapter:
                    # Its sans-I/O layer hands text frames over as bytes, undecoded.
                    verdict = "n/a" if want is None else ("PASS" if code == want else "FAIL")
                    row[lib] = f"{verdict}: close={code}, no UTF-8 check in Protocol"
                elif want is None:
                    ok = code is None and got == ["caf\xe9!"]
                    row[lib] = f"{'PASS' if ok else 'FAIL'}: {got!r} close={code}"
                else:
                    row[lib] = f"{'PASS' if code == want else 'FAIL'}: close={code}"
            rows.append((f"{label} ({who})", row))

    # Protocol errors (the library's own checks; the adapters add nothing here).
    cases = [
        ("unmasked client frame -> 1002", [client_frame(0x1, b"hi", masked=False)], {}),
        ("RSV2 set -> 1002", [client_frame(0x1, b"hi", rsv2=True)], {}),
        ("RSV1 set, no extension -> 1002", [client_frame(0x1, b"hi", rsv1=True)], {}),
        ("fragmented ping (FIN=0) -> 1002", [client_frame(0x9, b"hi", fin=False)], {}),
        ("ping with 126-byte payload -> 1002", [client_frame(0x9, b"x" * 126)], {}),
        ("close with 126-byte payload -> 1002", [client_frame(0x8, b"\x03\xe8" + b"x" * 124)], {}),
        ("reserved opcode 0x3 -> 1002", [client_frame(0x3, b"hi")], {}),
        ("continuation with no message -> 1002", [client_frame(0x0, b"hi")], {}),
    ]
    for label, chunks, kw in cases:
        row = {}
        for lib in LIBS:
            _, code = close_code(lib, True, chunks, **kw)
            row[lib] = f"{'PASS' if code == 1002 else 'FAIL'}: close={code}"
        rows.append((label, row))

    # Size limits.
    big = client_frame(0x2, b"x" * (2 * MAX_MESSAGE))
    row = {}
    for lib in LIBS:
        _, code = close_code(lib, False, [big])
        row[lib] = f"{'PASS' if code == 1009 else 'FAIL'}: close={code}"
    rows.append(("2 MiB message, limit 1 MiB -> 1009 (library alone)", row))
    frag = [client_frame(0x2 if i == 0 else 0x0, b"x" * 2**18, fin=i == 7) for i in range(8)]
    row = {}
    for lib in LIBS:
        _, code = close_code(lib, True, frag)
        row[lib] = f"{'PASS' if code == 1009 else 'FAIL'}: close={code}"
    rows.append(("2 MiB in 8 fragments of 256 KiB, limit 1 MiB -> 1009 (with adapter)", row))
    # Separate max frame size: websockets takes max_size=(message, fragment).
    mid = client_frame(0x2, b"x" * 100_000)
    ws = WebsocketsServer(max_size=(MAX_MESSAGE, 65536))
    _, closed = _feed(ws, [mid])
    row = {
        "wsproto": "FAIL: no frame size setting (Connection takes none)",
        "websockets": f"{'PASS' if closed and closed.code == 1009 else 'FAIL'}: "
        f"max_size=(1 MiB, 64 KiB), 100 kB frame -> close={closed.code if closed else None}",
    }
    rows.append(("separate max frame size", row))
    return rows


# ---------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]], right: int = 1) -> str:
    out = ["| " + " | ".join(headers) + " |"]
    out.append("|" + "|".join("---" if i < right else "---:" for i in range(len(headers))) + "|")
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.25, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--bomb-mib", type=int, default=100)
    args = ap.parse_args()

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"python {platform.python_version()}, wsproto {wsproto.__version__}, "
        f"websockets {websockets.version.version}, zlib {zlib.ZLIB_RUNTIME_VERSION}, "
        f"CPUs allowed {cpus}, {args.rounds} rounds (order alternating), medians"
    )
    wls = build_workloads()
    res = measure(wls, args.rounds, args.min_time)
    for kind in ("parse", "serialize"):
        rows = []
        for wl in wls:
            if wl.kind != kind:
                continue
            a, b = res[(wl.name, "wsproto")], res[(wl.name, "websockets")]
            rows.append([wl.name, f"{a:,.0f}", f"{b:,.0f}", f"{b / a:.2f}"])
        print(f"\n{kind} (messages/s, median of {args.rounds})\n")
        print(table(["workload", "wsproto", "websockets", "websockets / wsproto"], rows))

    mem = memory_rows(args.connections)
    print(f"\nmemory per connection object (tracemalloc, {args.connections:,} objects)\n")
    print(
        table(
            ["state", "wsproto", "websockets"],
            [[label, f"{r['wsproto']:,} B", f"{r['websockets']:,} B"] for label, r in mem],
        )
    )

    safety = safety_rows(args.bomb_mib)
    print("\nsafety (pass/fail facts)\n")
    print(
        table(
            ["check", "wsproto", "websockets"],
            [[label, r["wsproto"], r["websockets"]] for label, r in safety],
            right=3,
        )
    )


if __name__ == "__main__":
    main()
