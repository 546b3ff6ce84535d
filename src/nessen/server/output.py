"""What a connection wrote, and how much of it went out: write flow control and SEND_TIMEOUT.

:class:`Output` is the writing side of one connection. The transport pauses the writer as
soon as anything stays queued in it (write buffer limits 0/0) and resumes it once all of
it went to the kernel, so "not paused" means "all handed over": a response is complete,
and reported, at that point. While paused, the send deadline runs; when it passes, the
connection goes on only if the client keeps taking output at ``send_min_rate``, measured
with the kernel's send queue (``SIOCOUTQ``) as well as the transport's, and is otherwise
reset. When the connection ends first, :meth:`Output.unsent_content` says how much of the
last response's content never left the server, so logs and metrics count what went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import sys
import termios
from typing import TYPE_CHECKING, Any

from nessen.http.request import CLIENT_DISCONNECTED, SEND_TIMEOUT

if TYPE_CHECKING:
    from nessen.config import Config

INF = float("inf")


class Output:
    """The writing side of one connection (see the module).

    Attributes:
        paused: Output stays queued in the transport (the kernel's buffer is full).
        deadline: When ``send_timeout`` passes with output queued (``loop.time()``
            seconds; INF when nothing is queued).
        pending: A response fully written whose end is still queued, reported once it
            went out (or was lost): ``(request, response, status, content bytes,
            started)``.
        cut_reason: Why the connection was aborted or lost, once it was.
        tail_content: Content bytes in the last write that carried content.
        tail_after: Bytes written after those (chunk framing, the last chunk).
        unsent: Bytes queued in the transport (and, after a reset, in the kernel) when
            last looked at: when writing paused, when the connection was cut.
    """

    __slots__ = (
        "_behind_queued",
        "_behind_since",
        "_behind_taken",
        "_config",
        "_kernel_discarded",
        "_loop",
        "_transport",
        "_waiter",
        "cut_reason",
        "deadline",
        "paused",
        "pending",
        "tail_after",
        "tail_content",
        "unsent",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, config: Config) -> None:
        self._loop = loop
        self._config = config
        self._transport: Any = None
        self._waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.deadline = INF
        self.pending: tuple[Any, Any, int, int, float] | None = None
        self.cut_reason: str | None = None
        self.tail_content = 0
        self.tail_after = 0
        self.unsent = 0
        self._behind_since = 0.0  # loop.time() when output last started to stay queued
        self._behind_taken = 0  # bytes the client took from the queue since then
        self._behind_queued = 0  # bytes queued for it (ours and the kernel's) at last look
        self._kernel_discarded = False  # reset with SO_LINGER 0: the kernel's queue is lost

    def attach(self, transport: Any, *, tls: bool = False) -> None:
        """Write to ``transport``: paused as soon as anything stays queued in it.

        Over TLS the limits are ``(1, 0)``: a TLS transport compares its buffered size with
        ``>=`` the high-water mark, so a mark of 0 would pause it at every write with
        nothing to resume it. The socket transport under it keeps its own buffer (about
        64 KiB before it stops the TLS layer), which this side does not see: it pauses
        only once that one is full and the next write waits above it. Large bodies are
        therefore written in slices over TLS (``Exchange._write_sliced``), and what a cut
        loses is counted to within about two slices.
        """
        self._transport = transport
        if tls:
            transport.set_write_buffer_limits(1, 0)
        else:
            transport.set_write_buffer_limits(0, 0)

    # --- flow control (the transport's pause_writing and resume_writing) ----------------

    def on_paused(self) -> None:
        """Output stays queued: start the send deadline and the client's rate."""
        self.paused = True
        now = self._loop.time()
        self.deadline = now + self._config.send_timeout
        self._behind_since = now
        self._behind_taken = 0
        transport = self._transport
        if transport is not None:
            self.unsent = transport.get_write_buffer_size()
            self._behind_queued = self.unsent + kernel_queued(transport)

    def on_resumed(self) -> None:
        """All of it went to the kernel: no deadline, nothing unsent."""
        self.paused = False
        self.deadline = INF
        self.unsent = 0

    def wake(self) -> None:
        """Output went out or was lost: a stream waiting in :meth:`drained` goes on."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drained(self) -> None:
        """Wait until what is queued went to the kernel (or the connection ended)."""
        if self.paused:
            self.look()
            waiter = self._waiter = self._loop.create_future()
            await waiter
            self._waiter = None

    def look(self) -> None:
        """Note how many bytes are still queued in the transport (``unsent``)."""
        transport = self._transport
        if transport is not None:
            self.unsent = transport.get_write_buffer_size()

    def hold_report(self, entry: tuple[Any, Any, int, int, float]) -> None:
        """A response is written but its end still queued: report it when it goes out."""
        self.look()
        self.pending = entry

    def take_pending(self) -> tuple[Any, Any, int, int, float] | None:
        """The response held by :meth:`hold_report`, if any, now to be reported."""
        pending, self.pending = self.pending, None
        return pending

    def unsent_content(self, sent: int) -> int:
        """Content bytes of the response being reported that did not leave the server.

        ``unsent`` bytes were queued when the connection ended: in the transport only (at
        most the last write, whose content is ``tail_content``, followed by ``tail_after``
        bytes of framing), or, after a reset that discards the kernel's send queue too
        (``SEND_TIMEOUT``), also there, up to all ``sent`` content bytes (chunk framing in
        that queue is then taken for content: a few bytes per chunk).
        """
        cap = sent if self._kernel_discarded else self.tail_content
        return min(cap, max(0, self.unsent - self.tail_after))

    # --- the end of the connection ------------------------------------------------------

    def lost(self, exc: Exception | None) -> None:
        """The connection ended: a reset or broken pipe means the client went away."""
        self.deadline = INF
        if self.cut_reason is None:
            if exc is not None:
                self.cut_reason = CLIENT_DISCONNECTED
            else:  # our close() flushed what was queued
                self.unsent = 0

    def abort(self, reason: str, *, lost: bool = False) -> None:
        """Abort the connection for ``reason``, noting what output it drops.

        ``lost``: the connection is already gone (what was queued is as last noted).
        """
        if self.cut_reason is None:
            self.cut_reason = reason
        transport = self._transport
        if transport is None:
            return
        if not lost:
            self.unsent = transport.get_write_buffer_size()
        transport.abort()

    def send_deadline_passed(self, *, lost: bool) -> tuple[str, str] | None:
        """``send_timeout`` passed with output queued: ``None`` if the client keeps up.

        The client keeps up when it took some of the queued output since the last check
        and, in all, at least ``send_min_rate`` bytes per second since output began to stay
        queued (nginx's ``send_timeout`` is the first rule; Kestrel's MinResponseDataRate
        the second); the deadline then moves on by ``send_timeout``. Otherwise returns
        the reason (``send_timeout``, ``send_too_slow``) and a detail for the log; the
        caller logs it and calls :meth:`reset`.
        """
        self.deadline = INF
        config = self._config
        transport = self._transport
        reason = "send_timeout"
        detail = f"client took none of our output for {config.send_timeout:g} s (send_timeout)"
        if transport is not None and not lost:
            self.unsent = transport.get_write_buffer_size()
            queued = self.unsent + kernel_queued(transport)
            taken = self._behind_queued - queued
            if taken > 0:
                now = self._loop.time()
                self._behind_queued = queued
                self._behind_taken += taken
                behind = now - self._behind_since
                if self._behind_taken >= config.send_min_rate * behind:
                    self.deadline = now + config.send_timeout
                    return None
                reason = "send_too_slow"
                detail = (
                    f"client took {self._behind_taken} bytes of our output in {behind:.1f} s, "
                    f"below send_min_rate {config.send_min_rate} bytes/s"
                )
        return reason, detail

    def reset(self, *, lost: bool) -> None:
        """Abort for ``SEND_TIMEOUT`` with a reset (``SO_LINGER`` 0), not a close.

        A plain close leaves the kernel sending what it holds to the slow reader for as
        long as it keeps its window open, which is the very resource the deadline is meant
        to take back; the reset drops the kernel's queue too, so it counts as unsent.
        """
        transport = self._transport
        in_kernel = 0
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                in_kernel = kernel_queued(transport)
                with contextlib.suppress(OSError):  # already gone: abort() is enough
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                    self._kernel_discarded = True
        self.abort(SEND_TIMEOUT, lost=lost)
        if self._kernel_discarded:
            self.unsent += in_kernel


_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None
"""The ioctl that reads a TCP socket's unacknowledged send queue (Linux's SIOCOUTQ)."""

_LINGER_RESET = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on with a zero timeout: closing sends RST and drops unsent data."""


def kernel_queued(transport: Any) -> int:
    """Bytes in the kernel's send queue of ``transport``'s socket, not yet acknowledged.

    ``SIOCOUTQ`` (Linux, ``TIOCOUTQ``); 0 where it is not available. With the transport's own
    buffer, it shows a slow reader's progress at once: the kernel wakes a writer only once
    a third of its send buffer (megabytes on a fast link) is free.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or _OUTQ is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0])
    except OSError:
        return 0
