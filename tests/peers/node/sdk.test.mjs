// Conformance of livehub with the official JavaScript SDK: npm `centrifuge@5.8.0` over `ws`.
//
// Needs a running server: `livehub serve --config tests/peers/config.json --host localhost --port 8000`
// (tests/peers/test_node_sdk.py starts one and runs this file with `node --test`).
// Every wait is bounded: a missing event fails its test instead of hanging it.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const ENDPOINT = process.env.LIVEHUB_WS_URL ?? 'ws://localhost:8000/connection/websocket';
const HMAC_SECRET = 'secret'; // client.token.hmac_secret_key in tests/peers/config.json
const WAIT_MS = 5000; // the longest any single event may take to arrive
const TEST_TIMEOUT_MS = 20000;

/** A unique channel name, so tests never see each other's streams. */
const channel = (prefix) => `${prefix}${randomUUID()}`;

/** HS256 JWT, as the application backend would mint it. */
function jwt(claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const signed = `${b64({ typ: 'JWT', alg: 'HS256' })}.${b64(claims)}`;
  return `${signed}.${createHmac('sha256', HMAC_SECRET).update(signed).digest('base64url')}`;
}

/** Rejects after `ms` with a message naming what was awaited. */
function within(promise, label, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next `event` emitted by `emitter` (optionally the next one matching `filter`), bounded. */
function nextEvent(emitter, event, filter = () => true, ms = WAIT_MS) {
  return within(
    new Promise((resolve) => {
      const handler = (ctx) => {
        if (filter(ctx)) {
          emitter.off(event, handler);
          resolve(ctx);
        }
      };
      emitter.on(event, handler);
    }),
    `'${event}'`,
    ms,
  );
}

/** Collects `publication` events of a subscription; `waitFor(n)` resolves once n have arrived. */
function collect(sub) {
  const pubs = [];
  const waiters = [];
  sub.on('publication', (ctx) => {
    pubs.push(ctx);
    for (const w of waiters.filter((w) => pubs.length >= w.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  const waitFor = (n, ms = WAIT_MS) =>
    within(
      pubs.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve })),
      `${n} publications on ${sub.channel} (got ${pubs.length})`,
      ms,
    );
  return { pubs, waitFor };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const clients = [];
/** A client that is disconnected when the file's tests end. */
function newClient(options = {}) {
  const client = new Centrifuge(ENDPOINT, { websocket: WebSocket, timeout: WAIT_MS, ...options });
  client.on('error', () => {}); // errors are asserted where they matter; keep the emitter quiet
  clients.push(client);
  return client;
}

async function connected(client) {
  const ctx = nextEvent(client, 'connected');
  client.connect();
  return ctx;
}

async function subscribed(client, ch, options = {}) {
  const sub = client.newSubscription(ch, options);
  const ctx = nextEvent(sub, 'subscribed');
  sub.subscribe();
  return { sub, ctx: await ctx };
}

after(() => {
  for (const client of clients) client.disconnect();
});

describe('centrifuge-js 5.8.0 against livehub', { timeout: 120000 }, () => {
  test('anonymous connect and disconnect', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = newClient();
    const ctx = await connected(client);
    assert.equal(client.state, Centrifuge.State.Connected);
    assert.equal(typeof ctx.client, 'string');
    assert.ok(ctx.client.length > 0, 'connect result has a client id');
    assert.equal(ctx.transport, 'websocket');

    const disconnected = nextEvent(client, 'disconnected');
    client.disconnect();
    const d = await disconnected;
    assert.equal(d.code, 0); // disconnect called
    assert.equal(client.state, Centrifuge.State.Disconnected);
  });

  test('connect with a JWT; subscribe and unsubscribe', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = newClient({ token: jwt({ sub: 'js-user' }) });
    await connected(client);
    const ch = channel('js-sub-');
    const { sub, ctx } = await subscribed(client, ch);
    assert.equal(ctx.channel, ch);
    assert.equal(ctx.wasRecovering, false);
    assert.equal(ctx.recoverable, true); // force_recovery in the default namespace
    assert.equal(ctx.positioned, true);
    assert.equal(ctx.streamPosition.offset, 0);
    assert.equal(typeof ctx.streamPosition.epoch, 'string');
    assert.ok(ctx.streamPosition.epoch.length > 0);
    assert.equal(sub.state, 'subscribed');

    const unsubscribed = nextEvent(sub, 'unsubscribed');
    sub.unsubscribe();
    assert.equal((await unsubscribed).code, 0); // unsubscribe called
    assert.equal(sub.state, 'unsubscribed');
    client.disconnect();
  });

  test('publish is delivered to every subscriber, the publisher included, with info', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel('js-pub-');
    const publisher = newClient({ token: jwt({ sub: 'alice', info: { name: 'Alice' } }) });
    const reader = newClient(); // anonymous
    const pubCtx = await connected(publisher);
    await connected(reader);
    const { sub: own } = await subscribed(publisher, ch);
    const { sub: other } = await subscribed(reader, ch);
    const ownPubs = collect(own);
    const otherPubs = collect(other);

    const result = await within(own.publish({ text: 'hello' }), 'the publish reply');
    assert.deepEqual(result, {});
    await ownPubs.waitFor(1);
    await otherPubs.waitFor(1);

    for (const pub of [ownPubs.pubs[0], otherPubs.pubs[0]]) {
      assert.equal(pub.channel, ch);
      assert.deepEqual(pub.data, { text: 'hello' });
      assert.equal(pub.offset, 1); // the first publication of a fresh stream
      assert.ok(pub.info, 'a client publication carries the publisher info');
      assert.equal(pub.info.user, 'alice');
      assert.equal(pub.info.client, pubCtx.client);
      assert.deepEqual(pub.info.connInfo, { name: 'Alice' });
    }
    // Client-level publish to the same channel reaches both too.
    await within(publisher.publish(ch, { text: 'again' }), 'the client.publish reply');
    await ownPubs.waitFor(2);
    await otherPubs.waitFor(2);
    assert.deepEqual(
      otherPubs.pubs.map((p) => [p.offset, p.data.text]),
      [
        [1, 'hello'],
        [2, 'again'],
      ],
    );
    publisher.disconnect();
    reader.disconnect();
  });

  test('history: limit, since and reverse', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel('js-history-');
    const client = newClient();
    await connected(client);
    const { sub } = await subscribed(client, ch);
    const pubs = collect(sub);
    for (let n = 1; n <= 5; n++) await within(sub.publish({ n }), `publish ${n}`);
    await pubs.waitFor(5);

    const top = await within(sub.history({ limit: 0 }), 'history limit 0');
    assert.deepEqual(top.publications, []); // stream top only
    assert.equal(top.offset, 5);
    assert.ok(top.epoch.length > 0);

    const all = await within(sub.history({ limit: -1 }), 'history limit -1');
    assert.deepEqual(
      all.publications.map((p) => [p.offset, p.data.n]),
      [1, 2, 3, 4, 5].map((n) => [n, n]),
    );
    assert.equal(all.epoch, top.epoch);

    const first2 = await within(sub.history({ limit: 2 }), 'history limit 2');
    assert.deepEqual(first2.publications.map((p) => p.data.n), [1, 2]);
    assert.equal(first2.offset, 5);

    const since = await within(
      sub.history({ limit: 2, since: { offset: 2, epoch: top.epoch } }),
      'history since offset 2',
    );
    assert.deepEqual(since.publications.map((p) => p.offset), [3, 4]);

    const rest = await within(client.history(ch, { limit: 10, since: { offset: 3, epoch: top.epoch } }), 'history since 3');
    assert.deepEqual(rest.publications.map((p) => p.offset), [4, 5]);

    const newest = await within(sub.history({ limit: 2, reverse: true }), 'history reverse');
    assert.deepEqual(newest.publications.map((p) => p.offset), [5, 4]);

    await assert.rejects(
      within(sub.history({ limit: 2, since: { offset: 2, epoch: 'not-the-epoch' } }), 'history with a wrong epoch'),
      (err) => err.code === 112,
    );
    client.disconnect();
  });

  test('presence and presence stats', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel('js-presence-');
    const a = newClient({ token: jwt({ sub: 'bob', info: { role: 'a' } }) });
    const b = newClient({ token: jwt({ sub: 'bob' }) });
    const c = newClient(); // anonymous: user ""
    const ids = [];
    for (const client of [a, b, c]) ids.push((await connected(client)).client);
    const { sub: subA } = await subscribed(a, ch);
    const joined = nextEvent(subA, 'join', (ctx) => ctx.info.client === ids[2]);
    await subscribed(b, ch);
    await subscribed(c, ch);
    const join = await joined; // join_leave is on in the default namespace
    assert.equal(join.info.user, '');

    const presence = await within(subA.presence(), 'presence');
    assert.deepEqual(Object.keys(presence.clients).sort(), [...ids].sort());
    assert.equal(presence.clients[ids[0]].user, 'bob');
    assert.equal(presence.clients[ids[0]].client, ids[0]);
    assert.deepEqual(presence.clients[ids[0]].connInfo, { role: 'a' });
    assert.equal(presence.clients[ids[2]].user, '');

    const stats = await within(a.presenceStats(ch), 'presence stats');
    assert.deepEqual(stats, { numClients: 3, numUsers: 2 });

    const left = nextEvent(subA, 'leave', (ctx) => ctx.info.client === ids[2]);
    c.disconnect();
    await left;
    const after = await within(subA.presenceStats(), 'presence stats after a leave');
    assert.deepEqual(after, { numClients: 2, numUsers: 1 });
    a.disconnect();
    b.disconnect();
  });

  test('rpc without server handlers answers 108 not available', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = newClient();
    await connected(client);
    await assert.rejects(within(client.rpc('getTime', { tz: 'UTC' }), 'the rpc reply'), (err) => {
      assert.equal(err.code, 108);
      assert.equal(err.message, 'not available');
      return true;
    });
    assert.equal(client.state, Centrifuge.State.Connected); // an error reply, not a disconnect
    client.disconnect();
  });

  test('recovery after the transport drops: exactly the missed publications, in order', { timeout: 30000 }, async () => {
    const ch = channel('recovery:js-');
    const BEFORE = 3;
    const MISSED = 7;

    // The subscriber's sockets, so the test can kill the TCP connection under the SDK.
    const sockets = [];
    class TrackedWebSocket extends WebSocket {
      constructor(...args) {
        super(...args);
        sockets.push(this);
      }
    }
    // getData runs before every connect attempt: the reconnect waits until the missed
    // publications are all published, so none of them can arrive live.
    let gate = Promise.resolve();
    let connectAttempts = 0;
    const subscriber = newClient({
      websocket: TrackedWebSocket,
      minReconnectDelay: 50,
      maxReconnectDelay: 200,
      getData: async () => {
        connectAttempts++;
        await gate;
        return null;
      },
    });
    const publisher = newClient();
    await connected(subscriber);
    await connected(publisher);

    // The namespace allows publishing to subscribers only (allow_publish_for_subscriber).
    await subscribed(publisher, ch);
    const { sub, ctx: first } = await subscribed(subscriber, ch);
    assert.equal(first.wasRecovering, false);
    assert.equal(first.recoverable, true);
    const seen = collect(sub);
    const subscribedEvents = [first];
    sub.on('subscribed', (ctx) => subscribedEvents.push(ctx));

    for (let n = 1; n <= BEFORE; n++) await within(publisher.publish(ch, { n }), `publish ${n}`);
    await seen.waitFor(BEFORE);
    assert.deepEqual(seen.pubs.map((p) => p.offset), [1, 2, 3]);

    let openGate;
    gate = new Promise((resolve) => {
      openGate = resolve;
    });
    const resubscribing = nextEvent(sub, 'subscribing');
    const reconnecting = nextEvent(subscriber, 'connecting');
    assert.equal(sockets.length, 1);
    sockets[0].terminate(); // drop the TCP connection: no close handshake, the SDK just sees it gone
    const connecting = await reconnecting;
    assert.equal(connecting.code, 1); // transport closed
    await resubscribing;

    for (let n = BEFORE + 1; n <= BEFORE + MISSED; n++) {
      await within(publisher.publish(ch, { n }), `publish ${n} while the subscriber is away`);
    }
    assert.equal(seen.pubs.length, BEFORE, 'nothing can arrive while the subscriber is disconnected');

    const resubscribed = nextEvent(sub, 'subscribed');
    openGate();
    const ctx = await resubscribed;
    assert.ok(connectAttempts >= 2, 'the SDK reconnected by itself');
    assert.equal(sockets.length >= 2, true);
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true);
    assert.equal(ctx.hasRecoveredPublications, true);
    assert.equal(ctx.streamPosition.epoch, first.streamPosition.epoch);

    await seen.waitFor(BEFORE + MISSED);
    await sleep(300); // a duplicate would show up within this
    const expected = Array.from({ length: BEFORE + MISSED }, (_, i) => i + 1);
    assert.deepEqual(seen.pubs.map((p) => p.offset), expected, 'offsets: no gap, no duplicate');
    assert.deepEqual(seen.pubs.map((p) => p.data.n), expected, 'data in publish order');
    assert.equal(subscribedEvents.length, 2);

    // The stream goes on live after recovery.
    await within(publisher.publish(ch, { n: BEFORE + MISSED + 1 }), 'publish after recovery');
    await seen.waitFor(BEFORE + MISSED + 1);
    assert.equal(seen.pubs.at(-1).offset, BEFORE + MISSED + 1);
    subscriber.disconnect();
    publisher.disconnect();
  });
});
