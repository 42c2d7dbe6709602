#!/usr/bin/env node
// Headless Chromium (playwright-core) on a pub/sub page of the Sluice gateway.
// usage: node chromium_gateway.js WS_URL TOPIC COUNT [--http-port PORT]
// Serves gateway_page.html on http://127.0.0.1:PORT/ (default: a free port), opens it in a
// fresh Chromium profile, and waits until the page has subscribed to TOPIC; then prints
// `subscribed origin=http://127.0.0.1:PORT`. Whoever runs it publishes COUNT messages to
// TOPIC; once the page has rendered COUNT of them it prints
// `rendered [JSON array of the <li> texts, in page order]`, closes the WebSocket with 1000,
// prints `closed CODE extensions=...` and exits 0. Exit 1 with a message on stderr on any
// failure (not subscribed within 30 s, messages not rendered within 60 s, connection closed).
// For a wss:// URL, SLUICE_CERT=FILE (the server's PEM chain) pins the server's key with
// --ignore-certificate-errors-spki-list (the SHA-256 of the leaf's SubjectPublicKeyInfo);
// any other certificate still fails the page.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [wsUrl, topic, countArg, flag, portArg] = process.argv.slice(2);
const count = Number(countArg);
if (!wsUrl || !topic || !Number.isInteger(count) || count < 0 || (flag && flag !== '--http-port')) {
  console.error('usage: node chromium_gateway.js WS_URL TOPIC COUNT [--http-port PORT]');
  process.exit(2);
}
// Never outlive the test that started us.
setTimeout(() => { console.error('chromium_gateway.js: overall timeout'); process.exit(1); }, 150000).unref();

const page = fs.readFileSync(path.join(__dirname, 'gateway_page.html'));

function spkiPin(pemFile) {
  const leaf = new crypto.X509Certificate(fs.readFileSync(pemFile));
  const spki = leaf.publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}
const cert = process.env.SLUICE_CERT;
const pin = cert ? [`--ignore-certificate-errors-spki-list=${spkiPin(cert)}`] : [];

function serve(port) {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url.split('?')[0] === '/gateway_page.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(page);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((ok, err) => {
    server.once('error', err);
    server.listen(port, '127.0.0.1', () => ok(server));
  });
}

(async () => {
  const server = await serve(Number(portArg || 0));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        ...pin,
      ],
    });
    const tab = context.pages()[0] || await context.newPage();
    const query = new URLSearchParams({ ws: wsUrl, topic }).toString();
    await tab.goto(`${origin}/gateway_page.html?${query}`);
    const stateOf = () => tab.textContent('#state');
    await tab.waitForFunction(
      () => document.getElementById('state').textContent !== 'connecting',
      null, { timeout: 30000 },
    );
    const state = await stateOf();
    if (state !== 'subscribed') throw new Error(`page not subscribed: ${state}`);
    console.log(`subscribed origin=${origin}`);

    await tab.waitForFunction(
      (n) => document.querySelectorAll('#messages li').length >= n
        || document.getElementById('state').textContent !== 'subscribed',
      count, { timeout: 60000, polling: 50 },
    );
    const after = await stateOf();
    if (after !== 'subscribed') throw new Error(`connection ended early: ${after}`);
    const rendered = await tab.$$eval('#messages li', (items) => items.map((li) => li.textContent));
    console.log(`rendered ${JSON.stringify(rendered)}`);

    const extensions = await tab.evaluate(() => window.gatewaySocket.extensions);
    await tab.evaluate(() => window.gatewaySocket.close(1000));
    await tab.waitForFunction(
      () => document.getElementById('state').textContent.startsWith('closed'),
      null, { timeout: 10000 },
    );
    console.log(`${await stateOf()} extensions=${JSON.stringify(extensions)}`);
  } finally {
    if (context) await context.close();
    server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
})().catch((e) => { console.error(`chromium_gateway.js: ${e.message}`); process.exit(1); });
