// The Protobuf build of the official JavaScript SDK (npm `centrifuge@5.8.0`, `centrifuge/build/protobuf`,
// subprotocol `centrifuge-protobuf`) against livehub, alone and next to JSON clients.
//
// Needs a running server (tests/peers/test_node_sdk.py starts one and runs this file with `node --test`).
// Every wait is bounded: a missing event fails its test instead of hanging it.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import { Centrifuge as JsonCentrifuge } from 'centrifuge';
import { Centrifuge } from 'centrifuge/build/protobuf';
import WebSocket from 'ws';

const ENDPOINT = process.env.LIVEHUB_WS_URL ?? 'ws://localhost:8000/connection/websocket';
const WAIT_MS = 5000;
const TEST_TIMEOUT_MS = 20000;

const channel = (prefix) => `${prefix}${randomUUID()}`;
const bytes = (text) => new TextEncoder().encode(text);

function within(promise, label, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function nextEvent(emitter, event, ms = WAIT_MS) {
  return within(new Promise((resolve) => emitter.once(event, resolve)), `'${event}'`, ms);
}

/** Collects `publication` events; `waitFor(n)` resolves once n have arrived. */
function collect(sub) {
  const pubs = [];
  sub.on('publication', (ctx) => pubs.push(ctx));
  const waitFor = async (n) => {
    const deadline = Date.now() + WAIT_MS;
    while (pubs.length < n) {
      if (Date.now() > deadline) throw new Error(`${n} publications on ${sub.channel} (got ${pubs.length})`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  return { pubs, waitFor };
}

const clients = [];
function newClient(Kind = Centrifuge, options = {}) {
  const client = new Kind(ENDPOINT, { websocket: WebSocket, timeout: WAIT_MS, ...options });
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

after(() => {
  for (const client of clients) client.disconnect();
});

describe('centrifuge-js 5.8.0 (protobuf build) against livehub', { timeout: 120000 }, () => {
  test('binary publications between protobuf clients, with offsets and info', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel('pb-pub-');
    const publisher = newClient();
    const reader = newClient();
    const pubCtx = await connected(publisher);
    assert.equal(pubCtx.transport, 'websocket');
    await connected(reader);
    const { sub: own } = await subscribed(publisher, ch);
    const { sub: other, ctx } = await subscribed(reader, ch);
    assert.equal(ctx.recoverable, true);
    assert.ok(ctx.streamPosition.epoch.length > 0);
    const got = collect(other);
    const payloads = [new Uint8Array([0, 255, 195, 40, 1]), bytes('{"text":"hello"}')];
    for (const data of payloads) {
      assert.deepEqual(await within(own.publish(data), 'the publish reply'), {});
    }
    await got.waitFor(2);
    assert.deepEqual(
      got.pubs.map((p) => [p.offset, Array.from(p.data)]),
      payloads.map((d, i) => [i + 1, Array.from(d)]),
    );
    assert.equal(got.pubs[0].info.client, pubCtx.client);
  });

  test('protobuf and JSON clients in one channel', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel('pb-mixed-');
    const pbClient = newClient();
    const jsonClient = newClient(JsonCentrifuge);
    await connected(pbClient);
    await connected(jsonClient);
    const { sub: pbSub } = await subscribed(pbClient, ch);
    const { sub: jsonSub } = await subscribed(jsonClient, ch);
    const pbPubs = collect(pbSub);
    const jsonPubs = collect(jsonSub);
    await within(jsonSub.publish({ from: 'json' }), 'the JSON publish reply');
    await within(pbSub.publish(bytes('{"from":"protobuf"}')), 'the protobuf publish reply');
    await pbPubs.waitFor(2);
    await jsonPubs.waitFor(2);
    assert.deepEqual(
      jsonPubs.pubs.map((p) => [p.offset, p.data]),
      [
        [1, { from: 'json' }],
        [2, { from: 'protobuf' }],
      ],
    );
    assert.deepEqual(
      pbPubs.pubs.map((p) => [p.offset, new TextDecoder().decode(p.data)]),
      [
        [1, '{"from":"json"}'],
        [2, '{"from":"protobuf"}'],
      ],
    );
  });

  test('fossil deltas, history and presence over protobuf', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel('pb-delta-');
    const client = newClient();
    const cctx = await connected(client);
    const { sub } = await subscribed(client, ch, { delta: 'fossil' });
    const got = collect(sub);
    const docs = [0, 1, 2, 3].map((n) => bytes(JSON.stringify({ body: 'x'.repeat(300), n })));
    for (const doc of docs) await within(sub.publish(doc), 'the publish reply');
    await got.waitFor(docs.length);
    assert.deepEqual(
      got.pubs.map((p) => new TextDecoder().decode(p.data)),
      docs.map((d) => new TextDecoder().decode(d)),
    );
    const history = await within(sub.history({ limit: 2 }), 'history');
    assert.deepEqual(
      history.publications.map((p) => [p.offset, new TextDecoder().decode(p.data)]),
      docs.slice(0, 2).map((d, i) => [i + 1, new TextDecoder().decode(d)]),
    );
    const presence = await within(sub.presence(), 'presence');
    assert.ok(presence.clients[cctx.client], 'the client is present');
    const stats = await within(sub.presenceStats(), 'presence stats');
    assert.equal(stats.numClients, 1);
  });
});
