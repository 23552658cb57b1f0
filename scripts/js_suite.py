"""Run the centrifuge-js repository's own test suite (jest, src/*.test.ts) against ``livehub serve``,
the way its CI does against Centrifugo, and report passed/failed/skipped per file.

    .venv/bin/python scripts/js_suite.py [--files src/map.test.ts ...] [--expected FILE]

What it does, as the SDK's CI (.github/workflows/ci.yml: ``yarn install``, Centrifugo in docker
with centrifugo_test.json on port 8000, ``yarn test``):

1. exports the pinned commit of the SDK's git repository (``$CENTRIFUGE_JS_SRC``, default
   ``.cache/centrifuge-js/repo``) into ``.cache/centrifuge-js/<commit>`` and installs its dependencies from its
   yarn.lock (``yarn install --frozen-lockfile``, yarn 1 fetched by npx from the npm registry);
2. derives the server config from the SDK's centrifugo_test.json: ``host.docker.internal`` (docker's
   name for the host) becomes 127.0.0.1, and the keys livehub would refuse are dropped and listed
   (Centrifugo options livehub does not have yet, e.g. map or shared_poll namespaces, and keys
   Centrifugo itself would only warn about); ``livehub serve`` starts with it on localhost:8000,
   where the tests connect (their HTTP API key is in that config);
3. runs jest once per test file (``--json``, bounded by ``--timeout``), restarting the server if
   a file killed it; prints a table and writes ``.cache/centrifuge-js/results.json``.

With ``--expected FILE`` (tests/peers/js_suite_expected.json) it exits 1 when a test listed there
did not pass; ``--update-expected`` rewrites that file with the tests passing now.
Nothing fetched is committed: it all lives in .cache/. Exit status 2: the suite could not be run;
3: the SDK's repository (or its pinned commit) is not on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "centrifuge-js"
RESULTS = CACHE / "results.json"
#: Where the repository is looked for when CENTRIFUGE_JS_SRC is not set (a clone or a bare mirror).
DEFAULT_SRC = str(CACHE / "repo")
#: The SDK commit the expected list was measured at (centrifuge-js master, "Fix localStorage access
#: error in Safari private browsing mode (#378)").
PINNED_COMMIT = "c9e867858f703ef7e0b4c68e77004b36b3490214"
YARN = "yarn@1.22.22"
PORT = 8000  # hard-coded in the SDK's tests (localhost:8000)
STARTUP_TIMEOUT = 30.0
#: jest title prefixes of the tests parametrized by transport ("%s: connects", "%s (Protobuf): ...").
TRANSPORT = re.compile(r"^(websocket|http_stream|sse|webtransport)\b")
UNSUPPORTED = "Centrifugo's option, not supported by livehub"


class SuiteError(Exception):
    """The suite could not be run at all (install failed, server would not start): exit 2."""

    status = 2


class NoSource(SuiteError):
    """The SDK's repository (or the pinned commit in it) is not on this machine: exit 3."""

    status = 3


def log(message: str) -> None:
    print(f"js_suite: {message}", flush=True)


# -- the SDK's source -------------------------------------------------------------------------


