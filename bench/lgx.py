#!/usr/bin/env python3
"""lgx.py — the shared harness's load generator (loadgen.py), extended for two figures it lacks.

Run with the harness's venv (picows, uvloop); everything else is the harness's own code, so the
numbers stay comparable with its ``echo``, ``fanout`` and ``idle`` scenarios:

  rpc       the harness's ``echo`` scenario over the Centrifugo protocol: K clients, each
            connects (``{"id":1,"connect":{}}``), then sends ``{"id":3,"rpc":{"method":"echo",
            "data":"<payload>"}}`` and waits for ``{"id":3,"rpc":{"data":"<payload>"}}`` before
            the next (the first 1000 replies are checked byte for byte). The harness refuses
            ``echo`` over centrifugo; this is that echo, as an RPC through the full protocol.
  --src-ips K  spread the client sockets over the source addresses 127.0.0.1 … 127.0.0.K. One
            source address reaches one server port from ``ip_local_port_range`` ports only
            (~28k here), so 50,000 connections from one process need at least two.
  idle      as the harness's, plus ``cf_pongs_sent`` / ``proto_errors`` / ``disconnects`` (so a
            long ``--hold-s`` shows that the server's pings were answered and nobody was dropped).

    .cache/anchors-bench/.venv/bin/python bench/lgx.py --harness .cache/anchors-bench \\
        rpc --proto centrifugo --port 18765 --clients 64 --duration 10
    ... bench/lgx.py --harness ... --src-ips 3 idle --proto centrifugo --conns 50000 --hold-s 60

Arguments after the scenario are the harness loadgen's (``loadgen.py --help``).
"""

import itertools
import os
import resource
import socket
import sys


def main():
    argv = sys.argv[1:]
    harness = os.environ.get("BENCH_HARNESS", "")
    src_ips = 1
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)
        if opt == "--harness":
            harness = argv.pop(0)
        elif opt == "--src-ips":
            src_ips = int(argv.pop(0))
        else:
            raise SystemExit(f"lgx.py: unknown option {opt} before the scenario")
    if not harness or not os.path.isfile(os.path.join(harness, "loadgen.py")):
        raise SystemExit("lgx.py: --harness DIR (the copy of ../shared/bench with loadgen.py) is required")
    if not argv:
        raise SystemExit("lgx.py: scenario missing (rpc | echo | fanout | idle)")
    sys.path.insert(0, os.path.abspath(harness))
    import loadgen  # the harness's generator, unchanged

    # As many descriptors as allowed (run.sh does the same with ulimit -n).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    scenario = argv[0]
    rpc = scenario == "rpc"
    if rpc:
        argv[0] = "echo"
        if "--proto" not in argv:
            argv += ["--proto", "centrifugo"]

    if src_ips > 1:
        base_factory = loadgen.LoadGen._sock_factory
        counter = itertools.count()

        def _sock_factory(self, rcvbuf=None):
            make = base_factory(self, rcvbuf)

            def factory(parsed_url):
                s = make(parsed_url)
                if ":" not in parsed_url.host:
                    # The port is chosen at connect time, per destination (IP_BIND_ADDRESS_NO_PORT).
                    s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
                    s.bind((f"127.0.0.{1 + next(counter) % src_ips}", 0))
                return s

            return factory

        loadgen.LoadGen._sock_factory = _sock_factory

    if rpc:
        payload_marker = {}

        def enc_echo(self, text):
            if self.proto != "centrifugo":
                return orig_enc_echo(self, text)
            # A constant command (same id each time: one request in flight per connection), so
            # the reply is constant too and the harness's byte-for-byte check applies.
            return b'{"id":3,"rpc":{"method":"echo","data":"' + text + b'"}}'

        def echo_expect(self, text):
            if self.proto != "centrifugo":
                return orig_expect(self, text)
            payload_marker["reply"] = b'{"id":3,"rpc":{"data":"' + text + b'"}}'
            return payload_marker["reply"]

        orig_enc_echo, orig_expect = loadgen.LoadGen.enc_echo, loadgen.LoadGen.echo_expect
        loadgen.LoadGen.enc_echo = enc_echo
        loadgen.LoadGen.echo_expect = echo_expect
        orig_cf_text = loadgen.Conn._cf_text
        prefix = b'{"id":3,'

        def _cf_text(self, data):
            # RPC replies go to the echo callback; everything else (connect reply, pings) as before.
            if data.startswith(prefix) and b"\n" not in data:
                self.app(data)
                return
            rest = []
            for line in data.split(b"\n"):
                if line.startswith(prefix):
                    self.app(line)
                elif line:
                    rest.append(line)
            if rest:
                orig_cf_text(self, b"\n".join(rest))

        loadgen.Conn._cf_text = _cf_text

    orig_idle = loadgen.scenario_idle

    async def scenario_idle(lg, a):
        res = await orig_idle(lg, a)
        res["cf_pongs_sent"] = lg.cf_pongs
        res["proto_errors"] = lg.proto_errors
        res["disconnects"] = lg.disconnects
        return res

    loadgen.scenario_idle = scenario_idle

    orig_amain = loadgen.amain

    async def amain(a):
        out = await orig_amain(a)
        if rpc:
            out["scenario"] = "rpc"
        out["lgx"] = {"src_ips": src_ips, "rpc": rpc, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
        return out

    loadgen.amain = amain
    sys.argv = [os.path.join(harness, "loadgen.py")] + argv
    loadgen.main()


if __name__ == "__main__":
    main()
