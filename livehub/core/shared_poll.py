"""Shared poll subscriptions: the node polls the backend for the keys its clients track.

A client subscribes to a channel of a ``subscription_type: shared_poll`` namespace, then
tracks keys (``sub_refresh`` with ``type: 1``) under a signature its app server made with
``shared_poll.hmac_secret_key`` (:func:`verify_signature`), and untracks them (``type: 2``).
Every ``refresh_interval`` the node asks the backend ONCE for the union of the keys its
clients track in the channel (in batches of ``refresh_batch_size``), each with the lowest
version a tracker has, and pushes each changed item (``key``, ``data``, ``version``, or
``removed``) to the trackers that have an older version. The backend is a proxy
(``livehub.core.proxy_hooks``) or, in an embedded app, a Python function
(``Hub.shared_poll``): both are the node's ``shared_poll_hook``.

``versioned`` mode takes the backend's versions; versionless mode (the default) numbers the
changes of each key itself, under an 8-character epoch the subscribe reply gives, so a
client that comes back to another node (or after a restart) starts over. Keys are bounded:
``max_keys_per_connection`` per connection and channel, ``shared_poll.max_keys_per_node``
distinct keys on the node (error 106 beyond either).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from livehub.protocol import codes
from livehub.settings import NamespaceOptions, SharedPollSettings

if TYPE_CHECKING:
    from livehub.core.session import Session

log = logging.getLogger("livehub.core.shared_poll")

#: A signature stays valid this long past its expiry (clock skew between app and node).
GRACE_SECONDS = 5


@dataclass(frozen=True, slots=True)
class PolledItem:
    """One item of the backend's answer."""

    key: str
    data: bytes | None = None
    version: int = 0
    removed: bool = False


@dataclass(frozen=True, slots=True)
class PollResult:
    items: list[PolledItem]
    epoch: str = ""


#: ``hook(channel, [(key, version), ...]) -> PollResult``, or None when it does not serve the
#: channel (the next implementation, e.g. a proxy, does).
SharedPollHook = Callable[[str, list[tuple[str, int]]], Awaitable["PollResult | None"]]


def sign_keys(
    secret: str, channel: str, keys: list[str], user: str, ttl: int = 3600, now: int | None = None
) -> str:
    """A track signature for ``keys`` (what the app server gives its clients)."""
    issued = int(time.time()) if now is None else now
    expiry = issued + ttl
    return f"{issued}:{expiry}:{_mac(secret, issued, expiry, user, channel, keys)}"


def _mac(secret: str, issued: int, expiry: int, user: str, channel: str, keys: list[str]) -> str:
    keys_hash = hashlib.sha256("\x00".join(keys).encode()).hexdigest()
    payload = f"{issued}\x00{expiry}\x00{user}\x00{channel}\x00{keys_hash}"
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify_signature(
    cfg: SharedPollSettings, channel: str, signature: str, keys: list[str], user: str
) -> int:
    """The signature's expiry (Unix time); Error 103 if it is not valid, 109 if expired."""
    parts = signature.split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        raise codes.error_permission_denied()
    issued, expiry = int(parts[0]), int(parts[1])
    secrets_ = [cfg.hmac_secret_key]
    if cfg.hmac_previous_secret_key and (
        not cfg.hmac_previous_secret_key_valid_until or issued <= cfg.hmac_previous_secret_key_valid_until
    ):
        secrets_.append(cfg.hmac_previous_secret_key)
    if not any(
        s and hmac.compare_digest(_mac(s, issued, expiry, user, channel, keys), parts[2]) for s in secrets_
    ):
        raise codes.error_permission_denied()
    if expiry and expiry + GRACE_SECONDS < time.time():
        raise codes.error_token_expired()
    return expiry


@dataclass(slots=True)
class ChannelPoll:
    """One channel's tracked keys on this node, and the task polling them."""

    channel: str
    opts: NamespaceOptions
    #: Versionless mode: the epoch under which this node numbers versions ("" if versioned).
    epoch: str
    #: key -> tracker -> the version it has.
    keys: dict[str, dict[Session, int]] = field(default_factory=dict)
    #: subscriber -> the keys it tracks.
    sessions: dict[Session, set[str]] = field(default_factory=dict)
    #: Versionless mode: key -> (digest of its data, the version given to it).
    seen: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    #: Set when keys are tracked, to poll without waiting for the whole interval.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def versioned(self) -> bool:
        return self.opts.shared_poll.mode == "versioned"


