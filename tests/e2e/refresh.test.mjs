// e2e: `pass_access_token` against a real OpenID provider (npm `oidc-provider`)
// whose access tokens live 10 s and whose refresh tokens rotate on every use
// (a reused one revokes the whole grant, so a second refresh would show).
// The upstream gets a fresh token after expiry that the provider's userinfo
// accepts; 20 concurrent requests at expiry make one refresh call, on one
// gateway (SQLite) and on two replicas sharing PostgreSQL; a refresh token
// revoked at the provider ends the session and the sign-in page says why.
// The expiries run in one wait: both sessions are signed in, then both expire.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

import {
  Browserish,
  Harness,
  freePort,
  gatewayToml,
  get,
  passProvider,
  secret,
  startEcho,
  startPortcullis,
  startProvider,
} from './support.mjs';

const execFileP = promisify(execFile);

const h = new Harness('refresh');
const CLIENT_ID = 'portcullis';
const CLIENT_SECRET = randomBytes(24).toString('base64url');
const TTL_SECS = 10;
const PG_BASE = process.env.PORTCULLIS_TEST_POSTGRES_URL;
let echo;
let provider;
let discovery;
let single; // one gateway on SQLite
let replicas = []; // two gateways on one PostgreSQL schema (when PG_BASE is set)

before(async () => {
  try {
    const ports = await Promise.all([1, 2, 3, 4, 5, 6].map(() => freePort()));
    const [gwPort, gwAdmin, r1Port, r1Admin, r2Port, r2Admin] = ports;
    echo = await startEcho(h);
    provider = await startProvider(h, {
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUris: [gwPort, r1Port, r2Port].map((p) => `http://127.0.0.1:${p}/_auth/callback/op`),
      refreshTokens: true,
      accessTokenTtl: TTL_SECS,
    });
    discovery = await (await get(provider.wellKnown)).json();
    assert.ok(discovery.revocation_endpoint, 'the provider offers revocation');
    const common = { dir: h.dir, provider, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, upstream: echo.url, appKeys: 'pass_access_token = true\n' };
    const starting = [
      startPortcullis(h, 'single', {
        listenPort: gwPort,
        adminPort: gwAdmin,
        toml: gatewayToml({ ...common, listenPort: gwPort, adminPort: gwAdmin, publicUrl: `http://127.0.0.1:${gwPort}` }),
      }),
    ];
    if (PG_BASE) {
      // A schema of our own, so parallel or earlier runs never meet.
      const schema = `pc_e2e_${randomBytes(8).toString('hex')}`;
      await execFileP('psql', [PG_BASE, '-v', 'ON_ERROR_STOP=1', '-qc', `CREATE SCHEMA ${schema}`]);
      h.defer(() => execFileP('psql', [PG_BASE, '-qc', `DROP SCHEMA IF EXISTS ${schema} CASCADE`]).catch(() => {}));
      const storeUrl = `${PG_BASE}${PG_BASE.includes('?') ? '&' : '?'}options[search_path]=${schema}`;
      const sessionSecret = secret();
      // The first replica makes the schema's tables; the second starts on them.
      const first = await startPortcullis(h, 'replica-1', {
        listenPort: r1Port,
        adminPort: r1Admin,
        toml: gatewayToml({ ...common, listenPort: r1Port, adminPort: r1Admin, publicUrl: `http://127.0.0.1:${r1Port}`, storeUrl, sessionSecret }),
      });
      starting.push(
        Promise.resolve(first),
        startPortcullis(h, 'replica-2', {
          listenPort: r2Port,
          adminPort: r2Admin,
          toml: gatewayToml({ ...common, listenPort: r2Port, adminPort: r2Admin, publicUrl: `http://127.0.0.1:${r2Port}`, storeUrl, sessionSecret }),
        }),
      );
    }
    [single, ...replicas] = await Promise.all(starting);
  } catch (e) {
    await h.stop().catch(() => {});
    throw e;
  }
}, { timeout: 90_000 });

after(() => h.stop());

