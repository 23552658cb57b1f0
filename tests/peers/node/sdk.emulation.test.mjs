// The official JavaScript SDK (npm `centrifuge@5.8.0`) over HTTP-streaming (JSON and Protobuf) and SSE
// (JSON, with the `eventsource` package: Node 20 has no EventSource), with bidirectional emulation:
// the stream comes from LIVEHUB_HTTP_URL, the client's commands go to LIVEHUB_EMULATION_URL, which is
// another node of the cluster when tests/peers/test_node_emulation.py runs it against two nodes.
//
// Needs running servers (tests/peers/test_node_emulation.py starts them and runs this file with
// `node --test`). Every wait is bounded: a missing event fails its test instead of hanging it.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';

import { Centrifuge as JsonCentrifuge } from 'centrifuge';
import { Centrifuge as ProtobufCentrifuge } from 'centrifuge/build/protobuf';
import { EventSource } from 'eventsource';

const HTTP_URL = process.env.LIVEHUB_HTTP_URL;
const EMULATION_URL = process.env.LIVEHUB_EMULATION_URL ?? `${HTTP_URL}/emulation`;
const API_URL = process.env.LIVEHUB_API_URL ?? HTTP_URL;
const API_KEY = process.env.LIVEHUB_API_KEY ?? 'api_key';
const HMAC_SECRET = 'secret';
const PING_INTERVAL_MS = Number(process.env.LIVEHUB_PING_INTERVAL_MS ?? 0);
const WAIT_MS = 5000;
const TEST_TIMEOUT_MS = 30000;
assert.ok(HTTP_URL, 'LIVEHUB_HTTP_URL must name the server');

const CASES = [
  { transport: 'http_stream', Centrifuge: JsonCentrifuge, protobuf: false },
  { transport: 'http_stream', Centrifuge: ProtobufCentrifuge, protobuf: true },
  { transport: 'sse', Centrifuge: JsonCentrifuge, protobuf: false },
];

const channel = (prefix) => `${prefix}${randomUUID()}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function jwt(claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const signed = `${b64({ typ: 'JWT', alg: 'HS256' })}.${b64(claims)}`;
  return `${signed}.${createHmac('sha256', HMAC_SECRET).update(signed).digest('base64url')}`;
}

function within(promise, label, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

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

async function api(method, params) {
  const response = await fetch(`${API_URL}/api/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY },
    body: JSON.stringify(params),
  });
  assert.equal(response.status, 200, `/api/${method} answered ${response.status}`);
  const body = await response.json();
  assert.equal(body.error, undefined, `/api/${method}: ${JSON.stringify(body.error)}`);
  return body.result;
}

