// Browser tests of the web console, run by TestConsoleInBrowser (console_browser_test.go): one
// chromium for every page. Prints "PASS name detail", "FAIL name: message" or "SKIP name: why"
// per test; "STOP" when the server must stop (then waits for "STOPPED"), and "START" when it must
// start again on the same address and store (then waits for "STARTED").
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const base = process.env.ESTUITE_URL;
const shots = process.env.ESTUITE_SCREENSHOTS;
const T = 8000; // the longest any expectation waits

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

// api calls the server directly, as another client would (node's fetch sends no Origin).
async function api(method, path, body) {
  const res = await fetch(base + path, { method, headers: body ? { 'Content-Type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const userDataDir = mkdtempSync(join(tmpdir(), 'estuite-chromium-'));
const ctx = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 860 },
});
ctx.setDefaultTimeout(T);
const page = ctx.pages()[0] || await ctx.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push('page error: ' + e.message));
page.on('console', (m) => {
  // A failed request is the browser's console error too: the tests cause some on purpose
  // (the restart). CSP violations and script errors are what matter here.
  if (m.type() === 'error' && !/Failed to load resource|ERR_CONNECTION_REFUSED|EventSource/.test(m.text())) problems.push('console: ' + m.text());
});

async function shot(name) {
  await page.screenshot({ path: join(shots, name + '.png'), fullPage: true });
}

async function check(name, f) {
  const start = Date.now();
  problems.length = 0;
  try {
    const skip = await f();
    if (problems.length) throw new Error(problems.join('; '));
    if (typeof skip === 'string') console.log(`SKIP ${name}: ${skip}`);
    else console.log(`PASS ${name} ${Date.now() - start} ms`);
  } catch (e) {
    console.log(`FAIL ${name}: ${String(e.message || e).split('\n').slice(0, 6).join(' | ')}`);
    try { await shot(name + '-failed'); } catch { /* best effort */ }
  }
}

const expectText = async (locator, re) => {
  await locator.first().waitFor();
  await page.waitForFunction(([sel, src]) => [...document.querySelectorAll(sel)].some((e) => new RegExp(src).test(e.textContent)), [locator._selector, re.source], { timeout: T })
    .catch(async () => { throw new Error(`${locator._selector}: want ${re}, see ${JSON.stringify((await locator.first().textContent()).slice(0, 200))}`); });
};

await check('streams', async () => {
  const listed = (await fetch(base + '/streams?limit=1')).ok;
  await page.goto(base + '/ui/#/streams');
  if (listed) {
    await page.locator('a.stream-link', { hasText: 'blob-1' }).first().waitFor();
    await page.fill('input[name=prefix]', 'order-');
    await page.click('form.inline >> text=Search');
    await page.waitForFunction(() => !document.body.textContent.includes('blob-1') && document.body.textContent.includes('order-2'));
    await shot('streams');
    // Paging the list: 50 a page.
    await page.fill('input[name=prefix]', 'customer-');
    await page.click('form.inline >> text=Search');
    await page.locator('a.stream-link', { hasText: 'customer-49' }).waitFor();
    if (await page.locator('a.stream-link', { hasText: 'customer-50' }).count()) throw new Error('more than 50 streams on a page');
    await page.click('.pager >> text=Next');
    await page.locator('a.stream-link', { hasText: 'customer-54' }).waitFor();
    if (await page.locator('a.stream-link').count() !== 5) throw new Error('the second page should hold customer-50 to 54');
    await page.click('.pager >> text=Previous');
    await page.locator('a.stream-link', { hasText: 'customer-00' }).waitFor();
    await page.fill('input[name=prefix]', 'order-');
    await page.click('form.inline >> text=Search');
    await page.click('a.stream-link >> text=order-1');
  } else {
    // A server without GET /streams: the page says so, and opens a stream by name.
    await shot('streams');
    await page.fill('input[name=stream]', 'order-1');
    await page.click('text=Open');
  }
  await page.locator('h1.stream-name', { hasText: 'order-1' }).waitFor();
  const data = page.locator('details.event pre.json', { hasText: '"total": "12.50"' });
  await data.first().waitFor();
  const text = await data.first().textContent();
  if (!text.includes('{\n  "total": "12.50",\n  "items": [\n    {\n      "sku": "A-1"')) throw new Error('data not pretty-printed: ' + JSON.stringify(text));
  await page.locator('pre.json', { hasText: '"correlationId": "req-7"' }).waitFor();
  await page.locator('.ev-type', { hasText: 'OrderPaid' }).waitFor();
  await shot('stream');
  // Paging both ways, 20 events a page, newest first.
  await page.goto(base + '/ui/#/stream/long-1');
  const range = async (want) => page.locator('.pager .muted', { hasText: want }).first().waitFor();
  await range('versions 26–45 of 45');
  await page.locator('details.event pre.json', { hasText: '"tick": 45' }).waitFor();
  await page.locator('.pager button', { hasText: 'Older' }).first().click();
  await range('versions 6–25 of 45');
  await page.locator('.pager button', { hasText: 'Older' }).first().click();
  await range('versions 1–5 of 45');
  await page.locator('.pager button', { hasText: 'Newer' }).first().click();
  await range('versions 6–25 of 45');
  await page.locator('.pager button', { hasText: 'Oldest' }).first().click();
  await range('versions 1–20 of 45');
  await page.locator('.pager button', { hasText: 'Newest' }).first().click();
  await range('versions 26–45 of 45');
  // Binary data: base64, with its size.
  await page.goto(base + '/ui/#/stream/blob-1');
  await page.locator('.tag', { hasText: 'binary, 5 bytes' }).waitFor();
  await page.locator('pre.b64', { hasText: 'aGVsbG8=' }).waitFor();
});

