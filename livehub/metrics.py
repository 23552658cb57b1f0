"""Prometheus metrics, under Centrifugo's names where the meaning is the same.

Two kinds:

* Process-wide instruments in :data:`REGISTRY`, updated where things happen: client commands
  (``centrifugo_client_command_duration_seconds``, ``centrifugo_client_num_reply_errors``),
  server disconnects (``centrifugo_client_num_server_disconnects``), and — through
  :func:`instrument`, which wraps the node's engine and fan-out in place — messages to and
  from the broker, broadcast duration, publish-to-delivery lag and engine call latency.
* A node's state read at scrape time (:class:`NodeCollector`): clients, users,
  subscriptions, channels, nodes, build — nothing to keep in step.

``render(node)`` is the text of ``/metrics``. Channel namespaces label several series; their
number is bounded by the config (unknown namespaces are refused before anything is counted).
"""

from __future__ import annotations

import collections
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from livehub import __version__

if TYPE_CHECKING:
    from livehub.core.node import Node

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

COMMAND_DURATION = Histogram(
    "centrifugo_client_command_duration_seconds",
    "Client command duration in seconds, by method.",
    ["method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
REPLY_ERRORS = Counter(
    "centrifugo_client_num_reply_errors",
    "Number of errors in replies sent to clients.",
    ["method", "code"],
    registry=REGISTRY,
)
SERVER_DISCONNECTS = Counter(
    "centrifugo_client_num_server_disconnects",
    "Number of server initiated disconnects, by code.",
    ["code"],
    registry=REGISTRY,
)
MESSAGES_SENT = Counter(
    "centrifugo_node_messages_sent_count",
    "Number of messages sent by node to broker.",
    ["type", "channel_namespace"],
    registry=REGISTRY,
)
MESSAGES_RECEIVED = Counter(
    "centrifugo_node_messages_received_count",
    "Number of messages received from broker.",
    ["type", "channel_namespace"],
    registry=REGISTRY,
)
BROADCAST_DURATION = Histogram(
    "centrifugo_node_broadcast_duration_seconds",
    "Time to hand one publication to every local subscriber's queue.",
    ["type", "channel_namespace"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
PUB_SUB_LAG = Histogram(
    "centrifugo_node_pub_sub_lag_seconds",
    "From publish on this node to its delivery by the broker back to this node's subscribers.",
    ["channel_namespace"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENGINE_CALL_DURATION = Histogram(
    "livehub_engine_call_duration_seconds",
    "Engine (broker and presence manager) call duration, by operation and result.",
    ["op", "result"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

CONNECTION_LIMIT = Counter(
    "centrifugo_node_client_connection_limit",
    "Number of refused requests due to node client connection limit.",
    registry=REGISTRY,
)
LIMIT_REFUSALS = Counter(
    "livehub_client_limit_refusals",
    "What a limit refused, by reason: connection_limit, connection_limit_per_ip, "
    "connection_rate_limit, origin (connections refused at the upgrade); command_rate_limit "
    "(commands answered 111); command_flood (connections closed 3013); user_command_rate_limit, "
    "user_command_flood (the same for client.rate_limit.user_command); channel_limit "
    "(connections closed 3505).",
    ["reason"],
    registry=REGISTRY,
)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def timed_command(method: F) -> F:
    """Decorates ``Session.handle_command``: its duration by command method."""

    @functools.wraps(method)
    async def wrapper(self: Any, command: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(self, command)
        finally:
            COMMAND_DURATION.labels(command.method or "pong").observe(time.perf_counter() - started)

    return wrapper  # type: ignore[return-value]


def reply_error(method: str, code: int) -> None:
    REPLY_ERRORS.labels(method or "unknown", str(code)).inc()


_REFUSAL_REASONS = (
    "connection_limit", "connection_limit_per_ip", "connection_rate_limit", "origin",
    "command_rate_limit", "command_flood", "user_command_rate_limit", "user_command_flood",
    "channel_limit",
)  # fmt: skip
#: One child per reason, made once: a flood of refusals must cost as little as possible.
_REFUSALS = {reason: LIMIT_REFUSALS.labels(reason) for reason in _REFUSAL_REASONS}


def limit_refusal(reason: str) -> None:
    """A limit said no (``reason`` is one of :data:`_REFUSAL_REASONS`: bounded labels)."""
    _REFUSALS[reason].inc()
    if reason == "connection_limit":
        CONNECTION_LIMIT.inc()


def server_disconnect(code: int) -> None:
    SERVER_DISCONNECTS.labels(str(code)).inc()


class NodeCollector(Collector):
    """The node's state at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterable[Metric]:
        node = self.node
        channels = node.channels()

        def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"centrifugo_node_{name}", help_text, value=value)

        yield gauge("num_clients", "Number of clients connected.", len(node.sessions))
        by_transport = GaugeMetricFamily(
            "livehub_node_num_clients_by_transport",
            "Number of clients connected, by transport (websocket, http_stream, sse, uni_*).",
            labels=["transport"],
        )
        counts = collections.Counter(s.transport_name for s in node.sessions.values())
        for name in sorted(counts):
            by_transport.add_metric([name], counts[name])
        yield by_transport
        yield gauge("num_users", "Number of unique users connected.", len(node.users))
        yield gauge("num_subscriptions", "Number of subscriptions.", sum(channels.values()))
        yield gauge("num_channels", "Number of channels with one or more subscribers.", len(channels))
        yield gauge("num_nodes", "Number of nodes in the cluster.", max(1, len(node.cluster.nodes())))
        build = GaugeMetricFamily("centrifugo_node_build", "Node build info.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        yield GaugeMetricFamily(
            "livehub_node_publications", "Publications made on this node.", value=node.publications
        )
        yield GaugeMetricFamily(
            "livehub_node_deliveries", "Publications handed to local subscribers.", value=node.deliveries
        )
        outboxes = [session.outbox for session in node.sessions.values()]
        yield GaugeMetricFamily(
            "livehub_node_queued_bytes",
            "Bytes waiting to be written to this node's connections.",
            value=sum(outbox.size for outbox in outboxes),
        )
        yield GaugeMetricFamily(
            "livehub_node_conflated",
            "Publications of conflating channels that this node's connections skipped for a newer "
            "one of their key.",
            value=sum(outbox.conflated for outbox in outboxes),
        )


def render(registry: CollectorRegistry) -> bytes:
    """The text of ``/metrics``: process-wide instruments, then the node's own state."""
    return generate_latest(REGISTRY) + generate_latest(registry)


def node_registry(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(node))
    return registry


# -- wrapping a node's engine and fan-out in place


_BROKER_OPS = ("publish", "history", "subscribe", "unsubscribe", "publish_join", "publish_leave")
_PRESENCE_OPS = ("add_presence", "remove_presence", "presence", "presence_stats", "refresh_presence")
#: Publications of this node awaiting their delivery back from the broker, for the lag.
_PENDING_MAX = 4096


def _timed_engine_call(op: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(call)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = "error"
        try:
            value = await call(*args, **kwargs)
            result = "ok"
            return value
        finally:
            ENGINE_CALL_DURATION.labels(op, result).observe(time.perf_counter() - started)

    return wrapper


def instrument(node: Node) -> None:
    """Time the node's engine calls and fan-out, by replacing those methods on the instances
    (the engine and the node are unaware of it). Call once, before ``node.start()``."""
    if getattr(node, "_livehub_instrumented", False):
        return
    node._livehub_instrumented = True  # type: ignore[attr-defined]
    namespace_of = _namespace_of(node)
    pending: OrderedDict[tuple[str, bytes], float] = OrderedDict()
    for op in _BROKER_OPS:
        setattr(node.broker, op, _timed_engine_call(op, getattr(node.broker, op)))
    for op in _PRESENCE_OPS:
        setattr(node.presence_manager, op, _timed_engine_call(op, getattr(node.presence_manager, op)))

    broker_publish = node.broker.publish

    async def publish(channel: str, data: bytes, *args: Any, **kwargs: Any) -> Any:
        MESSAGES_SENT.labels("publication", namespace_of(channel)).inc()
        pending[(channel, data)] = time.perf_counter()
        if len(pending) > _PENDING_MAX:
            pending.popitem(last=False)
        return await broker_publish(channel, data, *args, **kwargs)

    node.broker.publish = publish  # type: ignore[method-assign]

    handle_publication = node.handle_publication

    def handled(channel: str, pub: Any, sp: Any, prev: Any) -> None:
        started = time.perf_counter()
        handle_publication(channel, pub, sp, prev)
        now = time.perf_counter()
        ns = namespace_of(channel)
        MESSAGES_RECEIVED.labels("publication", ns).inc()
        BROADCAST_DURATION.labels("publication", ns).observe(now - started)
        published = pending.pop((channel, pub.data), None)
        if published is not None:
            PUB_SUB_LAG.labels(ns).observe(now - published)

    node.handle_publication = handled  # type: ignore[method-assign]


def _namespace_of(node: Node) -> Callable[[str], str]:
    settings = node.settings.channel
    known = {ns.name for ns in settings.namespaces}

    def namespace_of(channel: str) -> str:
        name = channel.removeprefix(settings.private_prefix)
        if settings.namespace_boundary and settings.namespace_boundary in name:
            ns = name.split(settings.namespace_boundary, 1)[0]
            return ns if ns in known else "_unknown"
        return ""

    return namespace_of
