// The browser scenarios of web/ (issue 13), run by run.py against a whole
// system behind agora-gateway. Each scenario drives Debian's chromium
// through playwright-core as a person would (clicks, typing, the keyboard)
// and asserts what the page shows. Screenshots of every page at desktop
// (1280×800) and phone (390×844) width go to AGORA_E2E_SHOTS.
//
//   node main.mjs [scenario ...]     (default: all but outage, in order;
//                                     run.py runs outage after stopping catalog, rooms, analytics)
//
// Exit status 0 only when every scenario passed; a browser that cannot
// start is a failure with the reason, never a skip.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

// playwright-core from where run.py installed it (AGORA_E2E_NODE_DIR: the
// build directory's own node_modules under ctest), or from here.
const nodeDir = process.env.AGORA_E2E_NODE_DIR || path.dirname(new URL(import.meta.url).pathname);
const { chromium } = createRequire(path.join(nodeDir, 'package.json'))('playwright-core');

const BASE = need('AGORA_E2E_URL');
const SHOTS = need('AGORA_E2E_SHOTS');
const CHROMIUM = process.env.AGORA_E2E_CHROMIUM || '/usr/bin/chromium';
const ADMIN = { email: need('AGORA_E2E_ADMIN_EMAIL'), password: need('AGORA_E2E_ADMIN_PASSWORD') };
const SERVICES = (process.env.AGORA_E2E_SERVICES || '').split(',').filter(Boolean);
// run.py's fixture trace in agora-traces: two services, four spans, one error.
const FIXTURE_TRACE = process.env.AGORA_E2E_TRACE_ID || '';
const SCALE = Number(process.env.AGORA_E2E_SCALE || '1');
const T = (ms) => Math.round(ms * SCALE);
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage'];

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`e2e: ${name} is not set (run.py sets it)`);
    process.exit(2);
  }
  return v;
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const tag = () => Math.random().toString(36).slice(2, 8);
const log = (msg) => console.log('e2e: ' + msg);

// --- the browser ---------------------------------------------------------------------------

let browser;
try {
  // Playwright gives every launch a fresh, empty profile directory of its
  // own (it refuses a --user-data-dir flag), which is what chromium needs here.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, timeout: T(60000) });
} catch (err) {
  console.error(`e2e: FAIL: chromium (${CHROMIUM}) could not start: ${err.message.split('\n')[0]}`);
  process.exit(1);
}
log(`chromium ${browser.version()} started`);

async function person(viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  context.setDefaultTimeout(T(15000));
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error' && !/status of (4\d\d|503)/.test(m.text())) page.errors.push('console: ' + m.text()); });
  return { context, page };
}

fs.mkdirSync(SHOTS, { recursive: true });
const shotsTaken = [];
// Both widths of the page as it is now; the phone shot after a re-layout.
async function shoot(page, name) {
  const vp = page.viewportSize();
  // A toast would hide part of the page from the reviewer.
  await page.evaluate(() => document.getElementById('toast').classList.remove('show'));
  await page.setViewportSize(DESKTOP);
  await page.waitForTimeout(150);
  await page.screenshot({ path: path.join(SHOTS, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(250);
  await page.screenshot({ path: path.join(SHOTS, `${name}-phone.png`), fullPage: true });
  // Nothing wider than the phone: no sideways scrolling of the page itself.
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= PHONE.width + 1, `${name}: the page is ${wide} px wide at phone width (wider than ${PHONE.width})`);
  await page.setViewportSize(vp);
  // Every control has a name a screen reader can say.
  const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => el.type !== 'hidden')
    .filter((el) => (el.tagName === 'BUTTON'
      ? !(el.textContent.trim() || el.getAttribute('aria-label'))
      : !((el.labels && el.labels.length) || el.getAttribute('aria-label'))))
    .map((el) => el.outerHTML.slice(0, 100)));
  check(!unnamed.length, `${name}: controls without a label: ${unnamed.join(' ')}`);
  shotsTaken.push(name);
}

async function go(page, hash) {
  await page.goto(BASE + '/' + hash);
  await page.locator('main .page-title').first().waitFor();
}

async function register(page, name) {
  const username = `${name}_${tag()}`;
  await go(page, '#/register');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Email').fill(`${username}@example.com`);
  await page.getByLabel('Password').fill('password-123');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator('#whoami', { hasText: username }).waitFor();
  return { username, email: `${username}@example.com`, password: 'password-123' };
}

async function signIn(page, email, password) {
  await go(page, '#/signin');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#whoami').waitFor();
}

// The catalogue's results for the URL the page is at now (not those of the
// search before, still on screen until the new answer is in).
async function results(page) {
  const hash = new URL(page.url()).hash || '#/';
  await page.locator(`main section[data-for="${hash}"]`).waitFor();
}

async function search(page, words) {
  await go(page, '#/');
  await page.getByRole('searchbox', { name: 'Search' }).fill(words);
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.waitForURL(/[?&]q=/);
  await results(page);
  await page.locator('main [role=status]', { hasText: `for “${words}”` }).waitFor();
}

async function addFromResults(page, product) {
  const card = page.locator(`li.product[data-product="${product}"]`);
  await card.getByRole('button', { name: `Add ${product} to the cart` }).click();
  await card.getByText('Added to the cart').waitFor();
}