await check('feed', async () => {
  await page.goto(base + '/ui/#/feed');
  await page.locator('#feed-status', { hasText: 'live' }).waitFor();
  await page.locator('#feed-rows tr.ev-row').nth(19).waitFor(); // the latest 20 events, at once
  await api('POST', '/streams/tail-1', { events: [{ type: 'TailSeen', data: { n: 1 } }] });
  await page.locator('#feed-rows tr.ev-row', { hasText: 'tail-1' }).waitFor();
  await page.click('#feed-pause');
  await page.locator('#feed-status', { hasText: 'paused' }).waitFor();
  await api('POST', '/streams/tail-2', { events: [{ type: 'TailPaused', data: { n: 2 } }] });
  await page.waitForTimeout(1000);
  if (await page.locator('#feed-rows tr.ev-row', { hasText: 'tail-2' }).count()) throw new Error('an event appeared while paused');
  await page.click('#feed-pause');
  await page.locator('#feed-rows tr.ev-row', { hasText: 'tail-2' }).waitFor();
  await page.locator('#feed-status', { hasText: 'live' }).waitFor();
  await page.locator('#feed-rows tr.ev-row', { hasText: 'tail-2' }).click();
  await page.locator('#feed-rows pre.json', { hasText: '"n": 2' }).waitFor();
  await shot('feed');
});

await check('dispatcher', async () => {
  const feed = await api('GET', '/feed?after=4611686018427387904&limit=1');
  await page.goto(base + '/ui/#/dispatcher');
  await expectText(page.locator('#feed-head'), new RegExp('^' + feed.head.toLocaleString('en-US') + '$'));
  await page.locator('.stat', { hasText: 'Lease holder' }).waitFor();
  await page.locator('svg.chart').first().waitFor();
  await shot('dispatcher');
});

await check('subscriptions', async () => {
  await page.goto(base + '/ui/#/subscriptions');
  await page.locator('td', { hasText: 'read-model' }).waitFor();
  await page.click('a.group-link >> text=billing');
  const row = page.locator('table.parked tr', { hasText: 'invoice-1' });
  await row.waitFor();
  await expectText(page.locator('table.parked'), /card declined/);
  await shot('group');
  await row.locator('button.replay').click();
  await page.locator('#group-message', { hasText: '1 event marked for replay' }).waitFor();
  await page.locator('table.parked tr', { hasText: 'invoice-1' }).locator('.tag', { hasText: 'replay asked' }).waitFor();
  const parked = await api('GET', '/groups/billing/parked');
  if (!parked.parked.length || !parked.parked[0].replay) throw new Error('the server does not have the replay: ' + JSON.stringify(parked));
  await page.goto(base + '/ui/#/subscriptions');
  await page.locator('td', { hasText: 'read-model' }).waitFor();
  await shot('subscriptions');
});

