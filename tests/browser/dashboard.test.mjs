// The dashboard in headless Chromium against a running api and workers
// (scripts/browser-test.sh starts them and sets DASHBOARD_URL).
//
// Every wait is on DOM state (locators, waitForFunction), never a fixed sleep.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const DASHBOARD_URL = process.env.DASHBOARD_URL ?? 'http://127.0.0.1:18181/';
const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT_PATH =
  process.env.SCREENSHOT_PATH ?? fileURLToPath(new URL('../../run/browser-test/dashboard.png', import.meta.url));
// Set when the api runs with API_KEYS: the page must ask for it.
const API_KEY = process.env.DASHBOARD_API_KEY ?? '';
const ORIGIN = new URL(DASHBOARD_URL).origin;

let browser;
let page;
const offsite = []; // requests to anything but the api
const pageErrors = []; // uncaught exceptions and console errors
const streams = { open: 0, max: 0 }; // SSE requests in flight

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    locale: 'en-GB',
    timezoneId: 'UTC',
    colorScheme: 'light',
  });
  page = await context.newPage();
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.origin !== ORIGIN && url.protocol !== 'data:') offsite.push(req.url());
  });
  const isStream = (req) => req.headers().accept === 'text/event-stream';
  page.on('request', (req) => {
    if (!isStream(req)) return;
    streams.open += 1;
    streams.max = Math.max(streams.max, streams.open);
  });
  for (const done of ['requestfinished', 'requestfailed']) {
    page.on(done, (req) => {
      if (isStream(req)) streams.open -= 1;
    });
  }
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  page.on('console', (msg) => {
    // Chromium logs every 4xx answer to fetch(); the tests provoke a 400 and 401s on purpose.
    const expected = /status of (400 \(Bad Request\)|401 \(Unauthorized\))/;
    if (msg.type() === 'error' && !expected.test(msg.text())) pageErrors.push(msg.text());
  });
  await page.goto(DASHBOARD_URL);
});

after(async () => {
  await browser?.close();
});

/** Fills the form, submits, and returns the new task's id from the api's answer. */
async function submit(fields) {
  for (const [name, value] of Object.entries(fields)) {
    await page.getByLabel(name).fill(String(value));
  }
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/tasks'),
    page.getByRole('button', { name: 'Submit task' }).click(),
  ]);
  assert.equal(response.status(), 202, 'the api accepts the task');
  const { task_id: id } = await response.json();
  await page.locator(`li.task[data-task-id="${id}"]`).waitFor();
  return id;
}

const row = (id) => page.locator(`li.task[data-task-id="${id}"]`);

/** Waits until the task's row shows `status` (auto-waiting locator). */
async function waitForStatus(id, status, timeout = 30_000) {
  await page.locator(`li.task[data-task-id="${id}"][data-status="${status}"]`).waitFor({ timeout });
}

/** Records every value the task's progress bar shows, from now on. */
async function recordProgress(id) {
  await page.evaluate((taskId) => {
    window.__progress ??= {};
    const seen = (window.__progress[taskId] = []);
    const li = document.querySelector(`li.task[data-task-id="${taskId}"]`);
    const bar = li.querySelector('.bar');
    seen.push(Number(bar.getAttribute('aria-valuenow')));
    new MutationObserver(() => seen.push(Number(bar.getAttribute('aria-valuenow')))).observe(bar, {
      attributes: true,
      attributeFilter: ['aria-valuenow'],
    });
  }, id);
}

test('the page asks for the API key, refuses a wrong one, then loads the list', async (t) => {
  if (!API_KEY) {
    t.skip('the api runs without API_KEYS');
    return;
  }
  const dialog = page.getByRole('dialog', { name: 'API key' });
  await dialog.waitFor();
  assert.match(await dialog.textContent(), /needs an API key/);

  await dialog.getByLabel('Key').fill('not-the-key');
  await dialog.getByRole('button', { name: 'Save' }).click();
  await page.getByText('The api did not accept the stored API key').waitFor();

  await dialog.getByLabel('Key').fill(API_KEY);
  await dialog.getByRole('button', { name: 'Save' }).click();
  await dialog.waitFor({ state: 'hidden' });
  await page.locator('#tasks-empty').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => localStorage.getItem('taskforge.apiKey')), API_KEY);
});

