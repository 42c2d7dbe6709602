#!/usr/bin/env node
// A browser page on the gateway's pub/sub route, driven by headless Chromium
// (playwright-core).
// usage: node chromium_gateway.js HOST PORT PATH TOPIC COUNT
// The page opens a WebSocket to ws://HOST:PORT/PATH, subscribes to TOPIC and appends every
// delivered message to a list. Prints `ready` once subscribed, waits until COUNT messages
// are shown (60 s at most), then prints the list's items, one per line, prefixed `item: `.
// Exit 0 on success.
'use strict';
const { chromium } = require('playwright-core');

const PAGE = `<!doctype html>
<html><body>
<p id="status">connecting</p>
<ul id="messages"></ul>
<script>
function start(url, topic) {
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', topic }));
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.op === 'subscribed') {
      document.getElementById('status').textContent = 'subscribed';
    } else if (m.op === 'message') {
      const li = document.createElement('li');
      li.textContent = m.topic + ': ' + m.data;
      document.getElementById('messages').appendChild(li);
    }
  };
  ws.onclose = (e) => { document.getElementById('status').textContent = 'closed ' + e.code; };
}
</script>
</body></html>`;

(async () => {
  const [host, port, path, topic, count] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    const page = await browser.newPage();
    await page.setContent(PAGE);
    await page.evaluate(([url, t]) => start(url, t), [`ws://${host}:${port}${path}`, topic]);
    await page.waitForFunction(
      () => document.getElementById('status').textContent === 'subscribed',
      null, { timeout: 30000 });
    console.log('ready');
    await page.waitForFunction(
      (n) => document.querySelectorAll('#messages li').length >= n,
      Number(count), { timeout: 60000 });
    const items = await page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent));
    for (const item of items) console.log(`item: ${item}`);
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e.message); process.exit(1); });