await check('verify', async () => {
  const probe = await fetch(base + '/admin/verify/none');
  if (probe.status === 404 && (await probe.json()).error === 'not_found') return 'this build has no POST /admin/verify (it comes from another branch)';
  await page.goto(base + '/ui/#/verify');
  await page.click('#verify-start');
  await page.locator('#verify-progress').waitFor({ state: 'visible' });
  await page.locator('#verify-verdict', { hasText: 'OK' }).waitFor({ timeout: 30000 });
  const value = await page.locator('#verify-progress').evaluate((e) => e.value);
  if (value !== 1) throw new Error('progress bar at ' + value + ' after the end');
  await shot('verify');
});

await check('cost', async () => {
  await page.goto(base + '/ui/#/cost');
  for (const kind of ['point_read', 'query_page', 'batch', 'write', 'delete']) await page.locator(`#cost-kinds tr[data-kind=${kind}]`).waitFor();
  await expectText(page.locator('#monthly-cost'), /^\d[\d,]*\.\d+ USD$/);
  const batches = await page.locator('#cost-kinds tr[data-kind=batch] td.num').first().textContent();
  if (batches === '0') throw new Error('no batch counted, yet the tests appended');
  await shot('cost');
});

await check('reconnect', async () => {
  await page.goto(base + '/ui/#/feed');
  await page.locator('#feed-status', { hasText: 'live' }).waitFor();
  await page.locator('#feed-rows tr.ev-row', { hasText: 'tail-2' }).waitFor();
  await page.evaluate(() => {
    window.__statuses = [];
    const el = document.getElementById('feed-status');
    new MutationObserver(() => window.__statuses.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
  });
  console.log('STOP');
  await nextLine();
  await page.locator('#feed-status', { hasText: 'reconnecting…' }).waitFor();
  await shot('feed-reconnecting');
  console.log('START');
  await nextLine();
  // The page may already be back: EventSource retries every few seconds.
  await api('POST', '/streams/after-restart', { events: [{ type: 'SeenAfterRestart', data: { restarted: true } }] });
  await page.locator('#feed-rows tr.ev-row', { hasText: 'after-restart' }).waitFor({ timeout: 15000 });
  await page.locator('#feed-status', { hasText: 'live' }).waitFor();
  const statuses = await page.evaluate(() => window.__statuses);
  if (!statuses.includes('reconnecting…') || statuses[statuses.length - 1] !== 'live') throw new Error('statuses ' + JSON.stringify(statuses));
  const rows = await page.locator('#feed-rows tr.ev-row', { hasText: 'tail-2' }).count();
  if (rows !== 1) throw new Error(`tail-2 shown ${rows} times after the reconnection; want once`);
  await shot('feed-reconnected');
});

await check('login', async () => {
  const tokenBase = process.env.ESTUITE_TOKEN_URL;
  const probe = await fetch(tokenBase + '/auth/session');
  if (probe.status !== 200) return `this build has no browser sessions (GET /auth/session answers ${probe.status})`;
  await page.goto(tokenBase + '/ui/#/feed');
  await page.locator('#login-form').waitFor({ state: 'visible' });
  await page.fill('#login-token', 'not-the-token-0123456789');
  await page.click('#login-form button[type=submit]');
  await page.locator('#login-error', { hasText: 'not valid' }).waitFor();
  await shot('login');
  await page.fill('#login-token', process.env.ESTUITE_TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.locator('#feed-status', { hasText: 'live' }).waitFor();
  const stored = await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + location.href + document.cookie);
  if (stored.includes(process.env.ESTUITE_TOKEN)) throw new Error('the token is kept where scripts can read it: ' + stored);
  const res = await fetch(tokenBase + '/streams/login-1', { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + process.env.ESTUITE_TOKEN },
    body: JSON.stringify({ events: [{ type: 'SignedIn', data: {} }] }) });
  if (!res.ok) throw new Error('append with the token: ' + res.status);
  await page.locator('#feed-rows tr.ev-row', { hasText: 'login-1' }).waitFor();
  await page.click('#logout');
  await page.locator('#login-form').waitFor({ state: 'visible' });
});

await ctx.close();
rmSync(userDataDir, { recursive: true, force: true });
lines.close();