// A browser signed in on `gw` (through the provider's login and consent forms).
async function signIn(gw) {
  const b = new Browserish();
  const start = await b.request(`${gw.url}/_auth/login/op?rd=/app`);
  assert.equal(start.status, 302, b.trace());
  const { toCallback } = await passProvider(b, start.next, `${gw.url}/_auth/callback/op`);
  const back = await b.request(toCallback.next);
  assert.equal(back.status, 302, `${back.body}\n${h.logs()}`);
  return b;
}

// The provider's userinfo answer for an access token (as the upstream would ask it).
async function userinfo(token) {
  return get(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${token}` } });
}

// `GET /app` on `gw` as an API client with browser `b`'s session cookie.
function apiGet(gw, b, path = '/app') {
  return get(`${gw.url}${path}`, { headers: { accept: 'application/json', cookie: b.jar.header(gw.url) } });
}

// The token the upstream got with its latest request.
function lastToken() {
  const token = echo.last()?.headers['x-forwarded-access-token'];
  assert.ok(token, 'the upstream got an access token');
  return token;
}

const refreshCalls = () => provider.tokenCalls.filter((c) => c.grant === 'refresh_token');

// 20 requests at once, spread round-robin over `gws`; every one must reach the
// upstream. Returns the tokens the upstream saw with them and the refresh calls they caused.
async function burst(gws, b) {
  const seenBefore = echo.seen.length;
  const callsBefore = refreshCalls().length;
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => apiGet(gws[i % gws.length], b, `/app?n=${i}`)));
  for (const r of answers) assert.equal(r.status, 200, `${await r.text()}\n${h.logs()}`);
  const tokens = echo.seen.slice(seenBefore).map((s) => s.headers['x-forwarded-access-token']);
  assert.equal(tokens.length, 20);
  return { tokens, calls: refreshCalls().slice(callsBefore) };
}

test('access tokens: fresh after expiry, one refresh for 20 concurrent requests (one gateway, two replicas), revocation ends the session', { timeout: 120_000 }, async (t) => {
  let alone; // browser on the single gateway
  let spread; // browser on the replicas
  let firstAlone;
  let firstSpread;
  let signedInAt;
  let aloneRefreshToken; // the single gateway's session's refresh token after its refresh
  let refreshedAt;

  await t.test('the upstream and /_auth/check get the access token the provider issued', async () => {
    alone = await signIn(single);
    signedInAt = Date.now();
    if (replicas.length) spread = await signIn(replicas[0]);
    assert.equal((await apiGet(single, alone)).status, 200);
    firstAlone = lastToken();
    assert.equal((await userinfo(firstAlone)).status, 200, 'the provider accepts it');
    const check = await get(`${single.url}/_auth/check`, { headers: { cookie: alone.jar.header(single.url), 'x-forwarded-uri': '/app' } });
    assert.equal(check.status, 200);
    assert.equal(check.headers.get('x-auth-request-access-token'), firstAlone);
    if (spread) {
      // Both replicas serve the session (and cache its token) before it expires.
      assert.equal((await apiGet(replicas[1], spread)).status, 200);
      assert.equal((await apiGet(replicas[0], spread)).status, 200);
      firstSpread = lastToken();
      assert.notEqual(firstSpread, firstAlone);
    }
    assert.equal(refreshCalls().length, 0, 'nothing refreshed yet');
  });

  await t.test('after expiry, 20 concurrent requests on one gateway make one refresh; the new token passes userinfo', async () => {
    // One wait for both sessions: past the first token's expiry.
    await sleep(Math.max(0, signedInAt + (TTL_SECS + 1) * 1000 - Date.now()));
    assert.equal((await userinfo(firstAlone)).status, 401, 'the first token has expired at the provider');
    const { tokens, calls } = await burst([single], alone);
    assert.deepEqual(calls, [{ grant: 'refresh_token', status: 200 }], 'exactly one refresh call, accepted');
    aloneRefreshToken = provider.refreshTokens.at(-1);
    refreshedAt = Date.now();
    assert.ok(tokens.every((tk) => tk === tokens[0]), `one fresh token for all: ${new Set(tokens).size} seen`);
    assert.notEqual(tokens[0], firstAlone);
    const info = await userinfo(tokens[0]);
    assert.equal(info.status, 200, 'the provider accepts the fresh token');
    assert.equal((await info.json()).sub, 'u-1001');
    const check = await get(`${single.url}/_auth/check`, { headers: { cookie: alone.jar.header(single.url), 'x-forwarded-uri': '/app' } });
    assert.equal(check.headers.get('x-auth-request-access-token'), tokens[0], '/_auth/check answers the fresh token too');
  });

  await t.test('the same with two replicas on PostgreSQL, requests spread over both', async (tt) => {
    if (!spread) {
      tt.skip('PORTCULLIS_TEST_POSTGRES_URL is unset');
      console.log('notice: PORTCULLIS_TEST_POSTGRES_URL is unset; the two-replica refresh is not tested');
      return;
    }
    assert.equal((await userinfo(firstSpread)).status, 401, 'the first token has expired at the provider');
    const { tokens, calls } = await burst(replicas, spread);
    assert.deepEqual(calls, [{ grant: 'refresh_token', status: 200 }], 'exactly one refresh call across both replicas');
    assert.ok(tokens.every((tk) => tk === tokens[0]), `one fresh token for all: ${new Set(tokens).size} seen`);
    assert.notEqual(tokens[0], firstSpread);
    assert.equal((await userinfo(tokens[0])).status, 200, 'the provider accepts the fresh token');
    // The rotated refresh token was kept: the next refresh (due at half the
    // new token's life) succeeds on the other replica.
    await sleep((TTL_SECS / 2 + 1) * 1000);
    assert.equal((await apiGet(replicas[1], spread)).status, 200);
    assert.notEqual(lastToken(), tokens[0]);
    assert.equal((await userinfo(lastToken())).status, 200);
    assert.deepEqual(refreshCalls().slice(-1), [{ grant: 'refresh_token', status: 200 }]);
  });

  await t.test('a refresh token revoked at the provider ends the session; the browser is told why on the sign-in page', async () => {
    const revoked = await get(discovery.revocation_endpoint, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ token: aloneRefreshToken, token_type_hint: 'refresh_token' }).toString(),
    });
    assert.equal(revoked.status, 200);
    // Until the token is due for a refresh (half its 10 s life; the replica test may have waited already).
    const lastRefresh = provider.tokenCalls.length;
    await sleep(Math.max(0, refreshedAt + (TTL_SECS / 2 + 1) * 1000 - Date.now()));
    const seenBefore = echo.seen.length;
    const oldCookie = alone.jar.header(single.url);
    const hop = await alone.request(`${single.url}/app`);
    assert.equal(hop.status, 302, alone.trace());
    assert.ok(hop.setCookies.some((c) => /^portcullis=;.*Max-Age=0/i.test(c)), `the session cookie is cleared: ${hop.setCookies}`);
    const to = new URL(hop.next);
    assert.equal(to.pathname, '/_auth/sign_in');
    assert.equal(to.searchParams.get('rd'), '/app');
    assert.equal(to.searchParams.get('reason'), 'refresh_refused');
    assert.deepEqual(provider.tokenCalls.slice(lastRefresh).map((c) => c.grant), ['refresh_token'], 'the refresh was tried');
    assert.equal(provider.tokenCalls.at(-1).status, 400, 'and refused');
    const page = await alone.request(hop.next);
    assert.equal(page.status, 200);
    assert.match(page.body, /Your session ended because Node OpenID Provider no longer accepts it/);
    assert.match(page.body, /Sign in with Node OpenID Provider/);
    assert.doesNotMatch(page.body, /invalid_grant|HTTP 400/, 'no internal error text');
    // An API client with the old cookie: RFC 6750 invalid_token, with the reason.
    const api = await get(`${single.url}/app`, { headers: { accept: 'application/json', cookie: oldCookie } });
    assert.equal(api.status, 401);
    const challenge = api.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /error="invalid_token"/);
    assert.match(challenge, /error_description="Your session ended because Node OpenID Provider no longer accepts it/);
    assert.equal((await api.json()).error, 'invalid_token');
    assert.equal(echo.seen.length, seenBefore, 'nothing reached the upstream');
    // Signing in again works.
    const again = await signIn(single);
    assert.equal((await apiGet(single, again)).status, 200);
  });
});
