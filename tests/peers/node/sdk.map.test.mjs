// Map subscriptions (Centrifugo 6.8) with the official JavaScript SDK, npm `centrifuge@5.8.0`
// over `ws`: state pages, live updates and removals, client writes, recovery without a
// second `sync`, per-key fossil deltas, presence as a map.
//
// Needs a running server: `livehub serve --config tests/peers/config.json --host localhost --port 8000`
// (tests/peers/test_node_sdk.py starts one and runs this file with `node --test`); the
// namespaces `jsmap` and `jsmapwho` of that config. Every wait is bounded.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const ENDPOINT = process.env.LIVEHUB_WS_URL ?? 'ws://localhost:8000/connection/websocket';
const API = ENDPOINT.replace('ws://', 'http://').replace('/connection/websocket', '/api');
const API_KEY = 'api_key'; // http_api.key in tests/peers/config.json
const WAIT_MS = 5000;
const TEST_TIMEOUT_MS = 20000;

const channel = () => `jsmap:${randomUUID()}`;

function within(promise, label, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function nextEvent(emitter, event, filter = () => true) {
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
  );
}

async function api(method, body) {
  const response = await fetch(`${API}/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200);
  const reply = await response.json();
  assert.equal(reply.error, undefined, JSON.stringify(reply.error));
  return reply.result;
}

const clients = [];
function newClient() {
  const client = new Centrifuge(ENDPOINT, { websocket: WebSocket, timeout: WAIT_MS });
  client.on('error', () => {});
  clients.push(client);
  return client;
}

async function connected(client) {
  const ctx = nextEvent(client, 'connected');
  client.connect();
  return ctx;
}

after(() => {
  for (const client of clients) client.disconnect();
});

describe('centrifuge-js 5.8.0 map subscriptions against livehub', { timeout: 120000 }, () => {
  test('state in pages, then live updates and removals', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel();
    for (const key of ['a', 'b', 'c', 'd', 'e']) await api('map_publish', { channel: ch, key, data: { key } });
    const client = newClient();
    await connected(client);
    const sub = client.newMapSubscription(ch, { pageSize: 2 });
    const sync = nextEvent(sub, 'sync');
    sub.subscribe();
    const entries = (await sync).entries;
    assert.deepEqual(entries.map((e) => e.key).sort(), ['a', 'b', 'c', 'd', 'e']);
    assert.deepEqual(entries.find((e) => e.key === 'c').data, { key: 'c' });

    const update = nextEvent(sub, 'update');
    await api('map_publish', { channel: ch, key: 'f', data: { n: 6 } });
    const u = await update;
    assert.equal(u.key, 'f');
    assert.deepEqual(u.data, { n: 6 });
    const removal = nextEvent(sub, 'update');
    await api('map_remove', { channel: ch, key: 'a' });
    const r = await removal;
    assert.equal(r.key, 'a');
    assert.equal(r.removed, true);
    client.disconnect();
  });

  test('a subscriber writes and removes keys', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel();
    const client = newClient();
    await connected(client);
    const sub = client.newMapSubscription(ch);
    sub.subscribe();
    await within(sub.ready(), 'subscribed');
    const added = nextEvent(sub, 'update');
    await within(sub.publish('mine', { v: 1 }), 'publish');
    assert.equal((await added).key, 'mine');
    const removed = nextEvent(sub, 'update');
    await within(sub.remove('mine'), 'remove');
    assert.equal((await removed).removed, true);
    const state = await api('map_read_state', { channel: ch });
    assert.deepEqual(state.entries, []);
    client.disconnect();
  });

  test('a reconnect recovers missed updates without a second sync', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel();
    const client = newClient();
    await connected(client);
    const sub = client.newMapSubscription(ch);
    const firstSync = nextEvent(sub, 'sync');
    sub.subscribe();
    await firstSync;
    const live = nextEvent(sub, 'update');
    await api('map_publish', { channel: ch, key: 'before', data: 1 });
    await live;

    let syncs = 0;
    sub.on('sync', () => syncs++);
    client.disconnect();
    await api('map_publish', { channel: ch, key: 'missed', data: 2 });
    const resubscribed = nextEvent(sub, 'subscribed');
    const missed = nextEvent(sub, 'update');
    client.connect();
    assert.equal((await resubscribed).recovered, true);
    assert.equal((await missed).key, 'missed');
    assert.equal(syncs, 0);
    client.disconnect();
  });

  test('fossil deltas per key', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel();
    const client = newClient();
    await connected(client);
    const sub = client.newMapSubscription(ch, { delta: 'fossil' });
    sub.subscribe();
    await within(sub.ready(), 'subscribed');
    const pad = 'p'.repeat(400);
    const got = [];
    const all = within(
      new Promise((resolve) => sub.on('update', (u) => { got.push(u); if (got.length === 4) resolve(); })),
      '4 updates',
    );
    for (const [key, n] of [['x', 1], ['y', 1], ['x', 2], ['y', 2]]) {
      await api('map_publish', { channel: ch, key, data: { n, pad } });
    }
    await all;
    assert.deepEqual(got.map((u) => [u.key, u.data.n]), [['x', 1], ['y', 1], ['x', 2], ['y', 2]]);
    const stats = sub.deltaStats();
    assert.equal(stats.numFullPayloads, 2);
    assert.equal(stats.numDeltaPayloads, 2);
    client.disconnect();
  });

  test('presence as a map of clients', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ch = channel();
    const watcher = newClient();
    await connected(watcher);
    const who = watcher.newMapClientsSubscription(`jsmapwho:${ch}`);
    const empty = nextEvent(who, 'sync');
    who.subscribe();
    assert.deepEqual((await empty).entries, []);

    const player = newClient();
    const { client: playerId } = await connected(player);
    const joined = nextEvent(who, 'update');
    const sub = player.newMapSubscription(ch);
    sub.subscribe();
    const j = await joined;
    assert.equal(j.key, playerId);
    assert.equal(j.info.client, playerId);
    const left = nextEvent(who, 'update');
    sub.unsubscribe();
    const l = await left;
    assert.equal(l.key, playerId);
    assert.equal(l.removed, true);
    player.disconnect();
    watcher.disconnect();
  });
});
