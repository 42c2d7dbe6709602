#!/usr/bin/env node
// Echo check from headless Chromium (playwright-core) against a sluice ws-echo endpoint.
// usage: node chromium_client.js PORT
// The browser's own WebSocket sends text and binary messages of 1 B .. 1 MiB and compares
// every echo byte for byte. Chromium always offers permessage-deflate; run the server with
// --compression off to test without it. Prints the negotiated extensions. Exit 0 on success.
// With SLUICE_CERT=FILE (the server's PEM chain) in the environment: wss://, the server's
// key pinned with --ignore-certificate-errors-spki-list (the browser's own CA store is left
// alone; the pin is the SHA-256 of the leaf's SubjectPublicKeyInfo, as Chromium wants).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const { chromium } = require('playwright-core');

function spkiPin(pemFile) {
  const leaf = new crypto.X509Certificate(fs.readFileSync(pemFile));
  const spki = leaf.publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}

(async () => {
  const port = process.argv[2];
  const cert = process.env.SLUICE_CERT;
  const pin = cert ? [`--ignore-certificate-errors-spki-list=${spkiPin(cert)}`] : [];
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...pin,
    ],
  });
  try {
    const page = await browser.newPage();
    const result = await page.evaluate(async (url) => {
      const sizes = [1, 125, 126, 65535, 65536, 1 << 20];
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      // Every wait (open, each echo, the close) gives up after 30 s.
      const bounded = (p, what) => Promise.race([p, new Promise((_, err) => setTimeout(
        () => err(new Error(`timeout: no ${what} within 30 s`)), 30000))]);
      await bounded(new Promise((ok, err) => { ws.onopen = ok; ws.onerror = () => err(new Error('connect failed')); }), 'open');
      const pending = [];
      ws.onmessage = (e) => pending.shift()(e.data);
      const echo = (data) => bounded(new Promise((ok) => { pending.push(ok); ws.send(data); }),
        `echo of ${data.length ?? data.byteLength} (${typeof data})`);
      let count = 0;
      for (const n of sizes) {
        let s = '';
        for (let i = 0; i < n; i++) s += String.fromCharCode(97 + ((i * 7) % 26));
        if (n >= 4) s = '\u20ac' + s.slice(3);
        const gotText = await echo(s);
        if (gotText !== s) return { ok: false, why: `text ${n}` };
        const bytes = new Uint8Array(n);
        for (let i = 0; i < n; i++) bytes[i] = (i * 31 + (i >> 8)) & 0xff;
        const got = new Uint8Array(await echo(bytes.buffer));
        if (got.length !== n || got.some((b, i) => b !== bytes[i])) return { ok: false, why: `binary ${n}` };
        count += 2;
      }
      const ext = ws.extensions;
      const closed = new Promise((ok) => { ws.onclose = (e) => ok(e.code); });
      ws.close(1000);
      return { ok: true, count, ext, code: await bounded(closed, 'close') };
    }, `${cert ? 'wss' : 'ws'}://127.0.0.1:${port}/`);
    if (!result.ok) throw new Error(`mismatch: ${result.why}`);
    if (result.code !== 1000) throw new Error(`close code ${result.code}`);
    console.log(`chromium: ${result.count} messages echoed, extensions=${JSON.stringify(result.ext)}${cert ? ' over wss' : ''}`);
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e.message); process.exit(1); });