class SharedPoll:
    """The shared poll channels of a node."""

    def __init__(self, settings: SharedPollSettings, hook: Callable[[], SharedPollHook | None]) -> None:
        self.settings = settings
        self._hook = hook
        self.channels: dict[str, ChannelPoll] = {}
        #: Distinct (channel, key) pairs tracked on this node.
        self.tracked = 0

    # -- subscribers

    def subscribe(self, session: Session, channel: str, opts: NamespaceOptions) -> str:
        """Register a subscriber; the epoch its reply carries ("" in versioned mode)."""
        poll = self.channels.get(channel)
        if poll is None:
            epoch = "" if opts.shared_poll.mode == "versioned" else secrets.token_hex(4)
            poll = self.channels[channel] = ChannelPoll(channel, opts, epoch)
        poll.sessions.setdefault(session, set())
        return poll.epoch

    def unsubscribe(self, session: Session, channel: str) -> None:
        poll = self.channels.get(channel)
        if poll is None or session not in poll.sessions:
            return
        self._untrack(poll, session, list(poll.sessions[session]))
        del poll.sessions[session]
        if not poll.sessions:
            del self.channels[channel]
            if poll.task is not None:
                poll.task.cancel()

    # -- track and untrack (``sub_refresh`` of type 1 and 2)

    def track(
        self, session: Session, channel: str, batches: Sequence[tuple[str, Sequence[tuple[str, int]]]]
    ) -> int:
        """Verify every batch's signature, then track its keys; the earliest expiry (0: none)."""
        poll = self.channels.get(channel)
        if poll is None or session not in poll.sessions:
            raise codes.error_permission_denied()
        if not self.settings.hmac_secret_key:
            log.error("shared_poll.hmac_secret_key is not configured: track refused")
            raise codes.error_internal()
        expiries = [
            verify_signature(self.settings, channel, signature, [key for key, _ in items], session.user)
            for signature, items in batches
        ]
        mine = poll.sessions[session]
        wanted = {key for _, items in batches for key, _ in items}
        new_keys = [k for k in wanted if k not in poll.keys]
        if len(mine | wanted) > poll.opts.shared_poll.max_keys_per_connection:
            raise codes.error_limit_exceeded()
        if self.tracked + len(new_keys) > self.settings.max_keys_per_node:
            log.warning("shared poll: %d keys tracked on this node, at its limit", self.tracked)
            raise codes.error_limit_exceeded()
        for _, items in batches:
            for key, version in items:
                trackers = poll.keys.get(key)
                if trackers is None:
                    trackers = poll.keys[key] = {}
                    self.tracked += 1
                trackers[session] = version
                mine.add(key)
        if poll.task is None or poll.task.done():
            poll.task = asyncio.get_running_loop().create_task(self._run(poll))
        poll.wake.set()
        valid = [e for e in expiries if e]
        return min(valid) if valid else 0

    def untrack(self, session: Session, channel: str, keys: list[str]) -> None:
        poll = self.channels.get(channel)
        if poll is None or session not in poll.sessions:
            raise codes.error_permission_denied()
        self._untrack(poll, session, keys)

    def _untrack(self, poll: ChannelPoll, session: Session, keys: list[str]) -> None:
        mine = poll.sessions.get(session)
        for key in keys:
            trackers = poll.keys.get(key)
            if trackers is None or trackers.pop(session, None) is None:
                continue
            if mine is not None:
                mine.discard(key)
            if not trackers:
                del poll.keys[key]
                poll.seen.pop(key, None)
                self.tracked -= 1

    # -- polling

    async def _run(self, poll: ChannelPoll) -> None:
        interval = poll.opts.shared_poll.refresh_interval or 1.0
        try:
            while poll.keys and self.channels.get(poll.channel) is poll:
                poll.wake.clear()
                await self._poll_once(poll)
                try:  # a newly tracked key is polled soon, yet never more often than every interval/4
                    await asyncio.sleep(interval / 4)
                    await asyncio.wait_for(poll.wake.wait(), interval * 3 / 4)
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("shared poll of %s stopped", poll.channel)

    async def _poll_once(self, poll: ChannelPoll) -> None:
        hook = self._hook()
        if hook is None:
            log.error("shared poll channel %s: no backend (proxy or Hub.shared_poll) to poll", poll.channel)
            return
        wanted = [(key, min(trackers.values(), default=0)) for key, trackers in poll.keys.items()]
        size = poll.opts.shared_poll.refresh_batch_size
        for start in range(0, len(wanted), size):
            batch = wanted[start : start + size]
            if poll.versioned:
                asked = batch
            else:
                asked = [(key, 0) for key, _ in batch]
            try:
                result = await hook(poll.channel, asked)
            except codes.Error as exc:
                log.warning("shared poll of %s: backend error %d %s", poll.channel, exc.code, exc.message)
                continue
            except Exception:
                log.exception("shared poll of %s failed", poll.channel)
                continue
            if result is not None:
                self._deliver(poll, result)

    def _deliver(self, poll: ChannelPoll, result: PollResult) -> None:
        for item in result.items:
            trackers = poll.keys.get(item.key)
            if not trackers:
                continue
            version = item.version if poll.versioned else self._number(poll, item)
            if version <= 0 and not item.removed:
                continue
            body: dict[str, Any] = {"key": item.key, "version": version}
            if item.removed:
                body["removed"] = True
            elif item.data is not None:
                body["data"] = orjson.Fragment(item.data)
            for session, known in list(trackers.items()):
                if not item.removed and known >= version:
                    continue
                session.outbox.put(session.encoding.encode_push(poll.channel, "pub", body))
                trackers[session] = version
            if item.removed:
                for session in list(trackers):
                    self._untrack(poll, session, [item.key])

    def _number(self, poll: ChannelPoll, item: PolledItem) -> int:
        """Versionless mode: the key's version, one more each time its data changes."""
        digest = hashlib.blake2b(item.data or b"", digest_size=16).digest()
        seen = poll.seen.get(item.key)
        if seen is not None and seen[0] == digest:
            return seen[1]
        version = (seen[1] if seen is not None else 0) + 1
        poll.seen[item.key] = (digest, version)
        return version

    async def close(self) -> None:
        tasks = [p.task for p in self.channels.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.channels.clear()
        self.tracked = 0
