#!/usr/bin/env node
// Pub/sub clients with Node `ws` for the gateway tests (the Node twin of
// tests/gateway/subscribers.py, same arguments and output).
// usage: node node_subscribers.js PORT PATH CLIENTS TOPICS PER_TOPIC [--ca FILE]
// Client i subscribes to topics t{i % TOPICS} and t{(i + 1) % TOPICS}, prints `ready` once
// every client is subscribed, then expects PER_TOPIC messages on each of its topics with
// data `{topic}:{k}` for k = 0, 1, ... in order. With --ca, the clients connect with wss://
// (TLS), trusting only the CA in FILE, and verify the server as `sluice.test` (SNI); each
// checks that TLS 1.3 was negotiated. The host is SLUICE_HOST (default 127.0.0.1).
// Prints `ok clients=N received=M` and exits 0 on success; exit 1 with a message otherwise.
'use strict';
const WebSocket = require('ws');
const fs = require('fs');

const args = process.argv.slice(2);
const caAt = args.indexOf('--ca');
const ca = caAt >= 0 ? args[caAt + 1] : null;
const [port, path, clientsArg, topicsArg, perTopicArg] = args;
const clients = Number(clientsArg);
const topics = Number(topicsArg);
const perTopic = Number(perTopicArg);
if (!port || !path || !(clients > 0) || !(topics > 0) || !(perTopic >= 0) || (caAt >= 0 && !ca)) {
  console.error('usage: node node_subscribers.js PORT PATH CLIENTS TOPICS PER_TOPIC [--ca FILE]');
  process.exit(2);
}
const host = process.env.SLUICE_HOST || '127.0.0.1';
// A hung gateway fails the clients, not the CI budget.
setTimeout(() => { console.error('node_subscribers.js: overall timeout'); process.exit(1); }, 120000).unref();

function fail(msg) {
  console.error(msg);
  process.exit(1);
}

const tls = ca ? { ca: fs.readFileSync(ca), servername: 'sluice.test' } : {};
let ready = 0;
let done = 0;
let received = 0;

function client(i) {
  const mine = [...new Set([`t${i % topics}`, `t${(i + 1) % topics}`])].sort();
  const next = Object.fromEntries(mine.map((t) => [t, 0]));
  const want = perTopic * mine.length;
  let got = 0;
  let acks = 0;
  const ws = new WebSocket(`${ca ? 'wss' : 'ws'}://${host}:${port}${path}`, {
    perMessageDeflate: false, maxPayload: 0, handshakeTimeout: 30000, ...tls,
  });
  ws.on('error', (e) => fail(`client ${i}: ${e.message}`));
  ws.on('close', (code) => {
    if (got < want) fail(`client ${i}: closed ${code} after ${got} of ${want} messages`);
  });
  ws.on('open', () => {
    if (ca) {
      const version = ws._socket.getProtocol();
      if (version !== 'TLSv1.3') fail(`client ${i}: negotiated ${version}`);
    }
    for (const t of mine) ws.send(JSON.stringify({ op: 'subscribe', topic: t }));
  });
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (acks < mine.length) {
      if (msg.op !== 'subscribed' || msg.topic !== mine[acks]) {
        fail(`client ${i}: subscribe reply ${JSON.stringify(msg)}`);
      }
      acks += 1;
      if (acks === mine.length) {
        ready += 1;
        if (ready === clients) console.log('ready');
        if (want === 0) finish();
      }
      return;
    }
    if (msg.op !== 'message' || !(msg.topic in next)) fail(`client ${i}: got ${JSON.stringify(msg)}`);
    const expected = `${msg.topic}:${next[msg.topic]}`;
    if (msg.data !== expected && !msg.data.startsWith(`${expected}|`)) {
      fail(`client ${i} topic ${msg.topic}: expected ${expected}, got ${msg.data.slice(0, 40)}`);
    }
    next[msg.topic] += 1;
    got += 1;
    if (got === want) finish();
  });
  function finish() {
    received += got;
    done += 1;
    ws.close(1000);
    if (done === clients) {
      console.log(`ok clients=${clients} received=${received}`);
      process.exit(0);
    }
  }
}

for (let i = 0; i < clients; i++) client(i);
