// e2e: a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) signs in to `portcullis serve --dev`: the sign-in page,
// the demo provider's user picker, and the echo app behind the gateway.
// Screenshots of the sign-in page and of the final page go to target/e2e/.
// A second gateway offers vendor sources (no provider is contacted): their
// buttons, marks and the refusal page are checked at desktop and phone width.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';

import { Harness, ROOT, freePort, portcullisBin, secret, startPortcullis, waitFor } from './support.mjs';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'target', 'e2e');
const h = new Harness('browser');
let demo; // { url }
let browser;

before(async () => {
  try {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/install-deps.sh`);
    mkdirSync(SHOTS, { recursive: true });
    const proc = h.spawn('portcullis-dev', portcullisBin(), ['serve', '--dev', '--port', '0'], { cwd: h.dir });
    const url = await waitFor('the demo URL on stdout', () => {
      proc.alive();
      return proc.stdout.match(/portcullis demo: open (http:\/\/127\.0\.0\.1:\d+)\/ in a browser/)?.[1];
    });
    demo = { url };
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      // Playwright gives every launch a fresh, empty user-data-dir and removes it on close.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    h.defer(() => browser.close());
  } catch (e) {
    await h.stop().catch(() => {});
    throw e;
  }
}, { timeout: 60_000 });

after(() => h.stop());

test('a person signs in with Chromium and reaches the echo app as alice', { timeout: 90_000 }, async (t) => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 }, colorScheme: 'light' });
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.setDefaultNavigationTimeout(15_000);
  const protectedUrl = `${demo.url}/reports/q3?tab=summary`;

  await t.test('a protected URL shows the sign-in page', async () => {
    const res = await page.goto(protectedUrl);
    assert.equal(res.status(), 200);
    const at = new URL(page.url());
    assert.equal(at.pathname, '/_auth/sign_in');
    assert.equal(at.searchParams.get('rd'), '/reports/q3?tab=summary');
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in');
    const button = page.getByRole('button', { name: 'Sign in with the demo provider' });
    assert.equal(await button.count(), 1);
    assert.equal((await button.innerText()).trim(), 'Sign in with the demo provider');
    assert.match(await page.locator('main').innerText(), /Sign in to continue to demo\./);
    await page.screenshot({ path: path.join(SHOTS, 'sign-in.png'), fullPage: true });
  });

  await t.test(
    'the sign-in page fits a phone-wide screen (390 px) without scrolling sideways',
    async () => {
      const phone = await context.newPage();
      try {
        await phone.setViewportSize({ width: 390, height: 700 });
        await phone.goto(protectedUrl);
        assert.equal(new URL(phone.url()).pathname, '/_auth/sign_in');
        await phone.screenshot({ path: path.join(SHOTS, 'sign-in-390px.png') });
        const m = await phone.evaluate(() => {
          const r = document.querySelector('main').getBoundingClientRect();
          return { scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth, left: r.left, right: r.right };
        });
        assert.ok(m.left >= 0 && m.right <= m.clientWidth, `the card lies inside the screen: ${JSON.stringify(m)}`);
        assert.ok(m.scrollWidth <= m.clientWidth, `no sideways scrolling: ${JSON.stringify(m)}`);
      } finally {
        await phone.close();
      }
    },
  );

  await t.test('the source button leads to the demo provider, where alice is picked', async () => {
    await Promise.all([page.waitForURL((u) => u.pathname === '/authorize'), page.getByRole('button', { name: 'Sign in with the demo provider' }).click()]);
    assert.notEqual(new URL(page.url()).origin, demo.url, 'the provider is another origin');
    const alice = page.getByRole('button', { name: /^Sign in as Alice Example\b/ });
    assert.equal(await alice.count(), 1);
    assert.equal(await page.getByRole('button', { name: /^Sign in as Bob Example\b/ }).count(), 1);
    await Promise.all([page.waitForURL(protectedUrl), alice.click()]);
  });

  await t.test('the echo app shows X-Forwarded-User: alice', async () => {
    assert.equal(page.url(), protectedUrl);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Echo');
    const text = await page.locator('body').innerText();
    assert.match(text, /X-Forwarded-User\s+alice\b/);
    assert.match(text, /X-Forwarded-Email\s+alice@example\.com\b/);
    assert.match(text, /X-Forwarded-Preferred-Username\s+alice\b/);
    assert.match(text, /\/reports\/q3\?tab=summary/);
    const user = page.locator('dt', { hasText: /^X-Forwarded-User$/ }).locator('xpath=following-sibling::dd[1]');
    assert.equal((await user.innerText()).trim(), 'alice');
    await page.screenshot({ path: path.join(SHOTS, 'signed-in.png'), fullPage: true });
    const cookies = await context.cookies(demo.url);
    const session = cookies.find((c) => c.name === 'portcullis');
    assert.ok(session, 'the session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Lax');
    assert.ok(!cookies.some((c) => c.name.startsWith('portcullis_login')), 'the login state is gone');
  });

  await t.test('after sign-out the protected URL asks to sign in again', async () => {
    await page.goto(`${demo.url}/_auth/sign_out?rd=/`);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign out');
    assert.ok((await context.cookies(demo.url)).some((c) => c.name === 'portcullis'), 'SES-16: the page alone signs nobody out');
    const button = page.getByRole('button', { name: 'Sign out' });
    assert.equal(await button.count(), 1);
    await Promise.all([page.waitForURL((u) => u.pathname !== '/_auth/sign_out'), button.click()]);
    const cookies = await context.cookies(demo.url);
    assert.ok(!cookies.some((c) => c.name === 'portcullis'), 'the session cookie is cleared');
    await page.goto(protectedUrl);
    assert.equal(new URL(page.url()).pathname, '/_auth/sign_in');
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in');
  });
});

// Vendor sources whose presets need no discovery fetch, so nothing leaves the machine.
const VENDORS = [
  ['github', 'GitHub'],
  ['slack', 'Slack'],
  ['wechat', 'WeChat'],
  ['discord', 'Discord'],
  ['facebook', 'Facebook'],
  ['twitter', 'X'],
  ['reddit', 'Reddit'],
  ['patreon', 'Patreon'],
];

async function startVendorGateway() {
  const [listenPort, adminPort] = [await freePort(), await freePort()];
  const sources = VENDORS.map(
    ([type]) => `[[source]]\nslug = "${type}"\ntype = "${type}"\nconsumer_key = "client-${type}"\nconsumer_secret = "secret-${type}"\n`,
  ).join('\n');
  const toml = `[server]
listen = "127.0.0.1:${listenPort}"
admin_listen = "127.0.0.1:${adminPort}"
public_url = "http://127.0.0.1:${listenPort}"
threads = 1
shutdown_timeout = "2s"

[session]
secrets = ["${secret()}"]

[store]
url = "sqlite://${path.join(h.dir, 'vendors.db')}"

${sources}
[[app]]
name = "Team Wiki"
upstream = "http://127.0.0.1:9"

[[app.policy]]
on = ["access"]
effect = "allow"
`;
  return startPortcullis(h, 'portcullis-vendors', { listenPort, adminPort, toml });
}

// Horizontal fit of the page and of every element matching `selector`.
async function layout(page, selector) {
  return page.evaluate((sel) => {
    const doc = document.documentElement;
    const boxes = [...document.querySelectorAll(sel)].map((e) => {
      const r = e.getBoundingClientRect();
      return { left: r.left, right: r.right, width: r.width, height: r.height };
    });
    return { scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth, boxes, scripts: document.scripts.length };
  }, selector);
}

test('the sign-in page shows every vendor with its name and mark, on a desktop and a phone', { timeout: 90_000 }, async (t) => {
  const gw = await startVendorGateway();
  const signIn = `${gw.url}/_auth/sign_in?rd=/docs`;
  for (const [label, viewport] of [
    ['desktop', { width: 1280, height: 800 }],
    ['375px', { width: 375, height: 740 }],
  ]) {
    await t.test(`at ${label} width`, async () => {
      const context = await browser.newContext({ viewport, colorScheme: 'light' });
      try {
        const page = await context.newPage();
        page.setDefaultTimeout(15_000);
        const foreign = [];
        page.on('request', (r) => {
          if (new URL(r.url()).origin !== gw.url) foreign.push(r.url());
        });
        const res = await page.goto(signIn);
        assert.equal(res.status(), 200);
        assert.match(await page.title(), /Team Wiki/);
        assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in');
        assert.match(await page.locator('main').innerText(), /Sign in to continue to Team Wiki\./);
        for (const [slug, name] of VENDORS) {
          const button = page.getByRole('button', { name: `Sign in with ${name}`, exact: true });
          assert.equal(await button.count(), 1, name);
          assert.ok(await button.isVisible(), `${name} is visible`);
          assert.equal(await button.getAttribute('href'), `/_auth/login/${slug}?rd=%2Fdocs`);
          const mark = button.locator('svg.mark');
          assert.equal(await mark.count(), 1, `${name} has a mark`);
          const box = await mark.boundingBox();
          assert.ok(box && box.width >= 20 && box.height >= 20, `${name}'s mark is drawn: ${JSON.stringify(box)}`);
        }
        const m = await layout(page, 'main, a.button');
        assert.equal(m.scripts, 0, 'no JavaScript');
        assert.ok(m.scrollWidth <= m.clientWidth, `no sideways scrolling: ${JSON.stringify(m)}`);
        for (const b of m.boxes) assert.ok(b.left >= 0 && b.right <= m.clientWidth, `inside the screen: ${JSON.stringify(b)}`);
        assert.deepEqual(foreign, [], 'nothing is fetched from elsewhere');
        await page.screenshot({ path: path.join(SHOTS, `sign-in-vendors-${label}.png`), fullPage: true });

        // A refusal (a callback this browser did not start) in the same style.
        const refused = await page.goto(`${gw.url}/_auth/callback/slack?code=c&state=forged`);
        assert.equal(refused.status(), 400);
        assert.ok(await page.locator('main svg.gate').isVisible(), 'the same layout as the sign-in page');
        assert.match(await page.locator('.status').innerText(), /Error 400/);
        assert.match(await page.locator('main').innerText(), /Request id: \S+/);
        const e = await layout(page, 'main');
        assert.ok(e.scrollWidth <= e.clientWidth, `no sideways scrolling: ${JSON.stringify(e)}`);
        assert.equal(e.scripts, 0, 'no JavaScript');
        await page.screenshot({ path: path.join(SHOTS, `refusal-${label}.png`), fullPage: true });
      } finally {
        await context.close();
      }
    });
  }
});
