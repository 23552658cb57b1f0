"""The proxies as the node's hooks: one implementation of each hook that asks the backend.

:func:`install` runs when the node starts, after the app (``livehub.Hub``) set its Python
hooks: for a channel or RPC method whose namespace enables a proxy, the proxy decides;
anything else goes to the hook that was there before (the app's, or none: the options
decide). The session knows only the hooks, never whether Python or a backend answers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from livehub.core.proxy import Proxies, ProxyFailure, put_data, take_data, take_int
from livehub.core.shared_poll import PolledItem, PollResult
from livehub.models import Credentials, Prolongation, PublishGrant, SubscribeGrant
from livehub.protocol import codes
from livehub.protocol.commands import ConnectParams
from livehub.settings import ProxySettings

if TYPE_CHECKING:
    from livehub.core.node import Node
    from livehub.core.session import Session

log = logging.getLogger("livehub.core.proxy_hooks")


def _str_or_fail(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ProxyFailure(f"{name} is not a string")
    return value


class ProxyHooks:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = node.settings
        self.proxies = Proxies(node.settings)
        self.previous_subscribe = node.subscribe_hook
        self.previous_publish = node.publish_hook
        self.previous_poll = node.shared_poll_hook

    async def _ask(
        self, kind: str, proxy: ProxySettings, body: dict[str, Any], session: Session | None
    ) -> dict[str, Any]:
        return await self.proxies.ask(kind, proxy, body, session.scope if session is not None else None)

    def _failure(self, kind: str, exc: ProxyFailure) -> codes.Error:
        log.warning("%s proxy: unusable result: %s", kind, exc)
        return codes.error_internal()

    # -- connect and refresh

    async def connect(self, session: Session, req: ConnectParams) -> Credentials:
        proxy = self.settings.client.proxy.connect
        body = self.proxies.base(session, proxy)
        body.pop("user", None)
        put_data(body, proxy, req.data, session.encoding.binary)
        if req.name:
            body["name"] = req.name
        if req.version:
            body["version"] = req.version
        if req.subs:
            body["channels"] = list(req.subs)
        result = await self._ask("connect", proxy, body, session)
        try:
            channels = result.get("channels") or []
            if not isinstance(channels, list):
                raise ProxyFailure("channels is not a list")
            subs = result.get("subs") or {}
            if not isinstance(subs, dict):
                raise ProxyFailure("subs is not an object")
            meta = result.get("meta")
            grants = {}
            for channel, options in subs.items():
                if not isinstance(options, dict):
                    raise ProxyFailure("subs has an item that is not an object")
                grants[_str_or_fail(channel, "channel")] = SubscribeGrant(
                    take_data(options, "info"), take_data(options, "data"), take_int(options, "expire_at")
                )
            return Credentials(
                user=_str_or_fail(result.get("user", ""), "user"),
                info=take_data(result, "info"),
                channels=tuple(_str_or_fail(c, "channel") for c in [*channels, *subs]),
                expire_at=take_int(result, "expire_at"),
                data=take_data(result, "data"),
                meta=None if meta is None else orjson.dumps(meta),
                grants=grants,
            )
        except ProxyFailure as exc:
            raise self._failure("connect", exc) from None

    async def refresh(self, session: Session) -> Prolongation:
        proxy = self.settings.client.proxy.refresh
        result = await self._ask("refresh", proxy, self.proxies.base(session, proxy), session)
        return self._prolongation("refresh", result)

    def _prolongation(self, kind: str, result: dict[str, Any]) -> Prolongation:
        try:
            return Prolongation(
                expired=bool(result.get("expired", False)),
                expire_at=take_int(result, "expire_at"),
                info=take_data(result, "info"),
            )
        except ProxyFailure as exc:
            raise self._failure(kind, exc) from None

    # -- channels

    async def subscribe(
        self, session: Session, channel: str, data: bytes | None
    ) -> bool | SubscribeGrant | None:
        opts = self.node.rules.options(channel)
        if not opts.subscribe_proxy_enabled:
            previous = self.previous_subscribe
            return await previous(session, channel, data) if previous is not None else None
        proxy = self.proxies.named(opts.subscribe_proxy_name, self.settings.channel.proxy.subscribe)
        body = self.proxies.base(session, proxy)
        body["channel"] = channel
        put_data(body, proxy, data, session.encoding.binary)
        result = await self._ask("subscribe", proxy, body, session)
        try:
            return SubscribeGrant(
                info=take_data(result, "info"),
                data=take_data(result, "data"),
                expire_at=take_int(result, "expire_at"),
            )
        except ProxyFailure as exc:
            raise self._failure("subscribe", exc) from None

    async def publish(self, session: Session, channel: str, data: bytes) -> bytes | PublishGrant | None:
        opts = self.node.rules.options(channel)
        if not opts.publish_proxy_enabled:
            previous = self.previous_publish
            return await previous(session, channel, data) if previous is not None else None
        proxy = self.proxies.named(opts.publish_proxy_name, self.settings.channel.proxy.publish)
        body = self.proxies.base(session, proxy)
        body["channel"] = channel
        put_data(body, proxy, data, session.encoding.binary)
        result = await self._ask("publish", proxy, body, session)
        try:
            changed = take_data(result, "data")
            tags = result.get("tags") or {}
            if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
                raise ProxyFailure("tags is not an object of strings")
            key = result.get("idempotency_key") or ""
            return PublishGrant(
                data if changed is None else changed,
                skip_history=bool(result.get("skip_history", False)),
                tags={str(k): v for k, v in tags.items()},
                idempotency_key=_str_or_fail(key, "idempotency_key"),
            )
        except ProxyFailure as exc:
            raise self._failure("publish", exc) from None

    def sub_refresh_enabled(self, channel: str) -> bool:
        return self.node.rules.options(channel).sub_refresh_proxy_enabled

    async def sub_refresh(self, session: Session, channel: str) -> Prolongation:
        opts = self.node.rules.options(channel)
        proxy = self.proxies.named(opts.sub_refresh_proxy_name, self.settings.channel.proxy.sub_refresh)
        body = self.proxies.base(session, proxy)
        body["channel"] = channel
        result = await self._ask("sub_refresh", proxy, body, session)
        return self._prolongation("sub_refresh", result)

    # -- RPC

    def rpc_proxy(self, method: str) -> ProxySettings | None:
        rpc = self.settings.rpc
        boundary = rpc.namespace_boundary
        name = method.split(boundary, 1)[0] if boundary and boundary in method else ""
        opts = rpc.without_namespace
        if name:
            found = next((ns for ns in rpc.namespaces if ns.name == name), None)
            if found is None:
                return None
            opts = found
        if not opts.proxy_enabled:
            return None
        return self.proxies.named(opts.proxy_name, rpc.proxy)

    async def rpc(self, session: Session, method: str, data: bytes | None) -> bytes | None:
        proxy = self.rpc_proxy(method)
        if proxy is None:
            raise codes.error_method_not_found()
        body = self.proxies.base(session, proxy)
        body["method"] = method
        put_data(body, proxy, data, session.encoding.binary)
        result = await self._ask("rpc", proxy, body, session)
        try:
            return take_data(result, "data")
        except ProxyFailure as exc:
            raise self._failure("rpc", exc) from None

    # -- shared poll

    async def shared_poll(self, channel: str, items: list[tuple[str, int]]) -> PollResult | None:
        if self.previous_poll is not None:
            answer = await self.previous_poll(channel, items)
            if answer is not None:
                return answer
        opts = self.node.rules.options(channel)
        proxy = self.proxies.named(
            opts.shared_poll.proxy_name, self.settings.channel.proxy.shared_poll_refresh
        )
        body = {
            "channel": channel,
            "items": [{"key": k, "version": v} if v else {"key": k} for k, v in items],
        }
        result = await self._ask("shared_poll_refresh", proxy, body, None)
        try:
            raw = result.get("items") or []
            if not isinstance(raw, list):
                raise ProxyFailure("items is not a list")
            polled = []
            for item in raw:
                if not isinstance(item, dict):
                    raise ProxyFailure("an item is not an object")
                polled.append(
                    PolledItem(
                        key=_str_or_fail(item.get("key", ""), "key"),
                        data=take_data(item, "data"),
                        version=take_int(item, "version"),
                        removed=bool(item.get("removed", False)),
                    )
                )
            epoch = result.get("epoch", "")
            return PollResult(polled, epoch if isinstance(epoch, str) else "")
        except ProxyFailure as exc:
            raise self._failure("shared_poll_refresh", exc) from None

    async def close(self) -> None:
        await self.proxies.close()


def install(node: Node) -> ProxyHooks | None:
    """Put the configured proxies in the node's hooks (before the app's); None if there are none."""
    settings = node.settings
    channel_proxies = settings.channel.proxy
    namespaces = [settings.channel.without_namespace, *settings.channel.namespaces]
    used = (
        settings.client.proxy.connect.enabled
        or settings.client.proxy.refresh.enabled
        or bool(settings.proxies)
        or any(
            p.endpoint
            for p in (
                channel_proxies.subscribe,
                channel_proxies.publish,
                channel_proxies.sub_refresh,
                channel_proxies.shared_poll_refresh,
                settings.rpc.proxy,
            )
        )
        or any(
            ns.subscribe_proxy_enabled or ns.publish_proxy_enabled or ns.sub_refresh_proxy_enabled
            for ns in namespaces
        )
    )
    if not used:
        return None
    hooks = ProxyHooks(node)
    if settings.client.proxy.connect.enabled:
        node.connect_command_hook = hooks.connect
    if settings.client.proxy.refresh.enabled:
        node.refresh_hook = hooks.refresh
    node.subscribe_hook = hooks.subscribe
    node.publish_hook = hooks.publish
    node.sub_refresh_hook = hooks.sub_refresh
    node.sub_refresh_enabled = hooks.sub_refresh_enabled
    node.rpc_proxy = hooks.rpc if _rpc_proxied(node) else None
    node.shared_poll_hook = hooks.shared_poll
    return hooks


def _rpc_proxied(node: Node) -> bool:
    rpc = node.settings.rpc
    return rpc.without_namespace.proxy_enabled or any(ns.proxy_enabled for ns in rpc.namespaces)
