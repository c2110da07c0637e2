"""``make conformance``: the official A2A TCK against the mesh runtime, and the gate on its result.

Three systems under test, each running the conformance executor (``tests/conformance``), are
tested at once (the TCK's run time is mostly its own stream timeouts, not CPU):

- ``mesh``: ``slmesh serve tests/conformance``, its default SQLite task store;
- ``replicas``: two replicas on a PostgreSQL database of their own (replica-agnostic tasks),
  behind round-robin TCP proxies this script owns, one for HTTP and one for gRPC; the cards
  advertise the proxies (``SLMESH_PUBLIC_*_URL``), so the TCK (which takes one host) reaches
  either replica with every new connection; push notifications on (the TCK's push tests run
  here, delivered through the shared outbox; ``mesh`` keeps the no-push path);
- ``stock``: the same executor on stock a2a-sdk (:mod:`tests.conformance.stock`), the baseline.

The TCK is the pinned snapshot beside the project (``../shared/a2a-tck``, read-only): it is
copied under ``.slmesh/conformance/`` with a virtualenv of its own. The gate fails when a MUST
or SHOULD requirement fails on ``mesh`` or ``replicas`` (SHOULD failures are only ``xfail`` to
the TCK), except the :data:`WAIVED` ones, each with its reason. ``--doc docs/conformance.md``
writes the report (scores per level and transport beside stock's, every skipped test and why).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from tests.support.procs import ROOT, ServiceProcess, free_port, start_service
from tests.support.proxy import RoundRobinProxy

SPEC_DIR = ROOT / "tests" / "conformance"
DEFAULT_TCK = ROOT.parent / "shared" / "a2a-tck"
WORK = ROOT / ".slmesh" / "conformance"
POSTGRES = "postgresql://127.0.0.1:5432/test"
TARGETS = ("mesh", "replicas", "stock")
GATED = ("mesh", "replicas")
GATED_LEVELS = ("MUST", "SHOULD")
TRANSPORTS = ("agent_card", "jsonrpc", "http_json", "grpc")
LEVELS = ("MUST", "SHOULD", "MAY")
TCK_TIMEOUT_S = 540
CARD = "/.well-known/agent-card.json"

WAIVED = {
    "CORE-HIST-005": (
        "the TCK sends every message of a session with one messageId per prefix "
        "(tck_id('input-required') is session-wide), so its two history messages repeat the "
        "id of the message that opened the task, where A2A says a messageId is 'the unique "
        "identifier of the message' (a2a.proto, Message.message_id); a2a-sdk, stock and mesh "
        "alike, records a message once per messageId (a retried message is not recorded "
        "twice), so the two never reach the history"
    ),
    "CORE-HIST-006": "same cause as CORE-HIST-005 (messageIds reused by the TCK)",
}
"""SHOULD failures the gate accepts, with why: defects of the TCK, not of the runtime."""


@dataclass
class Outcome:
    """One TCK run: its compatibility report, its JUnit results and how long it took."""

    target: str
    seconds: float
    returncode: int
    report: dict = field(default_factory=dict)
    cases: list[dict[str, str]] = field(default_factory=list)
    note: str = ""

    @property
    def totals(self) -> Counter[str]:
        return Counter(c["outcome"] for c in self.cases)

    def failures(self) -> list[str]:
        """Failed MUST/SHOULD requirements the gate does not accept."""
        out = []
        for rid, req in self.report.get("per_requirement", {}).items():
            if req["level"] in GATED_LEVELS and req["status"] == "FAIL" and rid not in WAIVED:
                out.append(f"{rid} ({req['level']}): {'; '.join(req['errors'][:2])}")
        return out

    def waived(self) -> list[str]:
        reqs = self.report.get("per_requirement", {})
        return [rid for rid in WAIVED if reqs.get(rid, {}).get("status") == "FAIL"]

    def scores(self) -> dict[tuple[str, str], Counter[str]]:
        """(level, transport) -> requirement outcomes (PASS / FAIL / SKIPPED) on that transport."""
        table: dict[tuple[str, str], Counter[str]] = {}
        for req in self.report.get("per_requirement", {}).values():
            for transport, status in req["transports"].items():
                table.setdefault((req["level"], transport), Counter())[status] += 1
        return table


# -- the TCK ------------------------------------------------------------------------------


def prepare_tck(source: Path, work: Path) -> tuple[Path, Path, float]:
    """A fresh copy of the TCK and its virtualenv (reused while its pyproject is unchanged);
    returns (copy, venv python, seconds spent installing)."""
    if not (source / "run_tck.py").is_file():
        raise SystemExit(
            f"no A2A TCK at {source}: pass --tck PATH (a2aproject/a2a-tck, branch 1.0-dev)"
        )
    copy, venv = work / "tck", work / "venv"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(
        source, copy, ignore=shutil.ignore_patterns("reports", ".venv", "__pycache__", "*.pyc")
    )
    stamp = venv / ".tck-installed"
    wanted = hashlib.sha256((copy / "pyproject.toml").read_bytes()).hexdigest()
    started = time.monotonic()
    if not (stamp.is_file() and stamp.read_text() == wanted):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(copy)],
            capture_output=True,
            text=True,
        )
        (work / "pip.log").write_text(pip.stdout + pip.stderr)
        if pip.returncode != 0:
            raise SystemExit(f"installing the TCK failed:\n{pip.stdout}{pip.stderr}")
        stamp.write_text(wanted)
    return copy, venv / "bin" / "python", time.monotonic() - started


def run_tck(python: Path, tck: Path, target: str, sut: str, out: Path) -> Outcome:
    """One TCK run against ``sut`` (blocking: run it in a thread), reports under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    command = [
        str(python),
        "run_tck.py",
        "--sut-host",
        sut,
        "--",
        f"--compatibility-report={out / 'compatibility'}",
        f"--junitxml={out / 'junit.xml'}",
        f"--html={out / 'tck.html'}",
        "-p",
        "no:cacheprovider",
    ]
    with open(out / "tck.log", "wb") as log:
        try:
            returncode = subprocess.run(
                command, cwd=tck, stdout=log, stderr=subprocess.STDOUT, timeout=TCK_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = -9
    return _outcome(target, time.monotonic() - started, returncode, out)


def _outcome(target: str, seconds: float, returncode: int, out: Path, note: str = "") -> Outcome:
    outcome = Outcome(target, seconds, returncode, note=note)
    if (out / "compatibility.json").is_file():
        outcome.report = json.loads((out / "compatibility.json").read_text())
    if (out / "junit.xml").is_file():
        outcome.cases = _cases(out / "junit.xml")
    return outcome


def _cases(junit: Path) -> list[dict[str, str]]:
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, reason = "passed", ""
        for child in case:
            if child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome, reason = ("xfailed" if xfail else "skipped"), child.get("message", "")
            elif child.tag in ("failure", "error"):
                outcome, reason = "failed", (child.get("message") or "")[:200]
        cases.append({"test": name, "outcome": outcome, "reason": reason})
    return cases


# -- the systems under test ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def mesh(tmp: Path) -> AsyncIterator[str]:
    proc = await asyncio.to_thread(start_service, SPEC_DIR, tmp)
    try:
        yield proc.http_url
    finally:
        await asyncio.to_thread(proc.terminate)


@contextlib.asynccontextmanager
async def replicas(tmp: Path) -> AsyncIterator[str]:
    """Two replicas on a database of their own, behind one round-robin proxy per port."""
    database = f"slmesh_conformance_{os.getpid()}"
    try:
        admin = await asyncpg.connect(POSTGRES)
    except OSError as exc:
        raise RuntimeError(
            f"the replicated run needs PostgreSQL at {POSTGRES} ({exc}); "
            "--targets mesh,stock leaves it out (the gate then covers one replica only)"
        ) from exc
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    http, grpc_ = RoundRobinProxy(), RoundRobinProxy()
    for proxy in (http, grpc_):
        await proxy.start()
    env = {
        "SLMESH_TASK_STORE": f"postgresql+asyncpg://127.0.0.1:5432/{database}",
        "SLMESH_TASK_EVENTS": "database",
        "SLMESH_PUBLIC_JSONRPC_URL": f"http://localhost:{http.port}/",
        "SLMESH_PUBLIC_HTTP_JSON_URL": f"http://localhost:{http.port}",
        "SLMESH_PUBLIC_GRPC_URL": f"localhost:{grpc_.port}",
        # The TCK keeps one gRPC channel: reconnecting often spreads its calls over both.
        "SLMESH_GRPC_MAX_CONNECTION_AGE_S": "0.5",
        # Push on: the TCK's webhook receiver is plain HTTP on localhost, so exactly that is
        # allowed (the SSRF guard refuses both by default).
        "SLMESH_PUSH_NOTIFICATIONS": "true",
        "SLMESH_PUSH_ALLOW": "127.0.0.1,::1",
        "SLMESH_PUSH_ALLOW_HTTP": "true",
        "SLMESH_PUSH_TIMEOUT_S": "2",
    }
    procs: list[ServiceProcess] = []
    try:
        for i in range(2):
            procs.append(
                await asyncio.to_thread(
                    start_service, SPEC_DIR, tmp, {**env, "SLMESH_REPLICA_ID": f"tck-{i}"}
                )
            )
        http.target_ports = [p.http_port for p in procs]
        grpc_.target_ports = [p.grpc_port for p in procs]
        yield f"http://localhost:{http.port}"
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.terminate)
        for proxy in (http, grpc_):
            await proxy.stop()
        SPREAD["replicas"] = (
            f"TCP connections per replica through the proxies: HTTP "
            f"{sorted(http.per_target.values())}, gRPC {sorted(grpc_.per_target.values())}"
        )
        print(f"replicas: {SPREAD['replicas']}")
        admin = await asyncpg.connect(POSTGRES)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def stock(tmp: Path) -> AsyncIterator[str]:
    http_port, grpc_port = free_port(), free_port()
    url = f"http://localhost:{http_port}"
    proc = await asyncio.to_thread(_spawn_stock, http_port, grpc_port, tmp / "stock.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                card = await asyncio.to_thread(httpx.get, url + CARD, timeout=1)
                if card.status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stock a2a-sdk server did not start; see {tmp / 'stock.log'}")
            await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _spawn_stock(http_port: int, grpc_port: int, log_file: Path) -> subprocess.Popen[bytes]:
    with open(log_file, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.conformance.stock", str(http_port), str(grpc_port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


SPREAD: dict[str, str] = {}
"""How the replicated run's connections spread over its replicas (for the report)."""

SYSTEMS = {"mesh": mesh, "replicas": replicas, "stock": stock}


async def run_target(target: str, python: Path, tck: Path, work: Path) -> Outcome:
    out = work / target
    shutil.rmtree(out, ignore_errors=True)
    (out / "sut").mkdir(parents=True)
    try:
        async with SYSTEMS[target](out / "sut") as url:
            return await asyncio.to_thread(run_tck, python, tck, target, url, out)
    except (OSError, RuntimeError, TimeoutError, asyncpg.PostgresError) as exc:
        return Outcome(target, 0.0, -1, note=f"could not run: {exc}")


# -- the report ------------------------------------------------------------------------------

CARDS = """## Cards every client can dial

A card's gRPC interface URL is `host:port` (`SLMESH_ADVERTISE_HOST` and the gRPC port). A2A's
`AgentInterface.url` asks for an absolute URL and its examples are `https://` URLs, but no gRPC
client dials those: grpc takes a target name (`host:port`, `dns:///host:port`), and the TCK's
gRPC client, like a2a-sdk's `ClientFactory` with a plain `grpc.aio.insecure_channel` factory,
hands the card's URL straight to grpc. The TCK's own SUT (`sut/a2a-python`) advertises
`host:port`; the mesh's former `grpc://host:port` failed every TCK gRPC test ("Misformatted
domain name"). The mesh client still reads `grpc://`, `http://`, `grpcs://` / `https://` (TLS)
and grpc target names such as `dns:///host:port`. A replica behind a proxy or load balancer
advertises its public URLs instead, one setting per binding: `SLMESH_PUBLIC_JSONRPC_URL`,
`SLMESH_PUBLIC_HTTP_JSON_URL`, `SLMESH_PUBLIC_GRPC_URL` (the registry keeps each replica's
own endpoints). The replicated run uses them: its cards name the round-robin proxies, and
`SLMESH_GRPC_MAX_CONNECTION_AGE_S=0.5` makes the TCK's one gRPC channel reconnect, so its
calls reach both replicas too.

Beyond stock a2a-sdk, the mesh answers the card with `Cache-Control: public, max-age=300`
(`SLMESH_CARD_MAX_AGE_S`), `ETag` and `Last-Modified` (304 on `If-None-Match` or
`If-Modified-Since`); a request body in another media type than `application/json` or
`application/a2a+json` gets 415 with ContentTypeNotSupportedError (-32005 on JSON-RPC);
HTTP+JSON answers in the media type the request used; gRPC answers UNIMPLEMENTED for
PushNotificationNotSupported, UnsupportedOperation and VersionNotSupported (A2A 1.0, 5.4) and
refuses an `a2a-version` of another major version."""


def render(outcomes: dict[str, Outcome], install_s: float, wall_s: float) -> str:
    names = [t for t in TARGETS if t in outcomes]
    head = {
        "mesh": "mesh",
        "replicas": "mesh, 2 replicas, push on",
        "stock": "stock a2a-sdk 1.3.0",
    }
    lines = [
        "# A2A conformance",
        "",
        "The official A2A TCK (a2aproject/a2a-tck, branch `1.0-dev`, commit 357c4a8, pinned beside "
        "the project) against the conformance agent (`tests/conformance`: the TCK's scenarios per "
        "messageId prefix) served by the mesh runtime (`slmesh serve`, SQLite store), by two mesh "
        "replicas on a shared PostgreSQL store behind round-robin TCP proxies with push "
        "notifications on (delivered from the shared outbox to the TCK's webhook receiver; the "
        "single mesh keeps the no-push path), and by stock "
        "a2a-sdk 1.3.0 (`DefaultRequestHandler`, in-memory store) serving the same executor and "
        "card. All three from the same run of `python -m tests.conformance.run --doc "
        "docs/conformance.md` (`make conformance` runs the same and gates on it).",
        "",
        "The gate: any failed MUST or SHOULD requirement on the mesh or its replicas fails it "
        "(the TCK itself only marks SHOULD failures `xfail`), except the waived ones below.",
        "",
        "## Summary",
        "",
        "| | " + " | ".join(head[n] for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    summary = {n: outcomes[n].report.get("summary", {}) for n in names}
    for key, label in (
        ("must_compatibility", "MUST"),
        ("should_compatibility", "SHOULD"),
        ("may_compatibility", "MAY"),
        ("overall_compatibility", "overall"),
    ):
        lines.append(f"| {label} | " + " | ".join(summary[n].get(key, "-") for n in names) + " |")
    for kind in ("passed", "failed", "xfailed", "skipped"):
        lines.append(
            f"| tests {kind} | " + " | ".join(str(outcomes[n].totals[kind]) for n in names) + " |"
        )
    lines.append(
        "| TCK run (s) | " + " | ".join(f"{outcomes[n].seconds:.0f}" for n in names) + " |"
    )
    lines += [
        "",
        f"The TCK's virtualenv took {install_s:.0f} s to install (0 when reused); the three runs "
        f"ran side by side, {wall_s:.0f} s for everything."
        + (f" {SPREAD['replicas']}." if "replicas" in SPREAD else ""),
        "",
        "## Requirements per level and transport",
        "",
        "Requirements passed / failed / skipped on each transport (`agent_card`: the card "
        "endpoint itself).",
        "",
        "| level | transport | " + " | ".join(head[n] for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    scores = {n: outcomes[n].scores() for n in names}
    for level in LEVELS:
        for transport in TRANSPORTS:
            cells = []
            for n in names:
                c = scores[n].get((level, transport), Counter())
                cells.append(f"{c['PASS']} / {c['FAIL']} / {c['SKIPPED']}")
            if any(cell != "0 / 0 / 0" for cell in cells):
                lines.append(f"| {level} | {transport} | " + " | ".join(cells) + " |")
    lines += ["", "## Failed requirements", ""]
    for n in names:
        failed = []
        for rid, req in outcomes[n].report.get("per_requirement", {}).items():
            if req["status"] != "FAIL":
                continue
            where = ", ".join(t for t, s in req["transports"].items() if s == "FAIL") or "report"
            error = req["errors"][0] if req["errors"] else ""
            waived = " (waived, see below)" if rid in WAIVED and n in GATED else ""
            failed.append(f"{rid} ({req['level']}, {where}){waived}: {error}")
        lines.append(f"- **{head[n]}**:" + (" none" if not failed else ""))
        lines += [f"  - {f}" for f in failed]
        if outcomes[n].note:
            lines.append(f"  - {outcomes[n].note}")
    lines += ["", CARDS, "", "## Waived", ""]
    lines += [f"- **{rid}** (SHOULD): {why}." for rid, why in WAIVED.items()]
    lines += [
        "",
        "## Skipped tests",
        "",
        "Every test the TCK skipped on any of the three, with the TCK's reason and each "
        "one's outcome.",
        "",
        "| test | reason | " + " | ".join(head[n] for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    outcome_of = {n: {c["test"]: c for c in outcomes[n].cases} for n in names}
    ordered = list(dict.fromkeys(c["test"] for n in names for c in outcomes[n].cases))
    for test in ordered:
        skips = [outcome_of[n][test] for n in names if test in outcome_of[n]]
        skipped = [c for c in skips if c["outcome"] == "skipped"]
        if not skipped:
            continue
        reason = skipped[0]["reason"].replace("|", "\\|").replace("\n", " ")
        marks = [outcome_of[n].get(test, {}).get("outcome", "-") for n in names]
        lines.append(f"| `{test}` | {reason} | " + " | ".join(marks) + " |")
    first = outcomes[names[0]]
    untested = [
        rid
        for rid, req in first.report.get("per_requirement", {}).items()
        if req["status"] == "NOT TESTED"
    ]
    lines += [
        "",
        f"Requirements the TCK has no automated test for ({len(untested)}, NOT TESTED in its "
        "report): " + ", ".join(untested) + ".",
        "",
    ]
    return "\n".join(lines)


def _load(work: Path) -> tuple[dict[str, Outcome], float, float]:
    """The outcomes of the last run in ``work`` (to render the report again)."""
    run = json.loads((work / "run.json").read_text())
    SPREAD.update(run.get("spread", {}))
    outcomes = {
        target: _outcome(target, f["seconds"], f["returncode"], work / target, f["note"])
        for target, f in run["targets"].items()
    }
    return outcomes, run["install_s"], run["wall_s"]


async def main_async(args: argparse.Namespace) -> int:
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        outcomes, install_s, wall_s = _load(work)
        args.targets = list(outcomes)
    else:
        started = time.monotonic()
        tck, python, install_s = await asyncio.to_thread(prepare_tck, args.tck.resolve(), work)
        print(f"TCK ready in {install_s:.0f} s (install), testing: {', '.join(args.targets)}")
        results = await asyncio.gather(*(run_target(t, python, tck, work) for t in args.targets))
        outcomes = {o.target: o for o in results}
        wall_s = time.monotonic() - started
        facts = {
            t: {"seconds": o.seconds, "returncode": o.returncode, "note": o.note}
            for t, o in outcomes.items()
        }
        run = {"install_s": install_s, "wall_s": wall_s, "targets": facts, "spread": SPREAD}
        (work / "run.json").write_text(json.dumps(run, indent=1))
    text = render(outcomes, install_s, wall_s)
    (work / "conformance.md").write_text(text)
    if args.doc:
        args.doc.write_text(text)
    failed = False
    for target in args.targets:
        o = outcomes[target]
        t = o.totals
        print(
            f"{target}: {t['passed']} passed, {t['failed']} failed, {t['xfailed']} xfailed, "
            f"{t['skipped']} skipped in {o.seconds:.0f} s; "
            f"MUST {o.report.get('summary', {}).get('must_compatibility', '-')}"
        )
        if target not in GATED:
            continue
        problems = o.failures() or ([o.note] if o.note else [])
        if not o.report and not o.note:
            problems = [f"no compatibility report (TCK exit {o.returncode}; see {work / target})"]
        for problem in problems:
            print(f"  FAIL {problem}")
        failed = failed or bool(problems)
        if o.waived():
            print(f"  waived: {', '.join(o.waived())} (see WAIVED)")
    print(f"conformance {'FAILED' if failed else 'passed'} in {wall_s:.0f} s; report: {work}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tck", type=Path, default=DEFAULT_TCK, help="the A2A TCK's folder")
    parser.add_argument("--work", type=Path, default=WORK, help="copies, venv and reports")
    parser.add_argument(
        "--targets", type=lambda s: s.split(","), default=list(TARGETS), help=",".join(TARGETS)
    )
    parser.add_argument("--doc", type=Path, help="also write the report here")
    parser.add_argument(
        "--report-only", action="store_true", help="gate and report on the last run in --work"
    )
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
