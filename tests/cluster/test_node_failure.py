"""kill -9 of a node in the middle of a stream of numbered publications: its clients
reconnect (through a loopback proxy, their one address) to another node and recover;
an audit by offsets finds nothing lost and nothing twice, for every client."""

from __future__ import annotations

import asyncio
import statistics
import time

from .harness import Cluster, Proxy, SDKClient, connect, until

CHANNEL = "stream:audit"
TOTAL = 400
INTERVAL = 0.02  # 50 publications a second
KILL_AT = 100


async def test_clients_of_a_killed_node_recover_everything(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)
    proxy = Proxy([a.port, b.port])  # A while it lives, then B
    await proxy.start()
    clients: list[SDKClient] = []
    try:
        for i in range(6):
            clients.append(await connect(proxy.ws, f"via-proxy-{i}"))
        for i in range(2):
            clients.append(await connect(b.ws, f"on-b-{i}"))
        assert proxy.connected_to == [a.port] * 6
        watchers = [await client.subscribe(CHANNEL) for client in clients]
        moved = watchers[:6]

        published: dict[int, int] = {}  # offset -> n
        killed_at = 0.0

        async def publish() -> None:
            nonlocal killed_at
            next_at = time.monotonic()
            for n in range(1, TOTAL + 1):
                reply = await cluster.api(c, "publish", channel=CHANNEL, data={"n": n})
                published[reply["result"]["offset"]] = n
                if n == KILL_AT:
                    cluster.kill(a)
                    killed_at = time.monotonic()
                next_at += INTERVAL
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        await asyncio.wait_for(publish(), timeout=60)
        assert sorted(published) == list(range(1, TOTAL + 1))
        await until(
            lambda: all(w.pubs and w.pubs[-1][0] >= TOTAL for w in watchers),
            "every client has the last publication",
            within=30,
        )

        # the audit: every offset exactly once, in order, with the data published at it
        for client, watcher in zip(clients, watchers, strict=True):
            offsets = watcher.offsets()
            lost = sorted(set(range(1, TOTAL + 1)) - set(offsets))
            duplicated = len(offsets) - len(set(offsets))
            assert (lost, duplicated) == ([], 0), f"{client.user}: lost {lost}, {duplicated} duplicated"
            assert offsets == list(range(1, TOTAL + 1)), f"{client.user}: out of order"
            assert all(published[offset] == data["n"] for offset, data in watcher.pubs)

        # the moved clients reconnected to B and recovered; the others never left
        assert proxy.connected_to.count(b.port) >= 6
        recovery_times = []
        for watcher in moved:
            assert len(watcher.subscribed) >= 2
            again = watcher.subscribed[1]
            assert again.was_recovering and again.recovered, "resubscribed without recovery"
            recovery_times.append(watcher.times[1] - killed_at)
        for watcher in watchers[6:]:
            assert len(watcher.subscribed) == 1
        print(
            f"audit: {len(clients)} clients x {TOTAL} publications: 0 lost, 0 duplicated; "
            f"{len(moved)} clients moved from the killed node, recovered in "
            f"{min(recovery_times):.2f}-{max(recovery_times):.2f}s "
            f"(median {statistics.median(recovery_times):.2f}s) after kill -9"
        )
    finally:
        for client in clients:
            await client.client.disconnect()
        await proxy.close()
