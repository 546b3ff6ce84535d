"""A long, steady upload against ``nessen serve`` (issue 13, section 7: BODY_TIMEOUT).

Serves this module's ``runtime`` (one route that reads the whole request content and
answers with its size and SHA-256) with ``MAX_BODY_SIZE`` raised and every other setting
at its default, then sends ``--size`` bytes at ``--rate`` bytes per second (64 KiB pieces
on a fixed schedule) and prints the answer, the time it took and the server's log lines
for the request. By hand, not part of ``make test`` (the default run takes ~100 s):

    .venv/bin/python benchmarks/slow_upload.py                    # 100 MB at 1 MB/s
    .venv/bin/python benchmarks/slow_upload.py --src /tmp/before/src  # another checkout
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from nessen import Request, Response, Runtime

ROOT = Path(__file__).resolve().parents[1]
PIECE = 64 * 1024

runtime = Runtime()


@runtime.route.post("/upload")
async def upload(ctx: Request) -> Response:
    body = ctx.body
    return Response.json({"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000_000, help="bytes to upload")
    parser.add_argument("--rate", type=int, default=1_000_000, help="bytes per second")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the nessen src/ to serve")
    args = parser.parse_args()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{args.src}{os.pathsep}{ROOT}",
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_FORMAT": "json",
        "MAX_BODY_SIZE": str(args.size * 2),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "nessen", "serve", "benchmarks.slow_upload:runtime"],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    listening = threading.Event()
    address: list[tuple[str, int]] = []

    def follow() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            lines.append(line.rstrip("\n"))
            found = re.search(r"Nessen running on http://([0-9.]+):(\d+)", line)
            if found:
                address.append((found.group(1), int(found.group(2))))
                listening.set()

    threading.Thread(target=follow, daemon=True).start()
    try:
        if not listening.wait(20.0):
            print("the server did not start", file=sys.stderr)
            return 1
        return _upload(address[0], args.size, args.rate, lines)
    finally:
        server.terminate()
        server.wait(30.0)


def _upload(address: tuple[str, int], size: int, rate: int, lines: list[str]) -> int:
    piece = bytes(range(256)) * (PIECE // 256)
    digest = hashlib.sha256()
    with socket.create_connection(address) as sock:
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        started = time.monotonic()
        sent = 0
        answer = b""
        sock.setblocking(False)
        while sent < size:
            data = piece[: min(PIECE, size - sent)]
            sock.setblocking(True)
            try:
                sock.sendall(data)
            except OSError as exc:  # the server cut the upload
                print(f"send failed after {sent} bytes, {time.monotonic() - started:.1f} s: {exc}")
                break
            digest.update(data)
            sent += len(data)
            due = started + sent / rate  # a fixed schedule: no drift from late wake-ups
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)  # an early answer (408) ends the upload
                if answer:
                    break
            except BlockingIOError:
                pass
            time.sleep(max(0.0, due - time.monotonic()))
        sock.setblocking(True)
        sock.settimeout(60.0)
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
    head, _, content = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1") if head else "(no answer)"
    print(f"uploaded {sent} of {size} bytes in {elapsed:.1f} s ({sent / elapsed / 1e6:.2f} MB/s)")
    print(f"answer: {status} {content.decode('latin-1')[:200]}")
    answered = json.loads(content) if content.startswith(b"{") else {}
    if "sha256" in answered:
        match = answered["sha256"] == digest.hexdigest()
        print(f"the server's SHA-256 matches what was sent: {match}")
    time.sleep(0.5)  # let the server's batched log lines reach us
    for line in lines:
        if "nessen.access" in line or "nessen.server" in line:
            print(line)
    return 0 if status.startswith("HTTP/1.1 200") else 1


if __name__ == "__main__":
    sys.exit(main())
