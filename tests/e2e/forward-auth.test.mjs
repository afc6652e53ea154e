// e2e: portcullis as a forward-auth service beside a real front proxy: nginx
// (`auth_request`) and, where Debian has it, Caddy (`forward_auth`). The front
// proxy asks portcullis's /_auth/check about every request, copies the
// X-Auth-Request-* answer into the request for the upstream, and sends
// /_auth/* (sign-in, callback, sign-out) to portcullis. The provider is the
// outside `oidc-provider`; the upstream is a Node echo.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import {
  Browserish,
  Harness,
  freePort,
  gatewayToml,
  get,
  groups,
  passProvider,
  rawGet,
  startEcho,
  startPortcullis,
  startProvider,
  waitFor,
  which,
} from './support.mjs';

const h = new Harness('fwd');
const CLIENT_ID = 'portcullis';
const CLIENT_SECRET = randomBytes(24).toString('base64url');
const NGINX = which('nginx');
const CADDY = which('caddy');
const CADDY_SKIP = CADDY ? false : 'caddy is not installed (scripts/install-deps.sh installs it where Debian has the package)';

let echo;
let provider;
const fronts = {}; // name -> { url, port, gwPort, adminPort }

before(async () => {
  try {
    assert.ok(NGINX, 'nginx is not installed: run scripts/install-deps.sh');
    if (CADDY_SKIP) console.log(`Caddy part skipped: ${CADDY_SKIP}`);
    for (const name of ['nginx', ...(CADDY ? ['caddy'] : [])]) {
      const port = await freePort();
      fronts[name] = { port, url: `http://127.0.0.1:${port}`, gwPort: await freePort(), adminPort: await freePort() };
    }
    echo = await startEcho(h);
    provider = await startProvider(h, {
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUris: Object.values(fronts).map((f) => `${f.url}/_auth/callback/op`),
      postLogoutRedirectUris: Object.values(fronts).map((f) => `${f.url}/`),
    });
    for (const [name, f] of Object.entries(fronts)) {
      // The callback and every sign-in page are reached through the front proxy: that is the public URL.
      f.gw = await startPortcullis(h, `portcullis-${name}`, {
        listenPort: f.gwPort,
        adminPort: f.adminPort,
        toml: gatewayToml({
          dir: h.dir,
          listenPort: f.gwPort,
          adminPort: f.adminPort,
          publicUrl: f.url,
          provider,
          clientId: CLIENT_ID,
          clientSecret: CLIENT_SECRET,
          upstream: echo.url,
          trustedProxies: ['127.0.0.1/32'],
          appKeys: RESTRICTED,
        }) + STATUS_APP,
      });
    }
    await startNginx(fronts.nginx);
    if (fronts.caddy) await startCaddy(fronts.caddy);
  } catch (e) {
    await h.stop().catch(() => {});
    throw e;
  }
}, { timeout: 60_000 });

after(() => h.stop());

// A rule that refuses everyone under /restricted: /_auth/check answers 401
// (docs/design.md), which every recipe sends to the sign-in page.
const RESTRICTED = `[[app.policy]]
on = ["access"]
effect = "deny"
path_prefix = "/restricted"
message = "Nobody reads the restricted pages"
`;

// Another app on its own host, open to everyone: a check about its host is a
// 200 for any path, so a front proxy must never ask about it for a request
// it sends to the echo app.
const STATUS_APP = `
[[app]]
name = "status"
host = "status.example"
upstream = "http://127.0.0.1:9"
public_paths = ["/"]
`;

// A recipe from docs/recipes/ with its example addresses replaced: the README's
// forward-auth recipes are the files this tier runs. A replacement that no
// longer matches fails the test, so the recipe and the test cannot drift apart.
function recipe(name, replacements) {
  let text = readFileSync(path.join(import.meta.dirname, '..', '..', 'docs', 'recipes', name), 'utf8');
  for (const [from, to] of replacements) {
    assert.ok(text.includes(from), `docs/recipes/${name} no longer contains ${JSON.stringify(from)}`);
    text = text.replaceAll(from, to);
  }
  return text;
}

