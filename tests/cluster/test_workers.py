"""``livehub serve --workers N``: N processes on one listening socket, one hub through
Redis; and a clear refusal with the memory engine."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import ROOT, free_port

from .harness import Cluster, SDKClient, connect, until

CHANNEL = "chat:workers"


async def test_clients_on_different_workers_see_each_other(cluster: Cluster) -> None:
    [server] = await cluster.start(1, workers=2)
    clients: list[SDKClient] = []
    try:
        # the kernel spreads connections over the workers: connect until both have some
        spread: list[dict[str, object]] = []
        for _ in range(5):
            for _ in range(6):
                clients.append(await connect(server.ws, f"user-{len(clients)}"))

            async def both_workers() -> list[dict[str, object]] | None:
                nodes = (await cluster.api(server, "info"))["result"]["nodes"]
                counts = [n["num_clients"] for n in nodes]
                return nodes if len(nodes) == 2 and sum(counts) == len(clients) else None  # type: ignore[arg-type]

            spread = await until(both_workers, "info from both workers", within=10)
            if all(n["num_clients"] for n in spread):
                break
        assert len(spread) == 2 and all(n["num_clients"] for n in spread), spread
        assert len({n["name"] for n in spread}) == 2

        watchers = [await client.subscribe(CHANNEL) for client in clients]
        for client in clients:
            await client.subs[CHANNEL].publish({"from": client.user})
        expected = sorted(client.user for client in clients)
        for client, watcher in zip(clients, watchers, strict=True):
            await until(
                lambda w=watcher: sorted(d["from"] for _, d in w.pubs) == expected,
                f"{client.user} got every client's publication",
            )
            assert watcher.offsets() == list(range(1, len(clients) + 1))
    finally:
        for client in clients:
            await client.client.disconnect()


def test_workers_need_a_shared_engine() -> None:
    cmd = [sys.executable, "-m", "livehub", "serve", "--workers", "2", "--port", str(free_port())]
    result = subprocess.run(
        cmd + ["--engine", "memory://"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "--workers 2 needs a shared engine" in result.stderr
