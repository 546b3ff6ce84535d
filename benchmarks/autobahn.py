"""Run the Autobahn|Testsuite fuzzing client against a WebSocket echo server and summarise.

The server under test must echo every message back (text as text, binary as binary).

    python benchmarks/autobahn.py ws://127.0.0.1:9001              # all cases but 9/12/13
    python benchmarks/autobahn.py ws://127.0.0.1:9001 --cases all  # everything
    python benchmarks/autobahn.py --serve websockets               # start an echo server too
    python benchmarks/autobahn.py --serve uvicorn-wsproto --cases all

``--serve`` starts one of the reference echo servers in this file on a free port of
127.0.0.1 (in a child process of this interpreter, so run it with the project's .venv that
has websockets, wsproto and uvicorn): ``websockets`` (``websockets.asyncio.server.serve``),
``uvicorn-websockets`` or ``uvicorn-wsproto`` (uvicorn hosting a tiny ASGI echo app with
``--ws websockets`` / ``--ws wsproto``). All three accept messages up to 32 MiB (the 9.*
cases send 16 MiB) and negotiate permessage-deflate (the 12.*/13.* cases need it).

The test suite itself (``wstest``, autobahntestsuite 25.10.1 on PyPI) is Python 2.7 code:
it does not import on Python 3 (``from _version import __version__``: ModuleNotFoundError)
and its wheel declares no dependencies; under Python 2.7, pip pulls Twisted 19.10,
autobahn 0.10.9 and the rest. The machine's pyenv has 2.7.18, so (about one minute)::

    PY27=/root/.pyenv/versions/2.7.18/bin/python
    $PY27 -m pip install --target /tmp/py27-venvtool 'virtualenv<20.22'
    PYTHONPATH=/tmp/py27-venvtool $PY27 -m virtualenv /tmp/autobahn-py27
    /tmp/autobahn-py27/bin/pip install autobahntestsuite==25.10.1

This script finds ``wstest`` through ``--wstest``, ``$WSTEST``, /tmp/autobahn-py27/bin/wstest
or ``PATH``, in that order. Case groups: 1 framing, 2 pings/pongs, 3 reserved bits,
4 opcodes, 5 fragmentation, 6 UTF-8, 7 closing, 9 limits/performance (large messages,
slow on Python servers), 10 misc, 12 and 13 permessage-deflate (slow: hundreds of cases).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

GROUPS_SLOW = ["9.*", "12.*", "13.*"]
BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED"]
MAX_SIZE = 2**25


# ---------------------------------------------------------------------------------------
# Reference echo servers (used with --serve; they need websockets/uvicorn/wsproto).


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("text") is not None:
            await send({"type": "websocket.send", "text": msg["text"]})
        else:
            await send({"type": "websocket.send", "bytes": msg["bytes"]})


def run_echo_server(kind: str, port: int) -> None:
    if kind == "websockets":
        import asyncio

        from websockets.asyncio.server import serve

        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(message)

        async def main() -> None:
            async with serve(echo, "127.0.0.1", port, max_size=MAX_SIZE) as server:
                await server.serve_forever()

        asyncio.run(main())
    else:
        import uvicorn

        uvicorn.run(
            asgi_echo,
            host="127.0.0.1",
            port=port,
            ws=kind.removeprefix("uvicorn-"),
            ws_max_size=MAX_SIZE,
            ws_per_message_deflate=True,
            log_level="warning",
            lifespan="off",
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"echo server did not listen on 127.0.0.1:{port}")


# ---------------------------------------------------------------------------------------


def find_wstest(explicit: str | None) -> str:
    for cand in (explicit, os.environ.get("WSTEST"), "/tmp/autobahn-py27/bin/wstest"):
        if cand and Path(cand).exists():
            return cand
    found = shutil.which("wstest")
    if found:
        return found
    raise SystemExit("wstest not found: see the install steps at the top of this file")


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


def summarise(index: dict[str, Any]) -> tuple[str, dict[str, Counter[str]]]:
    lines = []
    per_group: dict[str, Counter[str]] = {}
    for agent, cases in index.items():
        groups: dict[str, Counter[str]] = defaultdict(Counter)
        secs: dict[str, float] = defaultdict(float)
        bad: list[str] = []
        for cid in sorted(cases, key=case_key):
            res = cases[cid]
            g = cid.split(".")[0]
            groups[g][res["behavior"]] += 1
            secs[g] += res.get("duration", 0) / 1000
            if res["behavior"] != "OK" or res.get("behaviorClose") not in ("OK", "INFORMATIONAL"):
                bad.append(f"{cid} {res['behavior']}/{res.get('behaviorClose')}")
        lines.append(f"\nagent {agent}: {len(cases)} cases\n")
        lines.append("| group | " + " | ".join(BEHAVIORS) + " | case time s |")
        lines.append("|---|" + "---:|" * (len(BEHAVIORS) + 1))
        total: Counter[str] = Counter()
        for g in sorted(groups, key=int):
            total.update(groups[g])
            counts = " | ".join(str(groups[g][b]) for b in BEHAVIORS)
            lines.append(f"| {g} | {counts} | {secs[g]:.1f} |")
        counts = " | ".join(str(total[b]) for b in BEHAVIORS)
        lines.append(f"| all | {counts} | {sum(secs.values()):.1f} |")
        if bad:
            more = f" ... ({len(bad)} in all)" if len(bad) > 60 else ""
            lines.append("\nnot OK (behavior/close): " + ", ".join(bad[:60]) + more)
        per_group = dict(groups)
    return "\n".join(lines), per_group


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url", nargs="?", help="ws:// URL of a running echo server")
    ap.add_argument(
        "--serve",
        choices=["websockets", "uvicorn-websockets", "uvicorn-wsproto"],
        help="start this reference echo server on a free port and test it",
    )
    ap.add_argument(
        "--cases",
        default="fast",
        help="'fast' (all but 9.*, 12.*, 13.*: the default), 'all', or a comma list "
        "of case patterns such as '1.*,6.*'",
    )
    ap.add_argument("--agent", default=None, help="name in the report (default: from --serve)")
    ap.add_argument("--outdir", default=None, help="report folder (default: a temp folder)")
    ap.add_argument("--wstest", default=None, help="path of wstest")
    ap.add_argument("--echo-server", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.echo_server:  # child process mode
        run_echo_server(args.echo_server, args.port)
        return
    if not args.url and not args.serve:
        ap.error("give a ws:// URL or --serve")

    wstest = find_wstest(args.wstest)
    outdir = Path(args.outdir or tempfile.mkdtemp(prefix="autobahn-"))
    outdir.mkdir(parents=True, exist_ok=True)
    child = None
    url = args.url
    if args.serve:
        port = free_port()
        server_log = open(outdir / "server.log", "w")  # noqa: SIM115 (closed with the child)
        child = subprocess.Popen(
            [sys.executable, __file__, "--echo-server", args.serve, "--port", str(port)],
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        wait_port(port)
        url = f"ws://127.0.0.1:{port}"
    agent = args.agent or args.serve or "server"

    if args.cases == "fast":
        cases, exclude = ["*"], GROUPS_SLOW
    elif args.cases == "all":
        cases, exclude = ["*"], []
    else:
        cases, exclude = args.cases.split(","), []

    spec = {
        "outdir": str(outdir / "reports"),
        "servers": [{"agent": agent, "url": url}],
        "cases": cases,
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }
    spec_path = outdir / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    print(f"wstest {wstest}\nspec {spec_path}: cases {cases}, excluded {exclude}\nurl {url}")

    t0 = time.monotonic()
    try:
        with open(outdir / "wstest.log", "w") as log:
            rc = subprocess.call(
                [wstest, "-m", "fuzzingclient", "-s", str(spec_path)],
                cwd=outdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    finally:
        if child is not None:
            child.terminate()
            child.wait(10)
            server_log.close()
    elapsed = time.monotonic() - t0
    index_path = outdir / "reports" / "index.json"
    if rc != 0 or not index_path.exists():
        raise SystemExit(f"wstest exited {rc}; see {outdir / 'wstest.log'}")
    table, _ = summarise(json.loads(index_path.read_text()))
    print(table)
    print(f"\nwall time {elapsed:.0f} s; report {outdir / 'reports' / 'index.html'}")


if __name__ == "__main__":
    main()