const clients = [];
function newClient(c, options = {}) {
  const path = c.transport === 'sse' ? '/connection/sse' : '/connection/http_stream';
  const client = new c.Centrifuge([{ transport: c.transport, endpoint: `${HTTP_URL}${path}` }], {
    emulationEndpoint: EMULATION_URL,
    eventsource: EventSource,
    timeout: WAIT_MS,
    ...options,
  });
  client.on('error', () => {});
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

const encode = (c, value) => (c.protobuf ? new TextEncoder().encode(JSON.stringify(value)) : value);
const decode = (c, data) => (c.protobuf ? JSON.parse(new TextDecoder().decode(data)) : data);

after(() => {
  for (const client of clients) client.disconnect();
});

for (const c of CASES) {
  const label = `${c.transport} ${c.protobuf ? 'protobuf' : 'json'}`;

  describe(`centrifuge-js 5.8.0 over ${label}`, { timeout: 180000 }, () => {
    test('connect and disconnect', { timeout: TEST_TIMEOUT_MS }, async () => {
      const client = newClient(c);
      const ctx = await connected(client);
      assert.equal(ctx.transport, c.transport);
      assert.ok(ctx.client.length > 0);
      const disconnected = nextEvent(client, 'disconnected');
      client.disconnect();
      assert.equal((await disconnected).code, 0);
    });

    test('subscribe, publish and receive, the publisher and another client', { timeout: TEST_TIMEOUT_MS }, async () => {
      const ch = channel('emu-pub-');
      const a = newClient(c, { token: jwt({ sub: 'emu-a' }) });
      const b = newClient(c);
      const actx = await connected(a);
      await connected(b);
      const { sub: subA, ctx } = await subscribed(a, ch);
      assert.equal(ctx.recoverable, true);
      const { sub: subB } = await subscribed(b, ch);
      const gotA = collect(subA);
      const gotB = collect(subB);
      for (const n of [1, 2, 3]) {
        assert.deepEqual(await within(subA.publish(encode(c, { n })), 'the publish reply'), {});
      }
      await gotA.waitFor(3);
      await gotB.waitFor(3);
      assert.deepEqual(gotB.pubs.map((p) => [p.offset, decode(c, p.data).n]), [[1, 1], [2, 2], [3, 3]]);
      assert.equal(gotB.pubs[0].info.client, actx.client);
      assert.equal(gotB.pubs[0].info.user, 'emu-a');
      // the server API publishes too (on the API node: another node in the cluster run)
      await api('publish', { channel: ch, data: { n: 4 } });
      await gotA.waitFor(4);
      assert.equal(decode(c, gotA.pubs[3].data).n, 4);
    });

    test('rpc without a handler is 108; presence and presence stats', { timeout: TEST_TIMEOUT_MS }, async () => {
      const client = newClient(c, { token: jwt({ sub: 'emu-presence' }) });
      const cctx = await connected(client);
      await assert.rejects(within(client.rpc('nothing', encode(c, {})), 'the rpc reply'), (err) => err.code === 108);
      const ch = channel('emu-presence-');
      const { sub } = await subscribed(client, ch);
      const presence = await within(sub.presence(), 'presence');
      assert.deepEqual(Object.keys(presence.clients), [cctx.client]);
      assert.equal(presence.clients[cctx.client].user, 'emu-presence');
      const stats = await within(sub.presenceStats(), 'presence stats');
      assert.deepEqual([stats.numClients, stats.numUsers], [1, 1]);
    });

    test('history, and recovery of what was published while disconnected', { timeout: TEST_TIMEOUT_MS }, async () => {
      const ch = channel('emu-recovery-');
      const client = newClient(c);
      await connected(client);
      const { sub } = await subscribed(client, ch);
      const got = collect(sub);
      await api('publish', { channel: ch, data: { n: 1 } });
      await got.waitFor(1);
      const history = await within(sub.history({ limit: 10 }), 'history');
      assert.deepEqual(history.publications.map((p) => decode(c, p.data).n), [1]);
      const disconnected = nextEvent(client, 'disconnected');
      client.disconnect();
      await disconnected;
      await api('publish', { channel: ch, data: { n: 2 } });
      await api('publish', { channel: ch, data: { n: 3 } });
      const resubscribed = nextEvent(sub, 'subscribed');
      client.connect();
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true);
      await got.waitFor(3);
      assert.deepEqual(got.pubs.map((p) => [p.offset, decode(c, p.data).n]), [[1, 1], [2, 2], [3, 3]]);
    });

    test('server disconnects: 3503 ends it, 4001 makes the SDK reconnect', { timeout: TEST_TIMEOUT_MS }, async () => {
      const user = `emu-${randomUUID()}`;
      const client = newClient(c, { token: jwt({ sub: user }) });
      await connected(client);
      const connecting = nextEvent(client, 'connecting', (ctx) => ctx.code === 4001);
      const reconnected = nextEvent(client, 'connected', () => true, 10000);
      await api('disconnect', { user, disconnect: { code: 4001, reason: 'come back' } });
      assert.equal((await connecting).reason, 'come back');
      await reconnected;
      const disconnected = nextEvent(client, 'disconnected');
      await api('disconnect', { user });
      const d = await disconnected;
      assert.deepEqual([d.code, d.reason], [3503, 'force disconnect']);
      assert.equal(client.state, 'disconnected');
    });

    test('an invalid token is refused with 3500, not retried', { timeout: TEST_TIMEOUT_MS }, async () => {
      const client = newClient(c, { token: 'not-a-jwt' });
      const disconnected = nextEvent(client, 'disconnected');
      client.connect();
      const d = await disconnected;
      assert.equal(d.code, 3500);
    });

    test('server pings are answered through emulation: the connection stays', { timeout: TEST_TIMEOUT_MS }, async () => {
      assert.ok(PING_INTERVAL_MS > 0, 'LIVEHUB_PING_INTERVAL_MS must give the server ping interval');
      const client = newClient(c);
      await connected(client);
      let dropped = null;
      client.on('disconnected', (ctx) => (dropped = ctx));
      client.on('connecting', (ctx) => (dropped = ctx));
      await sleep(PING_INTERVAL_MS * 2.5);
      assert.equal(dropped, null, `dropped: ${JSON.stringify(dropped)}`);
      assert.equal(client.state, 'connected');
    });
  });
}