test('a submitted task moves its bar to 100 % and turns COMPLETED', async () => {
  const id = await submit({ Stages: 3, 'Stage length (ms)': 300, 'Timeout (s)': 30, Priority: 5 });
  await recordProgress(id);

  await waitForStatus(id, 'COMPLETED');

  const r = row(id);
  assert.equal(await r.locator('.status').textContent(), 'COMPLETED');
  assert.equal(await r.getByRole('progressbar').getAttribute('aria-valuenow'), '100');
  // The fill is drawn at full width (after its transition).
  await page.waitForFunction(
    (taskId) => {
      const li = document.querySelector(`li.task[data-task-id="${taskId}"]`);
      const bar = li.querySelector('.bar').getBoundingClientRect();
      const fill = li.querySelector('.fill').getBoundingClientRect();
      return bar.width > 0 && Math.abs(fill.width - bar.width) < 1;
    },
    id,
  );
  assert.match(await r.locator('.meta').textContent(), /100 % · 3\/3 stages · browser-w[12]/);
  assert.ok(await r.locator('.cancel').isHidden(), 'no cancel button on a finished task');

  // The bar moved there through the stages, live, never backwards.
  const seen = await page.evaluate((taskId) => window.__progress[taskId], id);
  assert.ok(
    seen.some((p) => p > 0 && p < 100),
    `the bar showed an intermediate value: ${seen}`,
  );
  assert.deepEqual([...seen].sort((a, b) => a - b), seen, `progress never went backwards: ${seen}`);
  assert.equal(seen.at(-1), 100);

  // Its history, in the side panel.
  await r.getByRole('button', { name: `Show the history of task ${id}` }).click();
  const history = page.getByRole('complementary');
  await history.locator('#history-events tr').nth(5).waitFor();
  const rows = await history.locator('#history-events tr').allTextContents();
  assert.equal(rows.length, 6, `QUEUED, PROCESSING, three stages, COMPLETED: ${rows.join(' | ')}`);
  assert.match(rows[0], /^1.*status\s*QUEUED/);
  assert.match(rows.at(-1), /status\s*COMPLETED.*100 %/);
  assert.match(await history.locator('#history-summary').textContent(), /hello world/);
});

test('cancelling a running task turns it CANCELLED', async () => {
  const id = await submit({ Stages: 5, 'Stage length (ms)': 3000, 'Timeout (s)': 60, Priority: 5 });
  await waitForStatus(id, 'PROCESSING');

  await row(id).getByRole('button', { name: `Cancel task ${id.slice(0, 8)}` }).click();

  await waitForStatus(id, 'CANCELLED', 10_000);
  const r = row(id);
  assert.equal(await r.locator('.status').textContent(), 'CANCELLED');
  assert.ok(Number(await r.getByRole('progressbar').getAttribute('aria-valuenow')) < 100);
  assert.ok(await r.locator('.cancel').isHidden(), 'no cancel button on a finished task');
});

test('health shows Redis and RabbitMQ up, and links to the management UI on this host', async () => {
  await page.locator('.pill[data-check="redis"][data-state="ok"]').waitFor();
  await page.locator('.pill[data-check="rabbitmq"][data-state="ok"]').waitFor();
  assert.match(await page.locator('.pill[data-check="rabbitmq"]').textContent(), /RabbitMQ\s+ok · [\d.]+ ms/);
  const href = await page.getByRole('link', { name: 'RabbitMQ management' }).getAttribute('href');
  assert.equal(href, `http://${new URL(DASHBOARD_URL).hostname}:15672/`);
});

test('a form error from the api is shown to the user', async () => {
  await page.getByLabel('Stages').fill('0');
  await page.getByLabel('Stage length (ms)').fill('');
  await page.getByRole('button', { name: 'Submit task' }).click();
  const message = page.locator('#form-message.error');
  await message.waitFor();
  assert.match(await message.textContent(), /\(validation\)/);
});

test('screenshot of the dashboard, with a task in progress', async () => {
  // A longer task so the picture shows a live bar beside the two finished ones.
  const id = await submit({ Stages: 10, 'Stage length (ms)': 1000, 'Timeout (s)': 60, Priority: 5, 'Input (JSON, optional)': '{"demo": true}' });
  await page.waitForFunction(
    (taskId) => Number(document.querySelector(`li.task[data-task-id="${taskId}"] .bar`).getAttribute('aria-valuenow')) >= 30,
    id,
    { timeout: 30_000 },
  );
  await page.locator('.pill[data-check="redis"][data-state="ok"]').waitFor();
  await page.locator('#form-message').evaluate((el) => {
    el.textContent = '';
  });
  mkdirSync(dirname(SCREENSHOT_PATH), { recursive: true });
  await page.screenshot({ path: SCREENSHOT_PATH, fullPage: true, animations: 'disabled' });

  await row(id).getByRole('button', { name: `Cancel task ${id.slice(0, 8)}` }).click();
  await waitForStatus(id, 'CANCELLED', 10_000);
});

test('more running tasks than live streams all reach COMPLETED', async () => {
  // The page keeps at most four streams open (HTTP/1.1 allows six
  // connections per host); the others wait for a slot and then replay what
  // they missed.
  streams.max = streams.open;
  const ids = [];
  for (let i = 0; i < 7; i += 1) {
    ids.push(await submit({ Stages: 2, 'Stage length (ms)': 700, 'Timeout (s)': 30, Priority: 5, 'Input (JSON, optional)': '' }));
  }
  for (const id of ids) await waitForStatus(id, 'COMPLETED');
  for (const id of ids) {
    assert.equal(await row(id).getByRole('progressbar').getAttribute('aria-valuenow'), '100', id);
  }
  assert.equal(streams.max, 4, 'four streams at most, and all four used');
});

test('in a narrow window nothing overflows sideways', async () => {
  await page.setViewportSize({ width: 380, height: 800 });
  try {
    await page.waitForFunction(() => document.documentElement.clientWidth === 380);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.equal(overflow, 0, 'no horizontal scrolling at 380 px');
    const shot = SCREENSHOT_PATH.replace(/\.png$/, '-narrow.png');
    await page.screenshot({ path: shot, fullPage: true, animations: 'disabled' });
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});

test('the page made no request to another host and threw no error', () => {
  assert.deepEqual(offsite, []);
  assert.deepEqual(pageErrors, []);
});