async function checkout(page, cardNumber) {
  await go(page, '#/checkout');
  await page.getByLabel('Address', { exact: true }).fill('12 St James\'s Square');
  await page.getByLabel('City').fill('London');
  await page.getByLabel('Postal code').fill('SW1Y 4JH');
  await page.getByLabel('Country').selectOption('GB');
  await page.getByLabel('Card number').fill(cardNumber);
  await page.getByLabel('CVC').fill('123');
  // Live updates connected, so that the status below comes over the
  // WebSocket (the page polls only while it is not connected).
  await page.locator('#live-state[data-state="open"]').waitFor();
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.waitForURL(/#\/orders\/[^/]+$/);
  await page.locator('#order-status-value').waitFor();
  // Marks this document: a reload would lose it.
  await page.evaluate(() => { window.__agoraNoReload = true; });
}

// A chat message by its own text (not a reply quoting it).
function msg(page, text) {
  return page.locator('#messages li.msg').filter({ has: page.locator('.content', { hasText: text }) });
}

async function openNewRoom(page) {
  const summary = page.locator('summary', { hasText: 'New room' });
  await summary.waitFor();
  if (!(await page.getByLabel('Room name').isVisible())) await summary.click();
}

async function stillSameDocument(page) {
  check(await page.evaluate(() => window.__agoraNoReload === true), 'the page was reloaded');
  check(await page.locator('#live-state[data-state="open"]').count() === 1, 'the WebSocket was not connected');
}

// The fixture trace (run.py): found in the ops console's list by its
// service, opened, and its waterfall checked row by row.
async function traceFixture(page) {
  check(FIXTURE_TRACE, 'run.py posted no fixture trace (AGORA_E2E_TRACE_ID)');
  await page.locator('#trace-service option[value="e2e-edge"]').waitFor({ state: 'attached', timeout: T(15000) });
  await page.getByLabel('Service', { exact: true }).selectOption('e2e-edge');
  const row = page.locator(`#traces tr[data-trace="${FIXTURE_TRACE}"]`);
  await row.waitFor();
  const text = await row.innerText();
  check(/GET \/api\/v1\/fixture/.test(text) && /40(\.0)? ms/.test(text) && /1 failed/.test(text) && /e2e-backend, e2e-edge/.test(text),
    'the fixture trace in the list: ' + text);
  await page.getByLabel('Show', { exact: true }).selectOption('errors');
  await row.waitFor();
  await row.getByRole('link').click();
  await page.waitForURL(new RegExp(`#/ops/traces/${FIXTURE_TRACE}$`));
  await page.locator('#waterfall .wf-row').nth(3).waitFor();
  const rows = await page.locator('#waterfall .wf-row').evaluateAll((lis) => lis.map((li) => {
    const bar = li.querySelector('.wf-bar').getBoundingClientRect();
    const track = li.querySelector('.wf-track').getBoundingClientRect();
    return { name: li.querySelector('.wf-name').textContent, service: li.dataset.service, depth: Number(li.dataset.depth),
      span: li.dataset.span, parent: li.dataset.parent,
      status: li.dataset.status, text: li.querySelector('.wf-label').innerText,
      left: (bar.left - track.left) / track.width, width: bar.width / track.width, color: getComputedStyle(li.querySelector('.wf-bar')).backgroundColor };
  }));
  check(rows.map((r) => r.name).join('|') === 'GET /api/v1/fixture|GET|GET /v1/fixture|SELECT fixture', 'waterfall rows: ' + rows.map((r) => r.name).join('|'));
  check(rows.map((r) => r.depth).join() === '0,1,2,3', 'waterfall depths: ' + rows.map((r) => r.depth).join());
  check(rows.every((r, i) => r.parent === (i ? rows[i - 1].span : '')), 'waterfall parents: ' + rows.map((r) => `${r.span}←${r.parent}`).join(' '));
  check(rows.map((r) => r.service).join() === 'e2e-edge,e2e-edge,e2e-backend,e2e-backend', 'waterfall services: ' + rows.map((r) => r.service).join());
  // Bars on one time axis: 0-40, 2-38, 5-35, 10-20 ms of 40.
  const near = (a, b) => Math.abs(a - b) < 0.02;
  const want = [[0, 1], [0.05, 0.9], [0.125, 0.75], [0.25, 0.25]];
  rows.forEach((r, i) => check(near(r.left, want[i][0]) && near(r.width, want[i][1]),
    `bar of ${r.name}: left ${r.left.toFixed(3)}, width ${r.width.toFixed(3)} (want ${want[i]})`));
  check(rows[0].color === rows[1].color && rows[2].color === rows[3].color && rows[0].color !== rows[2].color, 'bars are not coloured by service: ' + rows.map((r) => r.color).join());
  check(rows[2].status === 'error' && /error/.test(rows[2].text) && rows.filter((r) => /error/.test(r.text)).length === 1, 'the failed span is not marked: ' + rows.map((r) => r.text).join(' | '));
  await page.locator('.wf-legend li', { hasText: 'e2e-backend' }).waitFor();
  // A span's details: status and attributes.
  const backend = page.locator('#waterfall .wf-row').nth(2);
  await backend.locator('.wf-label').click();
  const detail = backend.locator('.wf-detail');
  await detail.waitFor();
  const said = await detail.innerText();
  check(/the fixture failed on purpose/.test(said) && /http\.route/.test(said) && /\/v1\/fixture/.test(said), 'span details: ' + said);
  const db = page.locator('#waterfall .wf-row').nth(3);
  await db.locator('.wf-label').press('Enter'); // the keyboard opens it too
  await db.locator('.wf-detail tr', { hasText: 'db.rows' }).waitFor();
  await shoot(page, 'trace');
  await backend.locator('.wf-label').click();
  await detail.waitFor({ state: 'hidden' });
  log(`ops: fixture trace ${FIXTURE_TRACE}: ${rows.length} spans in the waterfall`);
}

// A real trace, as the services export it (libagora's tracing): after the
// checkout scenario, a trace in agora-traces holds spans of agora-gateway
// and agora-orders, and its waterfall shows an orders span under a gateway
// span.
async function checkoutTrace(page) {
  await go(page, '#/ops');
  await page.locator('#trace-service option[value="agora-orders"]').waitFor({ state: 'attached', timeout: T(30000) });
  await page.getByLabel('Service', { exact: true }).selectOption('agora-orders');
  // The list is read again every few seconds: wait for a checkout's trace
  // (the console's own polls of /admin/dead-letters/orders are traces of
  // both services too).
  const row = page.locator('#traces tr[data-trace]').filter({ hasText: 'POST /api/v1/orders' })
    .filter({ hasText: 'agora-gateway' }).filter({ hasText: 'agora-orders' }).first();
  await row.waitFor({ timeout: T(30000) });
  const id = await row.getAttribute('data-trace');
  // That trace's own row: the list may be read again in between, and
  // `row` (the first that matches) would then be another trace's.
  await page.locator(`#traces tr[data-trace="${id}"]`).getByRole('link').click();
  await page.waitForURL(new RegExp(`#/ops/traces/${id}$`));
  await page.locator('#waterfall .wf-row').first().waitFor();
  const rows = await page.locator('#waterfall .wf-row').evaluateAll((lis) => lis.map((li) => ({
    span: li.dataset.span, parent: li.dataset.parent, service: li.dataset.service, depth: Number(li.dataset.depth) })));
  const bySpan = new Map(rows.map((r) => [r.span, r]));
  check(rows.some((r) => r.service === 'agora-gateway') && rows.some((r) => r.service === 'agora-orders'), 'the checkout trace: ' + rows.map((r) => r.service).join());
  check(rows.some((r) => r.service === 'agora-orders' && r.depth > 0 && bySpan.has(r.parent) && bySpan.get(r.parent).service === 'agora-gateway'),
    'no agora-orders span under an agora-gateway span: ' + rows.map((r) => `${r.service}:${r.depth}`).join(' '));
  await shoot(page, 'trace-checkout');
  log(`ops: checkout trace ${id}: ${rows.length} spans from ${[...new Set(rows.map((r) => r.service))].join(', ')}`);
}

// The ops console's Analytics section (agora-analytics' read model, fed by
// the event stream): after the checkout scenario it counts a CONFIRMED
// order, revenue in dollars at least that order's total, and its products
// among the top ones; the rebuild button says from how many events it
// rebuilt, and the numbers are still there after it.
const amount = (text) => Number(String(text).replace(/[^0-9.]/g, ''));

async function analyticsSection(page) {
  // The read model follows the stream: the order's confirmation may still
  // be on its way when the page first reads it (re-read every 3 s).
  const confirmed = () => page.waitForFunction(() => {
    if (document.querySelector('#analytics [role=alert]')) return true;
    const td = document.querySelector('#analytics-orders tr[data-status="CONFIRMED"] td');
    return td && Number(td.textContent.replace(/,/g, '')) >= 1;
  }, null, { timeout: T(20000) });
  await confirmed();
  check(await page.locator('#analytics [role=alert]').count() === 0, 'analytics: ' + await page.locator('#analytics').innerText());
  const statusCounts = await page.locator('#analytics-orders tbody tr').evaluateAll((trs) =>
    Object.fromEntries(trs.map((tr) => [tr.dataset.status, Number(tr.querySelector('td').textContent.replace(/,/g, ''))])));
  check(statusCounts.CONFIRMED >= 1, 'orders by status: ' + JSON.stringify(statusCounts));
  const usd = await page.locator('#analytics-revenue tr[data-currency="USD"]').innerText();
  check(/\$[\d,]+\.\d\d/.test(usd), 'the USD revenue line: ' + usd);
  const [orders, revenue] = await page.locator('#analytics-revenue tr[data-currency="USD"] td').allInnerTexts();
  check(Number(orders) >= 1 && amount(revenue) > 0, `the USD revenue line: ${orders} orders, ${revenue}`);
  if (shared.confirmedTotal) {
    check(amount(revenue) >= amount(shared.confirmedTotal), `USD revenue ${revenue} is less than the confirmed order's ${shared.confirmedTotal}`);
    for (const [name, units] of [['Aurora Wireless Headphones', 1], ['Glide Wireless Mouse', 2]]) {
      const tds = await page.locator(`#analytics-top tr[data-product="${name}"] td`).allInnerTexts();
      check(tds.length && Number(tds[0]) >= units, `top products: ${name}: ${tds.join(' | ') || 'not listed'}`);
    }
  }
  check(await page.locator('#analytics-revenue svg.spark').count() >= 1, 'no revenue-by-day chart');
  const funnel = await page.locator('#analytics .funnel').innerText();
  check(/put something in a cart/.test(funnel) && /placed an order/.test(funnel) && /% of carts/.test(funnel), 'the conversion funnel: ' + funnel);
  check(/of [\d,]+ orders? confirmed/.test(await page.locator('#funnel-orders').innerText()), 'orders confirmed: ' + await page.locator('#funnel-orders').innerText());
  const active = Number((await page.locator('#analytics-active-30 .stat-value').innerText()).replace(/,/g, ''));
  check(active >= 1, 'active users in the last 30 days: ' + active);
  const journal = await page.locator('#analytics-journal').innerText();
  check(/journal holds [\d,]+ events?, the last at /.test(journal), 'the journal line: ' + journal);
  // Rebuild: the same numbers, folded again from the journal.
  await page.getByRole('button', { name: 'Rebuild read model' }).click();
  const said = page.locator('#analytics-rebuild-status', { hasText: /^Rebuilt from [\d,]+ events? in [\d,]+ ms\.$/ });
  await said.waitFor({ timeout: T(20000) })
    .catch(async () => check(false, 'the rebuild: ' + await page.locator('#analytics-rebuild-status').innerText()));
  const text = await said.innerText();
  const events = Number(text.match(/from ([\d,]+)/)[1].replace(/,/g, ''));
  check(events >= 5, 'rebuilt from too few events (a checkout alone makes more): ' + text);
  await page.getByRole('button', { name: 'Rebuild read model' }).waitFor(); // enabled again
  check(await page.getByRole('button', { name: 'Rebuild read model' }).isEnabled(), 'the rebuild button stays disabled');
  await confirmed();
  const after = Number((await page.locator('#analytics-orders tr[data-status="CONFIRMED"] td').innerText()).replace(/,/g, ''));
  check(after >= statusCounts.CONFIRMED, `CONFIRMED after the rebuild: ${after}, before: ${statusCounts.CONFIRMED}`);
  const shownEvents = Number((await page.locator('#analytics-events').innerText()).replace(/,/g, ''));
  check(shownEvents >= events, `the journal shows ${shownEvents} events after a rebuild from ${events}`);
  log(`ops: analytics: ${JSON.stringify(statusCounts)}, USD ${orders} orders ${revenue}; ${text}`);
}

// --- scenarios -----------------------------------------------------------------------------

const shared = {};

const scenarios = {
  async guest() {
    const { page, context } = await person();
    await go(page, '#/');
    await results(page);
    check(await page.locator('li.product').count() > 0, 'the catalogue shows no product');
    await shoot(page, 'shop');
    await page.getByLabel('Sort by').selectOption('price');
    await page.getByLabel('In stock only').check();
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.waitForURL(/sort=price/);
    await results(page);
    const prices = await page.locator('li.product .price').allInnerTexts();
    const cents = prices.map((p) => Number(p.replace(/[^0-9.]/g, '')));
    check(cents.length > 1 && cents.every((v, i) => i === 0 || v >= cents[i - 1]), `sorted by price, got ${prices.join(', ')}`);
    check(await page.getByText('Out of stock', { exact: true }).count() === 0, 'in stock only still shows products out of stock');
    await page.getByRole('link', { name: 'Next page' }).click();
    await page.waitForURL(/page=2/);
    await results(page);
    await page.locator('main [role=status]', { hasText: 'page 2 of' }).waitFor();
    // A price range (in dollars; the API takes cents).
    await go(page, '#/');
    await page.getByLabel('Min price').fill('30');
    await page.getByLabel('Max price').fill('60');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.waitForURL(/minPrice=30/);
    await results(page);
    const ranged = (await page.locator('li.product .price').allInnerTexts()).map((p) => Number(p.replace(/[^0-9.]/g, '')));
    check(ranged.length > 0 && ranged.every((v) => v >= 30 && v <= 60), 'price range 30-60: ' + ranged.join(', '));
    await page.getByLabel('Min price').fill('');
    await page.getByLabel('Max price').fill('');
    await page.getByLabel('Category').selectOption('books');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.waitForURL(/category=books/);
    await results(page);
    const cats = await page.locator('li.product .muted.small').allInnerTexts();
    check(cats.length > 0 && cats.every((c) => c === 'books'), `category filter: ${cats.join(', ') || 'no product'}`);
    // A product page, and reviews need a sign-in.
    await page.locator('li.product h3 a').first().click();
    await page.getByRole('heading', { name: 'Reviews' }).waitFor();
    await page.getByText('to write a review').waitFor();
    // Pages that need an account say so.
    await go(page, '#/cart');
    await page.getByText('to see this page').waitFor();
    await go(page, '#/signin');
    await shoot(page, 'signin');
    await page.getByLabel('Email').fill('nobody@example.com');
    await page.getByLabel('Password').fill('wrong-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[role=alert]', { hasText: /invalid|credential|password/i }).waitFor();
    await go(page, '#/register');
    await shoot(page, 'register');
    await go(page, '#/nowhere');
    await page.getByRole('heading', { name: 'Page not found' }).waitFor();
    check(!page.errors.length, 'errors on the page: ' + page.errors.join('; '));
    await context.close();
  },

  async checkout() {
    const { page, context } = await person();
    const me = await register(page, 'ada');
    shared.customer = me;
    await search(page, 'wireless');
    await shoot(page, 'search');
    await addFromResults(page, 'Aurora Wireless Headphones');
    await addFromResults(page, 'Glide Wireless Mouse');
    await search(page, 'coffee');
    await addFromResults(page, 'Pour-Over Coffee Set');
    await page.locator('#cart-count', { hasText: '3' }).waitFor();
    // The cart: one line removed, one quantity changed.
    await page.getByRole('link', { name: /^Cart/ }).click();
    await page.locator('table.cart tbody tr').nth(2).waitFor();
    await page.getByRole('button', { name: 'Remove Pour-Over Coffee Set' }).click();
    await page.locator('tr[data-product="Pour-Over Coffee Set"]').waitFor({ state: 'detached' });
    const qty = page.getByLabel('Quantity of Glide Wireless Mouse');
    await qty.fill('2');
    await qty.press('Tab');
    await page.locator('#cart-total', { hasText: '(3 items)' }).waitFor();
    await page.locator('#cart-total', { hasText: '$189.97' }).waitFor();
    check(await page.locator('table.cart tbody tr').count() === 2, 'the cart should have two lines');
    await shoot(page, 'cart');
    await go(page, '#/checkout');
    await shoot(page, 'checkout');
    await checkout(page, '4242 4242 4242 4242');
    await page.locator('#order-status-value', { hasText: 'CONFIRMED' }).waitFor({ timeout: T(30000) });
    await stillSameDocument(page);
    await page.getByText('Paid and confirmed').waitFor();
    await page.locator('.timeline', { hasText: 'OrderConfirmed' }).waitFor();
    shared.confirmedOrder = page.url().split('/').pop();
    shared.confirmedTotal = await page.locator('main table tfoot td').innerText();
    // The order came from the cart: agora-cart empties it, the badge follows.
    await page.locator('#cart-count').waitFor({ state: 'hidden' });
    await shoot(page, 'order-confirmed');
    // The confirmation arrived as a notification too: badge, list, mark read.
    await page.locator('#notif-count').waitFor();
    await page.getByRole('link', { name: /^Notifications/ }).click();
    await page.locator('li[data-type="order.confirmed"]').first().waitFor();
    await shoot(page, 'notifications');
    const before = Number(await page.locator('#notif-count').innerText());
    await page.locator('li[data-type="order.confirmed"]').getByRole('button', { name: /Mark .* read/ }).click();
    await page.waitForFunction((n) => {
      const b = document.getElementById('notif-count');
      return b.hidden ? n === 1 : Number(b.textContent) === n - 1;
    }, before);
    await page.getByRole('button', { name: 'Mark all read' }).click();
    await page.locator('#notif-summary', { hasText: 'All read.' }).waitFor();
    // The badge follows the same answer as the summary: hidden once it is.
    await page.locator('#notif-count').waitFor({ state: 'hidden', timeout: T(5000) })
      .catch(() => check(false, 'the unread badge stays after mark all read'));
    // An access token about to expire is refreshed before the next call
    // (refresh tokens are single-use: the new one is kept).
    const old = await page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem('agora.session'));
      const before = { token: s.token, refreshToken: s.refreshToken };
      s.expiresAt = Date.now();
      localStorage.setItem('agora.session', JSON.stringify(s));
      return before;
    });
    await page.reload();
    await page.locator('#whoami').waitFor();
    // The order list.
    await page.getByRole('link', { name: 'Orders', exact: true }).click();
    await page.locator('main table tbody tr').first().waitFor();
    await page.locator('main table tbody tr', { hasText: 'CONFIRMED' }).first().waitFor();
    await shoot(page, 'orders');
    const now = await page.evaluate(() => JSON.parse(localStorage.getItem('agora.session')));
    check(now.token !== old.token && now.refreshToken !== old.refreshToken && now.expiresAt > Date.now() + 60000,
      'the session was not refreshed');
    // A review, now that the person is signed in.
    await search(page, 'wireless');
    await page.getByRole('link', { name: 'Aurora Wireless Headphones' }).click();
    await page.getByRole('heading', { name: 'Write a review' }).waitFor();
    await page.getByLabel('Rating').selectOption('4');
    await page.getByLabel('Your review').fill('Comfortable, and the battery lasts.');
    await page.getByRole('button', { name: 'Post review' }).click();
    await page.locator('.reviews li', { hasText: 'Comfortable, and the battery lasts.' }).waitFor();
    await page.locator('#product-rating', { hasText: 'Rated 4 out of 5' }).waitFor();
    await shoot(page, 'product');
    await page.getByRole('button', { name: 'Post review' }).click();
    await page.locator('[role=alert]', { hasText: 'already reviewed' }).waitFor();
    // Keyboard: the skip link comes first and lands on the content.
    await page.keyboard.press('Tab');
    await page.reload();
    await page.locator('main .page-title').waitFor();
    await page.keyboard.press('Tab');
    check(await page.evaluate(() => document.activeElement && document.activeElement.id) === 'skip-link', 'the first Tab does not reach the skip link');
    check(!page.errors.length, 'errors on the page: ' + page.errors.join('; '));
    await context.close();
  },

  async declined() {
    const { page, context } = await person();
    await register(page, 'bea');
    await search(page, 'skillet');
    await addFromResults(page, 'Cast Iron Skillet');
    await checkout(page, '4000 0000 0000 0002');
    await page.locator('#order-status-value', { hasText: 'CANCELLED' }).waitFor({ timeout: T(30000) });
    await stillSameDocument(page);
    const text = await page.locator('#order-status-text').innerText();
    check(/^Cancelled: .*declin/i.test(text), `the reason should be shown, got “${text}”`);
    await shoot(page, 'order-cancelled');
    // The cart was not emptied: the order did not go through.
    await page.getByRole('link', { name: /^Cart/ }).click();
    await page.locator('tr[data-product="Cast Iron Skillet"]').waitFor();
    // Sign out: the header says so and the account pages ask for a sign-in.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('link', { name: 'Sign in' }).waitFor();
    await go(page, '#/orders');
    await page.getByText('to see this page').waitFor();
    check(!page.errors.length, 'errors on the page: ' + page.errors.join('; '));
    await context.close();
  },

  async ops() {
    // A customer is told the console is for admins.
    {
      const { page, context } = await person();
      await register(page, 'cat');
      check(await page.getByRole('link', { name: 'Ops' }).isHidden(), 'a customer sees the Ops link');
      await go(page, '#/ops');
      await page.getByText('The ops console is for administrators').waitFor();
      await context.close();
    }
    const { page, context } = await person();
    await signIn(page, ADMIN.email, ADMIN.password);
    await page.getByRole('link', { name: 'Ops' }).click();
    await page.locator('#components tr[data-component="gateway"]').waitFor();
    const rows = await page.locator('#components tbody tr').evaluateAll((trs) => trs.map((tr) => ({
      name: tr.dataset.component, health: tr.dataset.health, text: tr.innerText })));
    const expected = ['gateway', ...SERVICES];
    for (const name of expected) {
      const r = rows.find((x) => x.name === name);
      check(r, `the ops console does not list ${name}`);
      check(r.health === 'healthy', `${name} is “${r.health}”, not healthy: ${r.text}`);
      check(/healthy/.test(r.text) && (name === 'gateway' || /closed/.test(r.text)), `${name}: row says ${r.text}`);
    }
    for (const r of rows) {
      if (r.name === 'registry') check(r.health === 'not used', `the tests run without a registry, but it shows “${r.health}”`);
      else if (!expected.includes(r.name)) check(r.health === 'not running', `${r.name} is not started by this test but shows “${r.health}”`);
    }
    log(`ops: ${expected.length} components healthy; not started here: ${rows.filter((r) => !expected.includes(r.name) && r.name !== 'registry').map((r) => r.name).join(', ') || 'none'}`);
    // Traffic after the second reading: numbers and charts.
    await page.locator('#traffic tr[data-route="catalog"] svg.spark').first().waitFor({ timeout: T(15000) });
    const cat = await page.locator('#traffic tr[data-route="catalog"]').innerText();
    check(/catalog/.test(cat) && /\/api\/v1\/products/.test(cat), 'the traffic row of catalog: ' + cat);
    await page.locator('#endpoints tr[data-route="/metrics"]').waitFor();
    // Traffic to the catalogue shows up in its row at the next reading.
    await page.evaluate(async () => {
      for (let i = 0; i < 30; i++) await fetch('/api/v1/products?limit=1');
    });
    await page.waitForFunction(() => {
      const td = document.querySelector('#traffic tr[data-route="catalog"] td');
      return td && Number(td.textContent) > 0;
    }, null, { timeout: T(10000) });
    await page.waitForFunction(() => {
      const td = document.querySelector('#routes tr[data-route="/api/v1/products"] td');
      return td && Number(td.textContent) > 0;
    }, null, { timeout: T(10000) });
    const prodRow = await page.locator('#routes tr[data-route="/api/v1/products"] td').allInnerTexts();
    check(/ms$/.test(prodRow[2]) && /ms$/.test(prodRow[3]), 'the /api/v1/products route: ' + prodRow.join(' | '));
    log(`ops: route /api/v1/products ${prodRow[0]} req/s, p95 ${prodRow[3]}`);
    const catRow = await page.locator('#traffic tr[data-route="catalog"] td').allInnerTexts();
    check(/ms$/.test(catRow[2]) && /ms$/.test(catRow[3]), 'catalog latency: ' + catRow.join(' | '));
    log(`ops: catalog ${catRow[0]} req/s, errors ${catRow[1]}, p50 ${catRow[2]}, p95 ${catRow[3]}`);
    // Live: the next reading replaces the time stamp.
    const t1 = await page.locator('#ops-updated').innerText();
    await page.waitForFunction((t) => document.getElementById('ops-updated').innerText !== t, t1, { timeout: T(10000) });
    // Sagas: the confirmed order of the checkout scenario with its steps.
    const saga = shared.confirmedOrder
      ? page.locator(`#sagas details[data-order="${shared.confirmedOrder}"]`)
      : page.locator('#sagas details').first();
    await saga.locator('summary').click();
    await saga.locator('.steps li', { hasText: 'charge' }).waitFor();
    const steps = await saga.locator('.steps li').allInnerTexts();
    check(steps.length >= 3, 'saga steps: ' + steps.join(' | '));
    check(SERVICES.includes('analytics'), 'the ops console needs agora-analytics, not started');
    await analyticsSection(page);
    // Dead letters: a row for every consuming service; this run makes none.
    for (const svc of ['cart', 'catalog', 'files', 'inventory', 'messages', 'notifications', 'orders', 'rooms']) {
      const row = page.locator(`#dlq tr[data-service="${svc}"]`).first();
      await row.waitFor({ timeout: T(10000) });
      const text = await row.innerText();
      check(/none/.test(text), `dead letters of ${svc}: ${text}`);
    }
    check(SERVICES.includes('traces'), 'the ops console needs agora-traces, not started');
    await page.locator('#traces table, #traces p').first().waitFor();
    check(await page.locator('#traces [role=alert]').count() === 0, 'traces: ' + await page.locator('#traces').innerText());
    await shoot(page, 'ops');
    check(!page.errors.length, 'errors on the page: ' + page.errors.join('; '));
    await traceFixture(page);
    await checkoutTrace(page);
    check(!page.errors.length, 'errors on the page: ' + page.errors.join('; '));
    await context.close();
  },

  async chat() {
    for (const s of ['rooms', 'messages', 'notifications']) check(SERVICES.includes(s), `the chat needs agora-${s}, not started`);
    const a = await person();
    const b = await person();
    const alice = await register(a.page, 'alice');
    const bob = await register(b.page, 'bob');
    // Alice: a private room, Bob invited by name.
    await go(a.page, '#/chat');
    await openNewRoom(a.page);
    const roomName = 'plans ' + tag();
    await a.page.getByLabel('Room name').fill(roomName);
    await a.page.getByLabel('Private (invite only)').check();
    await a.page.getByRole('button', { name: 'Create room' }).click();
    await a.page.locator('#room-title', { hasText: roomName }).waitFor();
    await a.page.getByRole('textbox', { name: 'Invite by username or email' }).fill(bob.username);
    await a.page.getByRole('button', { name: 'Invite', exact: true }).click();
    await a.page.locator(`#members li[data-name="${bob.username}"]`).waitFor();
    // Bob finds the room in his list and opens it.
    await go(b.page, '#/chat');
    await b.page.locator('#my-rooms a', { hasText: roomName }).click();
    await b.page.locator('#room-title', { hasText: roomName }).waitFor();
    // Presence: Bob is online for Alice.
    await a.page.locator(`#members li[data-name="${bob.username}"] .presence-online`).waitFor();
    await b.page.locator(`#members li[data-name="${alice.username}"] .presence-online`).waitFor();
    // A message arrives live.
    await a.page.getByRole('textbox', { name: 'Message', exact: true }).fill('Hello Bob, lunch at noon?');
    await a.page.getByRole('button', { name: 'Send' }).click();
    const bobSees = msg(b.page, 'Hello Bob, lunch at noon?');
    await bobSees.waitFor();
    // Typing shows on the other side.
    await b.page.getByRole('textbox', { name: 'Message', exact: true }).pressSequentially('Sure', { delay: 50 });
    await a.page.locator('#typing', { hasText: `${bob.username} is typing` }).waitFor();
    await b.page.getByRole('textbox', { name: 'Message', exact: true }).fill('');
    // Bob replies to Alice's message (keyboard: Enter sends).
    await bobSees.getByRole('button', { name: /^Reply to/ }).click();
    await b.page.getByRole('textbox', { name: 'Message', exact: true }).fill('Yes, see you there');
    await b.page.getByRole('textbox', { name: 'Message', exact: true }).press('Enter');
    const reply = msg(a.page, 'Yes, see you there');
    await reply.locator('.quote', { hasText: 'Hello Bob, lunch at noon?' }).waitFor();
    // A reaction from Bob, seen by Alice.
    await bobSees.getByRole('button', { name: 'React', exact: true }).click();
    await bobSees.getByRole('button', { name: 'React with 👍' }).click();
    const mine = msg(a.page, 'Hello Bob, lunch at noon?').first();
    await mine.locator('.reaction', { hasText: '👍 1' }).waitFor();
    // Alice edits her message; Bob sees the new text.
    await mine.getByRole('button', { name: 'Edit' }).click();
    await a.page.getByLabel('Edit your message').fill('Hello Bob, lunch at one?');
    await a.page.getByRole('button', { name: 'Save' }).click();
    await msg(b.page, 'Hello Bob, lunch at one?').locator('.edited').waitFor();
    // Bob cannot edit Alice's message: no Edit button on it.
    check(await msg(b.page, 'lunch at one?').first().getByRole('button', { name: 'Edit' }).count() === 0,
      'Bob is offered to edit Alice\'s message');
    // Alice sends and deletes a message; Bob sees the tombstone.
    await a.page.getByRole('textbox', { name: 'Message', exact: true }).fill('oops, wrong room');
    await a.page.getByRole('button', { name: 'Send' }).click();
    const oops = msg(a.page, 'oops, wrong room');
    await msg(b.page, 'oops, wrong room').waitFor();
    await oops.getByRole('button', { name: 'Delete' }).click();
    await oops.getByRole('button', { name: 'Confirm: delete this message' }).click();
    await b.page.locator('#messages li.msg.deleted', { hasText: 'This message was deleted.' }).waitFor();
    check(await msg(b.page, 'oops, wrong room').count() === 0, 'the deleted text is still shown to Bob');
    // A file: uploaded with progress, downloaded by the other side; or, with
    // agora-files not running, the person is told so in words.
    const content = 'agenda: 1. lunch 2. plans\n';
    await a.page.locator('#attach').setInputFiles({ name: 'agenda.txt', mimeType: 'text/plain', buffer: Buffer.from(content) });
    if (SERVICES.includes('files')) {
      await a.page.locator('#upload-status', { hasText: 'agenda.txt' }).filter({ hasText: 'ready to send' }).waitFor();
      check(await a.page.locator('#upload-progress').evaluate((p) => p.value) === 100, 'the upload progress does not reach 100');
      await a.page.getByRole('textbox', { name: 'Message', exact: true }).fill('the agenda');
      await a.page.getByRole('button', { name: 'Send' }).click();
      const att = b.page.locator('#messages li.msg').filter({ has: b.page.locator('.file-name', { hasText: 'agenda.txt' }) });
      await att.waitFor();
      const [dl] = await Promise.all([b.page.waitForEvent('download'), att.getByRole('button', { name: 'Download agenda.txt' }).click()]);
      const got = fs.readFileSync(await dl.path(), 'utf8');
      check(got === content, `the download has ${JSON.stringify(got)}`);
    } else {
      await a.page.locator('#upload-status [role=alert]', { hasText: 'agenda.txt was not uploaded' }).waitFor();
      const said = await a.page.locator('#upload-status [role=alert]').innerText();
      check(/files/.test(said), 'the upload error does not name agora-files: ' + said);
      log('chat: agora-files is not built: the upload error is shown (“' + said.replace(/\s+/g, ' ') + '”)');
    }
    await shoot(a.page, 'chat-room');
    // Unread counts: Alice looks elsewhere, Bob writes twice.
    await go(a.page, '#/chat');
    await b.page.getByRole('textbox', { name: 'Message', exact: true }).fill('one');
    await b.page.getByRole('textbox', { name: 'Message', exact: true }).press('Enter');
    await b.page.getByRole('textbox', { name: 'Message', exact: true }).fill('two');
    await b.page.getByRole('textbox', { name: 'Message', exact: true }).press('Enter');
    await a.page.locator('#my-rooms li', { hasText: roomName }).locator('.badge', { hasText: '2' }).waitFor();
    await a.page.locator('#chat-unread', { hasText: '2' }).waitFor();
    await shoot(a.page, 'chat-rooms');
    // History: 45 more messages; opening the room shows the newest, older
    // ones load on scrolling up.
    await b.page.evaluate(async ({ roomTitle }) => {
      const s = JSON.parse(localStorage.getItem('agora.session'));
      const rooms = await (await fetch('/api/v1/rooms?mine=true&limit=100', { headers: { Authorization: 'Bearer ' + s.token } })).json();
      const room = rooms.data.find((r) => r.name === roomTitle);
      for (let i = 1; i <= 45; i++) {
        const r = await fetch('/api/v1/messages', { method: 'POST', headers: { Authorization: 'Bearer ' + s.token, 'Content-Type': 'application/json' },
          body: JSON.stringify({ roomId: room.id, content: 'history ' + i }) });
        if (r.status !== 201) throw new Error('send ' + i + ': ' + r.status);
      }
    }, { roomTitle: roomName });
    await a.page.locator('#my-rooms a', { hasText: roomName }).click();
    await msg(a.page, 'history 45').waitFor();
    check(await msg(a.page, 'Hello Bob').count() === 0, 'the first page already has the oldest messages');
    await a.page.locator('#message-scroller').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
    await msg(a.page, 'Hello Bob, lunch at one?').waitFor();
    const seqs = await a.page.locator('#messages li.msg').evaluateAll((lis) => lis.map((li) => Number(li.dataset.seq)));
    check(seqs.every((v, i) => i === 0 || v > seqs[i - 1]), 'messages out of order: ' + seqs.join(','));
    await a.page.locator('#my-rooms li', { hasText: roomName }).locator('.badge').waitFor({ state: 'detached' });
    // Bob leaves: Alice sees him offline when his last tab closes.
    await b.context.close();
    await a.page.locator(`#members li[data-name="${bob.username}"] .presence-offline`).waitFor({ timeout: T(20000) });
    // Join and leave a public room.
    const c = await person();
    await register(c.page, 'cy');
    await go(c.page, '#/chat');
    await openNewRoom(c.page);
    const pub = 'lobby ' + tag();
    await c.page.getByLabel('Room name').fill(pub);
    await c.page.getByRole('button', { name: 'Create room' }).click();
    await c.page.locator('#room-title', { hasText: pub }).waitFor();
    await go(a.page, '#/chat');
    await a.page.getByLabel('Find rooms').fill(pub);
    await a.page.getByRole('button', { name: 'Find' }).click();
    await a.page.getByRole('button', { name: 'Join ' + pub }).click();
    await a.page.locator('#room-title', { hasText: pub }).waitFor();
    await c.page.locator(`#members li[data-name="${alice.username}"]`).waitFor();
    await a.page.getByRole('button', { name: 'Leave room' }).click();
    await a.page.locator('#room-title', { hasText: 'No room open' }).waitFor();
    check(await a.page.locator('#my-rooms a', { hasText: pub }).count() === 0, 'the room left is still listed');
    await c.page.locator(`#members li[data-name="${alice.username}"]`).waitFor({ state: 'detached' });
    // The owner cannot leave: told why.
    await c.page.getByRole('button', { name: 'Delete room' }).waitFor();
    check(await c.page.getByRole('button', { name: 'Leave room' }).count() === 0, 'the owner is offered to leave');
    for (const p of [a.page, c.page]) check(!p.errors.length, 'errors on the page: ' + p.errors.join('; '));
    await a.context.close();
    await c.context.close();
  },
  // Run by run.py after it stopped the services named in AGORA_E2E_DOWN
  // (catalog, rooms and, when it runs, analytics): the pages still work and
  // say what is wrong.
  async outage() {
    const down = (process.env.AGORA_E2E_DOWN || '').split(',').filter(Boolean);
    check(down.includes('catalog') && down.includes('rooms'), 'outage: run.py stops catalog and rooms first (AGORA_E2E_DOWN)');
    const { page, context } = await person();
    await register(page, 'dee');
    await go(page, '#/');
    const alert = page.locator('main [role=alert]', { hasText: 'The catalogue could not be loaded' });
    await alert.waitFor();
    check(/catalog/.test(await alert.innerText()), 'the error does not say which part is down: ' + await alert.innerText());
    await page.getByRole('searchbox', { name: 'Search' }).waitFor();
    await shoot(page, 'outage-shop');
    await go(page, '#/product/no-such-product');
    await page.locator('main [role=alert]', { hasText: 'The product could not be loaded' }).waitFor();
    await go(page, '#/chat');
    await page.locator('main [role=alert]', { hasText: 'Your rooms could not be loaded' }).waitFor();
    check(/rooms/.test(await page.locator('main [role=alert]').first().innerText()), 'the chat error does not name agora-rooms');
    await shoot(page, 'outage-chat');
    // The rest of the site still answers.
    await go(page, '#/notifications');
    await page.locator('#notif-summary').waitFor();
    check(!page.errors.length, 'errors on the page: ' + page.errors.join('; '));
    await context.close();
    // The ops console without agora-analytics: its section says so in
    // words, the rest of the console is there.
    if (down.includes('analytics')) {
      const admin = await person();
      await signIn(admin.page, ADMIN.email, ADMIN.password);
      await go(admin.page, '#/ops');
      const said = admin.page.locator('#analytics [role=alert]', { hasText: 'Analytics could not be read from agora-analytics' });
      await said.waitFor();
      const words = await said.innerText();
      check(/analytics/.test(words.replace('Analytics could not be read from agora-analytics', '')), 'the analytics error does not say what is down: ' + words);
      await admin.page.locator('#components tr[data-component="gateway"]').waitFor();
      const health = await admin.page.locator('#components tr[data-component="analytics"]').getAttribute('data-health');
      check(health !== 'healthy', 'agora-analytics is stopped but shows healthy');
      await admin.page.locator('#traffic tr, #traffic p').first().waitFor();
      await shoot(admin.page, 'outage-ops');
      check(!admin.page.errors.length, 'errors on the page: ' + admin.page.errors.join('; '));
      log('outage: the ops console says “' + words.replace(/\s+/g, ' ') + '”');
      await admin.context.close();
    }
  },
};

// --- run -----------------------------------------------------------------------------------

const wanted = process.argv.slice(2);
const order = wanted.length ? wanted : Object.keys(scenarios).filter((n) => n !== 'outage');
let failed = 0;
for (const name of order) {
  const fn = scenarios[name];
  if (!fn) {
    console.error(`e2e: no scenario “${name}” (known: ${Object.keys(scenarios).join(', ')})`);
    failed++;
    continue;
  }
  const t0 = Date.now();
  try {
    await fn();
    log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (err) {
    failed++;
    log(`FAIL ${name}: ${err.message}`);
    for (const [c, ctx] of browser.contexts().entries()) {
      for (const [i, p] of ctx.pages().entries()) {
        const file = path.join(SHOTS, `FAILED-${name}-${c}-${i}.png`);
        await p.screenshot({ path: file, fullPage: true }).catch(() => {});
        log(`  page ${i} at ${p.url()} → ${file}`);
      }
      await ctx.close().catch(() => {});
    }
  }
}
await browser.close();
log(`${order.length - failed} of ${order.length} scenarios passed; screenshots (${shotsTaken.length} pages × 2 widths) in ${SHOTS}`);
process.exit(failed ? 1 : 0);
