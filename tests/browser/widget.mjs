// Browser test of the Frontdesk web chat widget against a running server.
//
//   cd tests/browser && npm ci
//   node tests/browser/widget.mjs --base http://127.0.0.1:18080 [--screenshot out.png]
//
// Uses the system Chromium (/usr/bin/chromium, or $CHROMIUM_PATH) through playwright-core; it never
// downloads a browser. Exits non-zero with a message on the first failed check.

import { chromium } from 'playwright-core';

const STEP_MS = 15_000;
const TOTAL_MS = 55_000;

function usage(msg) {
  if (msg) console.error(`widget.mjs: ${msg}`);
  console.error('usage: node tests/browser/widget.mjs --base http://127.0.0.1:PORT [--screenshot out.png]');
  process.exit(2);
}

function parseArgs(argv) {
  const out = { base: null, screenshot: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--base') out.base = val();
    else if (a.startsWith('--base=')) out.base = a.slice(7);
    else if (a === '--screenshot') out.screenshot = val();
    else if (a.startsWith('--screenshot=')) out.screenshot = a.slice(13);
    else if (a === '-h' || a === '--help') usage();
    else usage(`unknown argument ${a}`);
  }
  if (!out.base) usage('--base is required');
  out.base = out.base.replace(/\/+$/, '');
  return out;
}

class Failure extends Error {}

function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}

