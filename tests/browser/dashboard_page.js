// The dashboard in a real browser (Debian's chromium, driven by puppeteer-core): opens the page
// of a running job, waits until the loss chart has drawn at least MIN_ROWS steps, prints
// "charted N", then waits until the event timeline shows a worker failure and a restart (the
// calling test kills a worker meanwhile), takes a screenshot and exits 0. Any JavaScript error
// on the page, a failed request, or the error banner showing fails it (exit 1).
// Usage: node dashboard_page.js URL SCREENSHOT MIN_ROWS TIMEOUT_S
'use strict';
const puppeteer = require('puppeteer-core');

const [url, screenshot, minRows, timeoutS] = process.argv.slice(2);
const deadline = Date.now() + Number(timeoutS) * 1000;
const problems = [];

function fail(message) {
  console.error('FAIL: ' + message);
  process.exit(1);
}

async function waitFor(page, what, predicate, arg) {
  for (;;) {
    if (problems.length) fail('the page reported: ' + problems.join(' | '));
    if (await page.evaluate(predicate, arg)) return;
    if (Date.now() > deadline) fail('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 200));
  }
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({width: 1400, height: 1300});
    page.on('pageerror', (err) => problems.push('JavaScript error: ' + err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push('console error: ' + msg.text());
    });
    page.on('requestfailed', (req) => problems.push('request failed: ' + req.url()));
    await page.goto(url, {waitUntil: 'load'});
    await waitFor(page, 'the loss chart to have ' + minRows + ' steps', (n) => {
      const rows = Number(document.body.dataset.rows || 0);
      return rows >= n && document.querySelector('#chart-loss canvas') !== null;
    }, Number(minRows));
    const charted = await page.evaluate(() => Number(document.body.dataset.rows));
    console.log('charted ' + charted);
    // Every rank's forward + backward time, one line per rank (a straggler stands out).
    await waitFor(page, 'the per-rank time chart with both ranks', () => {
      const chart = document.querySelector('#chart-rc');
      return chart !== null && chart.querySelector('canvas') !== null &&
          chart.textContent.includes('rank 0') && chart.textContent.includes('rank 1');
    });
    await waitFor(page, 'the plan picture', () => {
      const img = document.querySelector('#planpic');
      return !document.querySelector('#plan').hidden && img.complete && img.naturalWidth > 200;
    });
    await waitFor(page, 'a worker failure and a restart on the timeline', () =>
      document.querySelector('#events tr[data-event="worker_failed"]') !== null &&
      document.querySelector('#events tr[data-event="restart"]') !== null);
    const failedRow = await page.$eval('#events tr[data-event="worker_failed"]',
                                       (tr) => tr.className + ': ' + tr.textContent);
    console.log('timeline: ' + failedRow.slice(0, 200));
    if (!failedRow.startsWith('bad')) fail('the failure is not marked as one: ' + failedRow);
    const banner = await page.$eval('#error', (e) => (e.hidden ? '' : e.textContent));
    if (banner) fail('the page shows an error: ' + banner);
    await page.screenshot({path: screenshot, fullPage: true});
    console.log('screenshot ' + screenshot);
    if (problems.length) fail('the page reported: ' + problems.join(' | '));
  } finally {
    await browser.close();
  }
})().catch((err) => fail(String(err && err.stack || err)));