// nginx with `auth_request`, everything (pid, logs, temp files) inside its own folder.
async function startNginx(f) {
  const dir = path.join(h.dir, 'nginx');
  for (const sub of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(path.join(dir, 'tmp', sub), { recursive: true });
  // As root, nginx's workers would run as `nobody` and could not enter the 0700 temp dir.
  const user = process.getuid?.() === 0 ? 'user root root;\n' : '';
  const conf = `${user}worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
    access_log ${dir}/access.log;
    client_body_temp_path ${dir}/tmp/client_body;
    proxy_temp_path ${dir}/tmp/proxy;
    fastcgi_temp_path ${dir}/tmp/fastcgi;
    uwsgi_temp_path ${dir}/tmp/uwsgi;
    scgi_temp_path ${dir}/tmp/scgi;

${recipe('nginx-auth-request.conf', [
    ['listen 80;', `listen 127.0.0.1:${f.port};`],
    ['server_name wiki.corp.example;', 'server_name 127.0.0.1;'],
    ['127.0.0.1:4180', `127.0.0.1:${f.gwPort}`],
    ['127.0.0.1:3000', `127.0.0.1:${echo.port}`],
  ])}
}
`;
  writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const proc = h.spawn('nginx', NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log'), '-g', 'daemon off;']);
  await waitFor('nginx to answer', async () => proc.alive() && (await get(`${f.url}/_auth/sign_in?rd=/`)).status === 200);
}

// Caddy with `forward_auth`, no admin endpoint, its data under the temp dir.
async function startCaddy(f) {
  const dir = path.join(h.dir, 'caddy');
  mkdirSync(dir, { recursive: true });
  const conf = `{
\tadmin off
\tauto_https off
\tgrace_period 1s
}

${recipe('Caddyfile.forward-auth', [
    ['wiki.corp.example {', `http://127.0.0.1:${f.port} {\n\tbind 127.0.0.1`],
    ['127.0.0.1:4180', `127.0.0.1:${f.gwPort}`],
    ['127.0.0.1:3000', `127.0.0.1:${echo.port}`],
  ])}`;
  const file = path.join(dir, 'Caddyfile');
  writeFileSync(file, conf);
  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: path.join(dir, 'data'), XDG_CONFIG_HOME: path.join(dir, 'config') };
  const proc = h.spawn('caddy', CADDY, ['run', '--config', file, '--adapter', 'caddyfile'], { env, cwd: dir });
  await waitFor('caddy to answer', async () => proc.alive() && (await get(`${f.url}/_auth/sign_in?rd=/`)).status === 200);
}

// One header's values as the echo received them, however many copies.
function received(seen, name) {
  const out = [];
  for (let i = 0; i < seen.rawHeaders.length; i += 2) {
    if (seen.rawHeaders[i].toLowerCase() === name) out.push(seen.rawHeaders[i + 1]);
  }
  return out;
}

async function frontProxyFlow(t, name) {
  const f = fronts[name];
  const b = new Browserish();
  if (process.env.E2E_TRACE === '1') t.after(() => console.log(b.trace()));
  // Two query parameters: `rd` must come back whole (a recipe pasting the
  // request URI into a query unencoded would cut it at the `&`).
  const protectedPath = '/app/page?x=1&y=2';
  let signInUrl;
  let sessionCookie;

  await t.test('an anonymous browser is redirected to sign-in; a spoofed X-Auth-Request-User does not help', async () => {
    const count = echo.seen.length;
    const hop = await b.request(`${f.url}${protectedPath}`, { headers: { 'x-auth-request-user': 'mallory' } });
    assert.equal(hop.status, 302, hop.body);
    const loc = new URL(hop.next);
    assert.equal(loc.origin, f.url);
    assert.equal(loc.pathname, '/_auth/sign_in');
    assert.equal(loc.searchParams.get('rd'), protectedPath);
    assert.equal(echo.seen.length, count, 'nothing reached the upstream');
    signInUrl = hop.next;
  });

  await t.test('an API client and a bearer token get the 401 and its challenge, never a redirect', async () => {
    const count = echo.seen.length;
    for (const headers of [
      { accept: 'application/json' },
      { accept: 'text/html', authorization: 'Bearer not.a.token' },
    ]) {
      const res = await get(`${f.url}${protectedPath}`, { headers });
      assert.equal(res.status, 401, JSON.stringify(headers));
      const challenge = res.headers.get('www-authenticate') ?? '';
      assert.match(challenge, /^Bearer realm="portcullis"/, JSON.stringify(headers));
      assert.doesNotMatch(challenge, /,\s*Bearer/, `one challenge: ${challenge}`);
    }
    const bad = await get(`${f.url}${protectedPath}`, { headers: { accept: 'text/html', authorization: 'Bearer not.a.token' } });
    assert.match(bad.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    assert.equal(echo.seen.length, count, 'nothing reached the upstream');
  });

  await t.test('a long request URI comes back whole in rd (its encoded form fits the proxy\'s buffers)', async () => {
    // 1900 `&` grow to 5700 bytes encoded: past nginx's default 4k header buffer.
    const long = `/app/page?${'&'.repeat(1900)}`;
    const hop = await new Browserish().request(`${f.url}${long}`);
    assert.equal(hop.status, 302, hop.body);
    assert.equal(new URL(hop.next).searchParams.get('rd'), long);
  });

  await t.test('the forward-auth answer is not served to a browser, however spelled', async () => {
    for (const p of ['/_auth/check', '/_auth/check;x', '/_auth/check%3Bx', '/_auth//check', '/_auth/%63heck']) {
      const res = await get(`${f.url}${p}`, { headers: { accept: 'text/html' } });
      assert.equal(res.status, 404, p);
      assert.equal(res.headers.get('x-auth-request-user'), null, p);
    }
  });

  await t.test('a public path passes without identity (portcullis reads the forwarded URI); spoofed headers are dropped', async () => {
    const res = await get(`${f.url}/public/readme.txt`, {
      headers: { accept: 'text/html', 'x-auth-request-user': 'mallory', 'x-auth-request-groups': 'admins' },
    });
    assert.equal(res.status, 200);
    const seen = echo.last();
    assert.equal(seen.url, '/public/readme.txt');
    assert.deepEqual(received(seen, 'x-auth-request-user'), []);
    assert.deepEqual(received(seen, 'x-auth-request-groups'), []);
  });

  await t.test('a client naming another app\'s host in Host gets nothing of this site through', async () => {
    // The check is about this site's own name, never the client's Host: asked
    // about status.example (public everywhere), it would let a protected path through.
    const count = echo.seen.length;
    const res = await rawGet(`${f.url}${protectedPath}`, { headers: { host: 'status.example', accept: 'application/json' } });
    assert.equal(echo.seen.length, count, `the upstream was reached (answer ${res.status})`);
  });

  await t.test('a client naming a public target beside the one of the proxy gets nothing through', async () => {
    // The front proxy passes its client's headers on to /_auth/check beside
    // its own X-Forwarded-Host/-Uri: portcullis refuses a target named twice.
    const count = echo.seen.length;
    for (const extra of [
      { 'x-original-url': 'http://127.0.0.1/public/readme.txt' },
      { 'x-original-uri': '/public/readme.txt' },
    ]) {
      const res = await get(`${f.url}${protectedPath}`, { headers: { accept: 'application/json', ...extra } });
      assert.notEqual(res.status, 200, JSON.stringify(extra));
    }
    assert.equal(echo.seen.length, count, 'nothing reached the upstream');
  });

  await t.test('sign-in through the front proxy and the outside provider', async () => {
    const page = await b.request(signInUrl);
    assert.equal(page.status, 200);
    assert.match(page.body, /<h1>Sign in<\/h1>/);
    const href = page.body.match(/href="(\/_auth\/login\/op\?rd=[^"]*)"/);
    assert.ok(href, 'a link to /_auth/login/op');
    const login = await b.request(new URL(href[1].replaceAll('&amp;', '&'), f.url).toString());
    assert.equal(login.status, 302);
    const authorize = new URL(login.next);
    assert.equal(authorize.origin, provider.issuer);
    assert.equal(authorize.searchParams.get('redirect_uri'), `${f.url}/_auth/callback/op`, 'the callback goes through the front proxy');
    const { toCallback } = await passProvider(b, login.next, `${f.url}/_auth/callback/op`);
    const cb = await b.request(toCallback.next);
    assert.equal(cb.status, 302, `${cb.status} ${cb.body}\n${b.trace()}\n${h.logs()}`);
    assert.equal(cb.location, protectedPath);
    sessionCookie = b.jar.get('127.0.0.1', 'portcullis');
    assert.ok(sessionCookie, 'the session cookie came back through the front proxy');
  });

  await t.test('the echo receives the identity the front proxy got from /_auth/check', async () => {
    const hop = await b.follow(`${f.url}${protectedPath}`);
    assert.equal(hop.status, 200, b.trace());
    const seen = echo.last();
    assert.equal(seen.url, protectedPath);
    assert.deepEqual(received(seen, 'x-auth-request-user'), ['ada']);
    assert.deepEqual(received(seen, 'x-auth-request-email'), ['ada@example.test']);
    assert.deepEqual(groups(seen.headers['x-auth-request-groups']), ['ops', 'staff']);
    assert.deepEqual(received(seen, 'x-auth-request-preferred-username'), ['ada']);
  });

  await t.test('a signed-in person a rule refuses is told why on the sign-in page', async () => {
    const count = echo.seen.length;
    // As a browser navigates: `Sec-Fetch-Mode: navigate` (Node's fetch
    // always sends `cors`, so node:http it is), the session cookie, HTML.
    const navigate = (url) => rawGet(url, {
      headers: { accept: 'text/html', 'sec-fetch-mode': 'navigate', cookie: `portcullis=${sessionCookie}` },
    });
    const refused = await navigate(`${f.url}/restricted/page`);
    assert.equal(refused.status, 302, refused.body);
    const hop = await navigate(new URL(refused.headers.location, f.url).toString());
    assert.equal(hop.status, 403, hop.body);
    assert.match(hop.body, /Nobody reads the restricted pages/);
    assert.match(hop.body, /signed in as ada/);
    assert.match(hop.body, /href="\/_auth\/login\/op\?rd=/, 'another account can still sign in');
    assert.equal(echo.seen.length, count, 'nothing reached the upstream');
  });

  await t.test('a client-sent X-Auth-Request-User never reaches the echo', async () => {
    const res = await get(`${f.url}/api/items`, {
      headers: {
        accept: 'application/json',
        cookie: `portcullis=${sessionCookie}`,
        'x-auth-request-user': 'mallory',
        'x-auth-request-email': 'mallory@evil.test',
        'x-auth-request-preferred-username': 'mallory',
      },
    });
    assert.equal(res.status, 200);
    const seen = echo.last();
    assert.equal(seen.url, '/api/items');
    assert.deepEqual(received(seen, 'x-auth-request-user'), ['ada']);
    assert.deepEqual(received(seen, 'x-auth-request-email'), ['ada@example.test']);
    assert.deepEqual(received(seen, 'x-auth-request-preferred-username'), ['ada']);
  });

  await t.test('/_auth/userinfo answers through the front proxy', async () => {
    const res = await get(`${f.url}/_auth/userinfo`, { headers: { cookie: `portcullis=${sessionCookie}` } });
    assert.equal(res.status, 200);
    const me = await res.json();
    assert.equal(me.user, 'ada');
    assert.equal(me.source, 'op');
  });

  await t.test('after sign-out the front proxy sends the old cookie to sign-in again', async () => {
    const page = await b.request(`${f.url}/_auth/sign_out?rd=/`);
    assert.equal(page.status, 200);
    assert.deepEqual(page.setCookies, [], 'SES-16: the GET signs nobody out');
    const out = await b.submit(page);
    assert.equal(out.status, 303);
    assert.ok(out.setCookies.some((c) => /^portcullis=;.*Max-Age=0/i.test(c)), out.setCookies.join('\n'));
    assert.equal(b.jar.get('127.0.0.1', 'portcullis'), undefined);
    const count = echo.seen.length;
    const res = await get(`${f.url}${protectedPath}`, { headers: { accept: 'text/html', cookie: `portcullis=${sessionCookie}` } });
    assert.equal(res.status, 302);
    assert.equal(new URL(res.headers.get('location'), f.url).pathname, '/_auth/sign_in');
    assert.equal(echo.seen.length, count, 'nothing reached the upstream');
  });
}

test('nginx auth_request in front of portcullis /_auth/check', { timeout: 60_000 }, (t) => frontProxyFlow(t, 'nginx'));

test('Caddy forward_auth in front of portcullis /_auth/check', { timeout: 60_000, skip: CADDY_SKIP }, (t) => frontProxyFlow(t, 'caddy'));

test('/_auth/check believes X-Forwarded-Uri and X-Original-URL only from trusted_proxies', { timeout: 30_000 }, async () => {
  const gw = fronts.nginx.gw;
  const url = `${gw.url}/_auth/check`;
  const forwarded = { 'x-forwarded-host': '127.0.0.1', 'x-forwarded-uri': '/public/readme.txt' };
  const original = { 'x-original-url': 'http://127.0.0.1/public/readme.txt' };
  // From 127.0.0.1, a trusted proxy: it asks about a public path, so no identity is needed.
  assert.equal((await rawGet(url, { localAddress: '127.0.0.1', headers: forwarded })).status, 200);
  assert.equal((await rawGet(url, { localAddress: '127.0.0.1', headers: original })).status, 200);
  // From 127.0.0.2, not trusted: the same headers are ignored and the anonymous check fails.
  const untrusted = await rawGet(url, { localAddress: '127.0.0.2', headers: forwarded });
  assert.equal(untrusted.status, 401);
  assert.match(untrusted.headers['www-authenticate'] ?? '', /^Bearer realm="portcullis"/);
  assert.equal((await rawGet(url, { localAddress: '127.0.0.2', headers: original })).status, 401);
  // And the private path asked about by a trusted proxy is not public.
  assert.equal((await rawGet(url, { localAddress: '127.0.0.1', headers: { ...forwarded, 'x-forwarded-uri': '/app/page' } })).status, 401);
});