// Polls fn until it returns a truthy value; fails with `what` after STEP_MS.
async function waitFor(what, fn, timeout = STEP_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Failure(`timed out after ${timeout / 1000} s waiting for ${what}${last ? ` (last error: ${last.message.split('\n')[0]})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// All messages currently in the widget, in DOM order (Playwright's CSS engine pierces the open shadow root).
async function messages(page) {
  return page.locator('.fd-msg').evaluateAll((els) =>
    els.map((el) => ({
      author: el.getAttribute('data-author'),
      seq: el.hasAttribute('data-seq') ? Number(el.getAttribute('data-seq')) : null,
      text: (el.querySelector('.fd-text') || el).textContent,
      elements: el.querySelectorAll('.fd-text *').length,
      tags: Array.from(el.querySelectorAll('*'), (c) => c.tagName.toLowerCase()),
    })),
  );
}

async function openPanel(page, step) {
  await page.goto(page.__base + '/', { waitUntil: 'load', timeout: STEP_MS }).catch((e) => {
    throw new Failure(`${step}: cannot open ${page.__base}/: ${e.message.split('\n')[0]}`);
  });
  const launcher = page.locator('.fd-launcher');
  await launcher.waitFor({ state: 'visible', timeout: STEP_MS }).catch(() => {
    throw new Failure(`${step}: the launcher button (.fd-launcher) did not appear on ${page.__base}/`);
  });
  await launcher.click({ timeout: STEP_MS });
  await page.locator('.fd-panel').waitFor({ state: 'visible', timeout: STEP_MS }).catch(() => {
    throw new Failure(`${step}: the chat panel (.fd-panel) is not visible after clicking the launcher`);
  });
  const open = await page.evaluate(() => {
    const host = document.querySelector('frontdesk-widget');
    return !!(host && host.shadowRoot && host.shadowRoot.querySelector('.fd-panel'));
  });
  check(open, `${step}: the widget is not inside an open shadow root`);
}

// Types `text`, presses Enter, waits for the acked customer message and a bot message after it.
async function exchange(page, text, step) {
  const input = page.locator('.fd-input');
  await input.click({ timeout: STEP_MS });
  await input.fill(text, { timeout: STEP_MS });
  await input.press('Enter', { timeout: STEP_MS });
  const mine = await waitFor(`${step}: the customer message ${JSON.stringify(text)} with a data-seq (ack)`, async () => {
    const all = await messages(page);
    return all.find((m) => m.author === 'customer' && m.seq && m.text === text);
  });
  check((await input.inputValue()) === '', `${step}: the input was not cleared after sending`);
  const bot = await waitFor(`${step}: a bot reply (data-author=bot) after customer message seq ${mine.seq}`, async () => {
    const all = await messages(page);
    return all.find((m) => m.author === 'bot' && m.seq > mine.seq);
  });
  return { mine, bot };
}

async function checkOrder(page, step) {
  const all = await messages(page);
  const seqs = all.filter((m) => m.seq).map((m) => m.seq);
  for (let i = 1; i < seqs.length; i++) {
    check(seqs[i] > seqs[i - 1], `${step}: messages are not shown once each by increasing seq: ${seqs.join(',')}`);
  }
  return all;
}

async function main() {
  const { base, screenshot } = parseArgs(process.argv.slice(2));
  const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: STEP_MS,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const pageErrors = [];
  const newPage = async (options) => {
    const context = await browser.newContext({ locale: 'en-US', ...options });
    const page = await context.newPage();
    page.__base = base;
    page.setDefaultTimeout(STEP_MS);
    page.on('pageerror', (e) => pageErrors.push(e.message));
    return page;
  };
  const noPageErrors = (step) => check(pageErrors.length === 0, `${step}: uncaught error in the page: ${pageErrors.join(' | ')}`);

  try {
    // 1. Launcher opens the panel.
    const page = await newPage({ viewport: { width: 1280, height: 800 } });
    await openPanel(page, 'step 1');
    console.log('ok 1 - launcher opens the chat panel');

    // 2. The customer's message is acked and shown as literal text.
    const html = 'Hello <b>there</b>';
    const first = await exchange(page, html, 'step 2');
    const shown = (await messages(page)).find((m) => m.seq === first.mine.seq);
    check(!shown.tags.includes('b'), 'step 2: the message contains a <b> element: its text was parsed as HTML');
    check(shown.text === html, `step 2: message text is ${JSON.stringify(shown.text)}, want ${JSON.stringify(html)}`);
    console.log(`ok 2 - customer message acked as seq ${first.mine.seq}, text shown literally`);

    // 3. The bot answers.
    console.log(`ok 3 - bot replied (seq ${first.bot.seq})`);
    await checkOrder(page, 'step 3');

    // 4. A reload keeps the session and the transcript; the conversation goes on.
    await page.reload({ waitUntil: 'load', timeout: STEP_MS });
    const launcher = page.locator('.fd-launcher');
    await launcher.click({ timeout: STEP_MS });
    await page.locator('.fd-panel').waitFor({ state: 'visible', timeout: STEP_MS });
    await waitFor('step 4: both messages shown again after reload', async () => {
      const all = await messages(page);
      return all.some((m) => m.seq === first.mine.seq && m.author === 'customer' && m.text === html) &&
        all.some((m) => m.seq === first.bot.seq && m.author === 'bot');
    });
    await waitFor('step 4: the widget to reconnect after reload (.fd-panel[data-state=online])', async () =>
      (await page.locator('.fd-panel').getAttribute('data-state')) === 'online');
    const second = await exchange(page, 'Do you cover Springfield?', 'step 4');
    check(second.mine.seq > first.bot.seq, `step 4: new message seq ${second.mine.seq} is not after ${first.bot.seq}: a new conversation was started`);
    const all = await checkOrder(page, 'step 4');
    const dupes = all.filter((m) => m.seq === first.mine.seq).length;
    check(dupes === 1, `step 4: message seq ${first.mine.seq} is shown ${dupes} times`);
    console.log(`ok 4 - after reload the transcript is kept and the bot replies again (seq ${second.bot.seq})`);
    noPageErrors('step 4');
    await page.context().close();

    // 5. At phone width the open panel fills the screen.
    const phone = await newPage({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
    await openPanel(phone, 'step 5');
    const box = await phone.locator('.fd-panel').boundingBox();
    check(box, 'step 5: the panel has no bounding box');
    check(box.width >= 0.9 * 375, `step 5: the panel is ${box.width}px wide in a 375px viewport, want >= ${0.9 * 375}px`);
    console.log(`ok 5 - at phone width the panel is ${Math.round(box.width)}x${Math.round(box.height)} px`);
    noPageErrors('step 5');
    await phone.context().close();

    // 6. Optional screenshot of a fresh, short exchange on a desktop.
    if (screenshot) {
      const shot = await newPage({ viewport: { width: 1280, height: 800 } });
      await openPanel(shot, 'step 6');
      await exchange(shot, 'Hi! My internet has been down since this morning.', 'step 6');
      await shot.waitForTimeout(300); // let the scroll and the fade-in settle
      await shot.screenshot({ path: screenshot, timeout: STEP_MS });
      console.log(`ok 6 - screenshot written to ${screenshot}`);
      noPageErrors('step 6');
      await shot.context().close();
    }
  } finally {
    await browser.close().catch(() => {});
  }
  console.log('browser widget test: ok');
}

const overall = setTimeout(() => {
  console.error(`browser widget test: FAILED: took longer than ${TOTAL_MS / 1000} s`);
  process.exit(1);
}, TOTAL_MS);
overall.unref();

main().then(
  () => process.exit(0),
  (e) => {
    const msg = e instanceof Failure ? e.message : (e && e.stack) || String(e);
    console.error(`browser widget test: FAILED: ${msg}`);
    process.exit(1);
  },
);
