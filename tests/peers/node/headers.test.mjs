// Headers emulation with the official JavaScript SDK (npm `centrifuge@5.8.0` over `ws`): its
// `headers` option travels inside the connect command, and an app whose on_connect depends on
// the X-Token header (tests/peers/headers_app.py, client.emulated_headers = ["x-token"]) sees it.
// tests/peers/test_headers_emulation.py serves the app and sets LIVEHUB_WS_URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const ENDPOINT = process.env.LIVEHUB_WS_URL;
const WAIT_MS = 5000;

function within(promise, label, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function once(emitter, event) {
  return within(new Promise((resolve) => emitter.once(event, resolve)), `'${event}'`);
}

test('the headers option reaches on_connect; names outside the allow-list are dropped', { timeout: 20000 }, async () => {
  const client = new Centrifuge(ENDPOINT, {
    websocket: WebSocket,
    headers: { 'X-Token': 'alice', 'X-Admin': 'yes' },
  });
  const connected = once(client, 'connected');
  client.connect();
  await connected;
  const reply = await within(client.rpc('whoami', {}), 'the whoami reply');
  assert.deepEqual(reply.data, { user: 'alice', headers: { 'x-token': 'alice' } });
  client.disconnect();
});

test('without the header on_connect knows no user: the connection is refused', { timeout: 20000 }, async () => {
  const client = new Centrifuge(ENDPOINT, { websocket: WebSocket, headers: { 'X-Other': 'alice' } });
  const disconnected = once(client, 'disconnected');
  client.connect();
  const ctx = await disconnected;
  assert.equal(ctx.code, 3501);
  client.disconnect();
});

test('setHeaders: the next connect carries the new headers', { timeout: 20000 }, async () => {
  const client = new Centrifuge(ENDPOINT, { websocket: WebSocket, headers: { 'X-Token': 'bob' } });
  let connected = once(client, 'connected');
  client.connect();
  await connected;
  assert.equal((await within(client.rpc('whoami', {}), 'whoami')).data.user, 'bob');
  client.disconnect();
  client.setHeaders({ 'X-Token': 'carol' });
  connected = once(client, 'connected');
  client.connect();
  await connected;
  assert.equal((await within(client.rpc('whoami', {}), 'whoami')).data.user, 'carol');
  client.disconnect();
});