def export_source(src: Path, commit: str) -> tuple[Path, str]:
    """``git archive`` of ``commit`` from the repository ``src`` into .cache (once); its full hash."""
    if not src.exists():
        raise NoSource(
            f"no centrifuge-js repository at {src}.\n"
            "GitHub is not reachable from this machine, so it cannot be cloned here: on a machine that\n"
            "reaches GitHub run `git clone --mirror https://github.com/centrifugal/centrifuge-js`, copy\n"
            f"the clone here and point CENTRIFUGE_JS_SRC at it (it must hold commit {commit[:12]})."
        )
    git = ["git", "-C", str(src)]
    found = subprocess.run(
        [*git, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    full = found.stdout.strip()
    if found.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}", full):
        raise NoSource(
            f"{src} is not a git repository holding commit {commit}: fetch that commit into it, "
            "or set CENTRIFUGE_JS_COMMIT to one it has"
        )
    if not full.startswith(commit):
        raise SuiteError(f"{src}: {commit} resolves to {full}, not the pinned commit")
    dest = CACHE / full
    stamp = dest / ".livehub-export"
    if stamp.exists() and stamp.read_text().strip() == full:
        return dest, full
    log(f"exporting {full[:12]} from {src} into {dest}")
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen([*git, "archive", "--format=tar", full], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=False)
    if archive.wait() != 0 or untar.returncode != 0:
        raise SuiteError(f"git archive {full} from {src} into {dest} failed")
    stamp.write_text(full + "\n")
    return dest, full


def install(tree: Path) -> None:
    """The SDK's dependencies from its own yarn.lock, as its CI installs them (scripts skipped: the
    tests compile src/ with ts-jest and need no build)."""
    stamp = tree / "node_modules" / ".livehub-yarn-lock"
    lock = (tree / "yarn.lock").read_bytes()
    if stamp.exists() and stamp.read_bytes() == lock and (tree / "node_modules" / ".bin" / "jest").exists():
        return
    for tool in ("node", "npx"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            raise SuiteError(
                f"{tool} is not installed: Node.js >= 18 with npm is needed (apt-get install nodejs npm)"
            )
    log(f"installing the SDK's dependencies in {tree} ({YARN} install --frozen-lockfile)")
    command = ["npx", "--yes", YARN, "install", "--frozen-lockfile", "--ignore-scripts", "--non-interactive"]
    proc = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SuiteError(f"{' '.join(command)} failed in {tree}:\n{tail(proc.stdout + proc.stderr)}")
    stamp.write_bytes(lock)


def test_files(tree: Path, wanted: list[str]) -> list[str]:
    """The files jest's config matches (src/**/*.test.ts), or those asked for."""
    found = sorted(str(p.relative_to(tree)) for p in (tree / "src").rglob("*.test.ts"))
    if not wanted:
        return found
    missing = [w for w in wanted if w not in found]
    if missing:
        raise SuiteError(f"no such test file(s): {', '.join(missing)}; the suite has: {', '.join(found)}")
    return wanted


# -- the server ---------------------------------------------------------------------------------


def _replace_hosts(value: Any) -> Any:
    """docker's name for the host (the SDK's tests run their proxy backends there) -> loopback."""
    if isinstance(value, str):
        return value.replace("host.docker.internal", "127.0.0.1")
    if isinstance(value, dict):
        return {k: _replace_hosts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_hosts(v) for v in value]
    return value


def summary(dropped: list[str]) -> str:
    """``http_stream, sse, namespaces' map x11, ...``: the dropped keys, namespace options counted."""
    keys = Counter(
        re.sub(r"^channel\.namespaces\[\d+\]\.", "namespaces' ", d.partition(": ")[0]) for d in dropped
    )
    return ", ".join(k if n == 1 else f"{k} x{n}" for k, n in keys.items())


def _drop(data: Any, path: str) -> None:
    """Delete ``channel.namespaces[3].map`` from the raw config."""
    parts = [int(i) if i else k for k, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]
    for part in parts[:-1]:
        data = data[part]
    del data[parts[-1]]


def derive_config(tree: Path) -> tuple[Path, list[str]]:
    """centrifugo_test.json as livehub can run it, and the keys dropped from it (with why)."""
    from pydantic import ValidationError

    from livehub.settings import Settings, config_problems

    data = _replace_hosts(json.loads((tree / "centrifugo_test.json").read_text()))
    dropped: list[str] = []
    try:
        problems = config_problems(Settings(**data))
    except ValidationError as exc:
        raise SuiteError(f"livehub refuses centrifugo_test.json:\n{exc}") from None
    for problem in problems:
        where, _, why = problem.partition(": ")
        if not (why.startswith(UNSUPPORTED) or why.startswith("unknown key")):
            raise SuiteError(f"livehub refuses centrifugo_test.json: {problem}")
        dropped.append(f"{where}: {'unsupported by livehub' if why.startswith(UNSUPPORTED) else why}")
    for entry in dropped:  # dict keys only: the namespaces list keeps its indexes
        _drop(data, entry.partition(": ")[0])
    left = config_problems(Settings(**data))
    if left:
        raise SuiteError("livehub still refuses the derived config: " + "; ".join(left))
    path = CACHE / "livehub_config.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path, dropped


def _loopbacks() -> list[tuple[int, str]]:
    """The addresses ``localhost`` means here (Node may pick either)."""
    found: list[tuple[int, str]] = [(socket.AF_INET, "127.0.0.1")]
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        found.append((socket.AF_INET6, "::1"))
    except OSError:
        pass
    return found


def _answers(address: str) -> bool:
    host = f"[{address}]" if ":" in address else address
    try:
        with urllib.request.urlopen(f"http://{host}:{PORT}/connection/websocket", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class Server:
    """``livehub serve --config <derived> --host localhost --port 8000``, its output in a log file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        busy = [a for f, a in _loopbacks() if _port_busy(f, a)]
        if busy:
            raise SuiteError(
                f"port {PORT} is in use on {', '.join(busy)}: the SDK's tests need localhost:{PORT}; stop "
                f"what listens there (ss -ltnp 'sport = :{PORT}') and run again"
            )
        command = [sys.executable, "-m", "livehub", "serve", "--config", str(self.config)]
        command += ["--host", "localhost", "--port", str(PORT)]
        with self.log_path.open("ab") as out:
            out.write(f"--- {' '.join(command)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(_answers(a) for _, a in _loopbacks()):
            if self.proc.poll() is not None:
                raise SuiteError(
                    f"livehub serve exited with {self.proc.returncode}:\n{tail(self.log_text())}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SuiteError(
                    f"livehub serve did not answer on localhost:{PORT}:\n{tail(self.log_text())}"
                )
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _port_busy(family: int, address: str) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((address, PORT)) == 0


# -- jest ---------------------------------------------------------------------------------------


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_file(tree: Path, file: str, timeout: float) -> dict[str, Any]:
    """One test file under jest (as ``yarn test`` runs it: --detectOpenHandles, so in band), its
    JSON report reduced to: status, counts, one entry per test."""
    name = file.replace("/", "_")
    report = CACHE / "reports" / f"{name}.json"
    output = CACHE / "reports" / f"{name}.log"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    command = [str(tree / "node_modules" / ".bin" / "jest"), "--ci", "--detectOpenHandles", "--forceExit"]
    command += ["--json", f"--outputFile={report}", "--runTestsByPath", file]
    started = time.monotonic()
    with output.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=tree, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(timeout)
            status = "ran"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # jest and whatever it started (its own group)
            proc.wait()
            status = "timeout"
    result: dict[str, Any] = {"status": status, "seconds": round(time.monotonic() - started, 1), "tests": []}
    if report.exists():
        suites = json.loads(report.read_text()).get("testResults", [])
        for suite in suites:
            if suite.get("status") == "failed" and not suite.get("assertionResults"):
                result["status"] = "error"  # did not compile or crashed before any test
                result["error"] = tail(suite.get("message", ""), 30)
            for test in suite.get("assertionResults", []):
                state = {"passed": "passed", "failed": "failed"}.get(test["status"], "skipped")
                entry = {"name": test["fullName"], "status": state}
                if state == "failed":
                    entry["message"] = _first_lines(test.get("failureMessages", []))
                result["tests"].append(entry)
    elif status == "ran":
        result["status"] = "error"
        result["error"] = tail(output.read_text(errors="replace"), 30)
    result["counts"] = dict(Counter(t["status"] for t in result["tests"]))
    return result


def _first_lines(messages: list[str], lines: int = 6) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(messages))
    return "\n".join(line for line in text.splitlines()[:lines] if line.strip())


# -- the report ---------------------------------------------------------------------------------


def rows(files: dict[str, dict[str, Any]]) -> list[tuple[str, str, int, int, int, str]]:
    """(file, transport, passed, failed, skipped, note) per file, and per transport where the file's
    tests are parametrized by it."""
    out = []
    for file, result in files.items():
        groups: dict[str, Counter[str]] = {}
        for test in result["tests"]:
            match = TRANSPORT.match(test["name"])
            groups.setdefault(match.group(1) if match else "", Counter())[test["status"]] += 1
        note = "" if result["status"] == "ran" else result["status"].upper()
        if not groups:
            out.append((file, "", 0, 0, 0, note))
        for group, counts in sorted(groups.items()):
            out.append((file, group, counts["passed"], counts["failed"], counts["skipped"], note))
    return out


def table(files: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'file':34} {'transport':12} {'pass':>5} {'fail':>5} {'skip':>5} {'total':>6}"]
    for file, group, passed, failed, skipped, note in rows(files):
        total = passed + failed + skipped
        lines.append(
            f"{file:34} {group or '-':12} {passed:5} {failed:5} {skipped:5} {total:6}  {note}".rstrip()
        )
    totals = Counter(t["status"] for r in files.values() for t in r["tests"])
    lines.append(
        f"{'TOTAL':34} {'':12} {totals['passed']:5} {totals['failed']:5} {totals['skipped']:5} "
        f"{sum(totals.values()):6}"
    )
    return "\n".join(lines)


def reasons(files: dict[str, dict[str, Any]], top: int = 12) -> str:
    """The most frequent first lines of the failure messages, per file and transport."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for file, result in files.items():
        for test in result["tests"]:
            if test["status"] == "failed":
                match = TRANSPORT.match(test["name"])
                first = (test.get("message") or "").splitlines()[:1] or [""]
                counts[(file, match.group(1) if match else "-", first[0][:100])] += 1
    return "\n".join(f"{n:4}  {file} [{group}]: {why}" for (file, group, why), n in counts.most_common(top))


def _livehub_revision() -> str:
    """The commit of this checkout, ``+`` when it has uncommitted changes."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def check_expected(files: dict[str, dict[str, Any]], expected: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(expected to pass but did not, passing but not listed) among the files that were run."""
    status = {(f, t["name"]): t["status"] for f, r in files.items() for t in r["tests"]}
    regressions, new = [], []
    for file, names in expected.get("passing", {}).items():
        if file in files:
            regressions += [
                f"{file} :: {n} ({status.get((file, n), 'missing')})"
                for n in names
                if status.get((file, n)) != "passed"
            ]
    listed = {(f, n) for f, names in expected.get("passing", {}).items() for n in names}
    new = [f"{f} :: {n}" for (f, n), s in status.items() if s == "passed" and (f, n) not in listed]
    return regressions, new


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--files", nargs="*", default=[], help="test files to run (default: all), e.g. src/map.test.ts"
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds one test file may take (default 600)"
    )
    parser.add_argument(
        "--expected", type=Path, help="exit 1 when a test listed there as passing did not pass"
    )
    parser.add_argument(
        "--update-expected", action="store_true", help="rewrite --expected with what passes now"
    )
    args = parser.parse_args()
    src = Path(os.environ.get("CENTRIFUGE_JS_SRC") or DEFAULT_SRC)
    commit = os.environ.get("CENTRIFUGE_JS_COMMIT") or PINNED_COMMIT
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        tree, full = export_source(src, commit)
        install(tree)
        files = test_files(tree, args.files)
        config, dropped = derive_config(tree)
        if dropped:
            log(f"centrifugo_test.json: {len(dropped)} keys livehub refuses dropped ({summary(dropped)})")
        server = Server(config, CACHE / "server.log")
        server.log_path.write_bytes(b"")
        results: dict[str, dict[str, Any]] = {}
        try:
            for file in files:
                if not server.alive():
                    server.start()
                log(f"jest {file}")
                results[file] = run_file(tree, file, args.timeout)
                if not server.alive():
                    results[file]["server_exited"] = True
                    log(f"livehub serve exited during {file}:\n{tail(server.log_text(), 20)}")
                    server.proc = None
        finally:
            server.stop()
    except SuiteError as exc:
        print(f"js_suite: error: {exc}", file=sys.stderr)
        return exc.status
    report = {
        "commit": full,
        "source": str(src),
        "config": str(config.relative_to(ROOT)),
        "dropped_config_keys": dropped,
        "server_starts": server.starts,
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "livehub": _livehub_revision(),
        "files": results,
    }
    exit_code = 0
    if args.expected:
        expected = json.loads(args.expected.read_text()) if args.expected.exists() else {}
        if args.update_expected:
            passing = {
                f: sorted(t["name"] for t in r["tests"] if t["status"] == "passed")
                for f, r in results.items()
            }
            merged = {**expected.get("passing", {}), **passing}
            expected = {"commit": full, "passing": {f: n for f, n in sorted(merged.items()) if n}}
            args.expected.write_text(json.dumps(expected, indent=2) + "\n")
            log(f"wrote {args.expected}")
        if expected.get("commit") not in (None, full):
            log(f"note: {args.expected} was measured at {expected['commit'][:12]}, this run is {full[:12]}")
        regressions, new = check_expected(results, expected)
        report["regressions"], report["newly_passing"] = regressions, new
        for line in new:
            log(f"passing, not in {args.expected.name}: {line}")
        for line in regressions:
            log(f"REGRESSION: {line}")
        exit_code = 1 if regressions else 0
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    if any(t["status"] == "failed" for r in results.values() for t in r["tests"]):
        print("most frequent failures (first line of the message):")
        print(reasons(results))
    log(f"centrifuge-js {full[:12]}: results and server.log in {CACHE.relative_to(ROOT)}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
