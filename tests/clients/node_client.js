#!/usr/bin/env node
// Echo check with Node `ws` against a sluice ws-echo endpoint.
// usage: node node_client.js PORT on|off
// With SLUICE_CA=FILE in the environment: wss:// (TLS), trusting only that CA, the server
// verified as `sluice.test` (SNI).
// Text and binary messages of 1 B .. 1 MiB, whole and fragmented (fin: false frames),
// permessage-deflate on or off; every echo is compared byte for byte. Exit 0 on success.
'use strict';
const WebSocket = require('ws');
const crypto = require('crypto');
const fs = require('fs');

const [port, comp] = process.argv.slice(2);
const compression = comp === 'on';
const SIZES = [1, 125, 126, 65535, 65536, 1 << 20];
// Every read (handshake, each echo, the close) gives up after this long: a hung server
// fails the client with a message, not the CI budget.
const READ_TIMEOUT_MS = 30000;

function textOf(n) {
  const letters = 'abcdefghijklmnopqrstuvwxyz ';
  let s = '';
  for (let i = 0; i < n; i++) s += letters[(i * 7 + (i >> 5)) % letters.length];
  if (n >= 4) s = '\u20ac' + s.slice(3);
  if (Buffer.byteLength(s) !== n) throw new Error('bad text length');
  return s;
}

function fail(msg) {
  console.error(msg);
  process.exit(1);
}

const ca = process.env.SLUICE_CA;
const tls = ca ? { ca: fs.readFileSync(ca), servername: 'sluice.test' } : {};
const ws = new WebSocket(`${ca ? 'wss' : 'ws'}://127.0.0.1:${port}/`, {
  perMessageDeflate: compression,
  maxPayload: 0,
  handshakeTimeout: READ_TIMEOUT_MS,
  ...tls,
});
const queue = [];
ws.on('message', (data, isBinary) => queue.shift()(data, isBinary));
ws.on('error', (e) => fail(`error: ${e.message}`));
// The negotiated TLS version (wss://), read while the socket is open.
let proto = null;
ws.on('open', () => { if (ca) proto = ws._socket.getProtocol(); });

function echo(data, binary, fragmented) {
  return new Promise((resolve) => {
    const what = `binary=${binary} ${Buffer.byteLength(data)} B fragmented=${fragmented}`;
    const timer = setTimeout(() => fail(`timeout: no echo of ${what} within ${READ_TIMEOUT_MS} ms`), READ_TIMEOUT_MS);
    queue.push((got, isBinary) => {
      clearTimeout(timer);
      const want = Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (isBinary !== binary || !Buffer.from(got).equals(want)) {
        fail(`mismatch: binary=${binary} ${want.length} B fragmented=${fragmented}`);
      }
      resolve();
    });
    if (!fragmented) {
      ws.send(data, { binary });
    } else {
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
      const step = Math.max(1, Math.floor(buf.length / 4));
      // Split text on code point boundaries: the euro sign is the first 3 bytes.
      const cuts = [];
      for (let i = 0; i < buf.length; i += step) cuts.push(i);
      if (!binary && buf.length >= 4 && cuts.length > 1 && cuts[1] < 3) cuts[1] = 3;
      for (let k = 0; k < cuts.length; k++) {
        const end = k + 1 < cuts.length ? cuts[k + 1] : buf.length;
        ws.send(buf.subarray(cuts[k], end), { binary, fin: k + 1 === cuts.length });
      }
    }
  });
}

ws.on('open', async () => {
  const ext = ws.extensions;
  if (compression !== Boolean(ext)) fail(`compression negotiated: ${JSON.stringify(ext)}`);
  let count = 0;
  for (const n of SIZES) {
    for (const binary of [false, true]) {
      for (const fragmented of [false, true]) {
        const data = binary ? crypto.randomBytes(n) : textOf(n);
        await echo(data, binary, fragmented);
        count++;
      }
    }
  }
  ws.close(1000);
  setTimeout(() => fail(`timeout: no close within ${READ_TIMEOUT_MS} ms`), READ_TIMEOUT_MS).unref();
  ws.on('close', (code) => {
    if (code !== 1000) fail(`close code ${code}`);
    console.log(`node ws: ${count} messages echoed, compression=${compression}${proto ? `, tls=${proto}` : ''}`);
    process.exit(0);
  });
});
