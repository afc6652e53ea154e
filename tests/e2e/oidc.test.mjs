// e2e: the real portcullis binary signs a person in through a real OpenID
// provider from outside the project (npm `oidc-provider`, OpenID Certified),
// in front of a Node echo upstream. The client is plain fetch with a cookie
// jar, following each redirect by hand and submitting the provider's forms.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import {
  ACCOUNT,
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
} from './support.mjs';

const h = new Harness('oidc');
const CLIENT_ID = 'portcullis';
const CLIENT_SECRET = randomBytes(24).toString('base64url');
let echo;
let provider;
let gw;
let discovery;

before(async () => {
  try {
    const gwPort = await freePort();
    const adminPort = await freePort();
    const gwUrl = `http://127.0.0.1:${gwPort}`;
    echo = await startEcho(h);
    provider = await startProvider(h, {
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUris: [`${gwUrl}/_auth/callback/op`],
      postLogoutRedirectUris: [`${gwUrl}/`],
    });
    discovery = await (await get(provider.wellKnown)).json();
    gw = await startPortcullis(h, 'portcullis', {
      listenPort: gwPort,
      adminPort,
      toml: gatewayToml({
        dir: h.dir,
        listenPort: gwPort,
        adminPort,
        publicUrl: gwUrl,
        provider,
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        upstream: echo.url,
      }),
    });
  } catch (e) {
    await h.stop().catch(() => {});
    throw e;
  }
}, { timeout: 60_000 });

after(() => h.stop());

test('sign-in through an outside OpenID provider, cookie-only requests, sign-out', { timeout: 60_000 }, async (t) => {
  const b = new Browserish();
  if (process.env.E2E_TRACE === '1') t.after(() => console.log(b.trace()));
  const protectedPath = '/app/page?x=1';
  let signInUrl;
  let loginUrl;
  let authorizeUrl;
  let state;
  let callbackUrl;
  let loginCookie;
  let loginCookieName;
  let sessionCookie;

  await t.test('an anonymous browser is sent to the sign-in page; an API client gets 401', async () => {
    const hop = await b.request(`${gw.url}${protectedPath}`);
    assert.equal(hop.status, 302);
    const loc = new URL(hop.next);
    assert.equal(loc.origin, gw.url);
    assert.equal(loc.pathname, '/_auth/sign_in');
    assert.equal(loc.searchParams.get('rd'), protectedPath);
    signInUrl = hop.next;

    const api = await get(`${gw.url}${protectedPath}`, { headers: { accept: 'application/json' } });
    assert.equal(api.status, 401);
    assert.match(api.headers.get('www-authenticate') ?? '', /^Bearer realm="portcullis"/);
    assert.equal(echo.seen.length, 0, 'nothing reached the upstream');
  });

  await t.test('the sign-in page offers the source', async () => {
    const hop = await b.request(signInUrl);
    assert.equal(hop.status, 200);
    assert.match(hop.headers.get('content-type'), /^text\/html/);
    assert.match(hop.body, /<h1>Sign in<\/h1>/);
    assert.match(hop.body, /Sign in with Node OpenID Provider/);
    const href = hop.body.match(/href="(\/_auth\/login\/op\?rd=[^"]*)"/);
    assert.ok(href, 'a link to /_auth/login/op');
    loginUrl = new URL(href[1].replaceAll('&amp;', '&'), gw.url).toString();
    assert.equal(new URL(loginUrl).searchParams.get('rd'), protectedPath);
  });

  await t.test('/_auth/login/op redirects to the provider with state, nonce and PKCE', async () => {
    const hop = await b.request(loginUrl);
    assert.equal(hop.status, 302);
    const loc = new URL(hop.next);
    assert.equal(`${loc.origin}${loc.pathname}`, discovery.authorization_endpoint);
    const q = loc.searchParams;
    assert.equal(q.get('client_id'), CLIENT_ID);
    assert.equal(q.get('response_type'), 'code');
    assert.equal(q.get('redirect_uri'), `${gw.url}/_auth/callback/op`);
    assert.deepEqual(new Set(q.get('scope').split(' ')), new Set(['openid', 'email', 'profile']));
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.match(q.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.ok((q.get('state') ?? '').length >= 16, 'a state');
    assert.ok((q.get('nonce') ?? '').length >= 16, 'a nonce');
    state = q.get('state');
    // Each flow has its own login cookie, named after its state (OA2-23).
    const set = hop.setCookies.find((c) => /^portcullis_login-[0-9a-f]{16}=/.test(c));
    assert.ok(set, 'the login-state cookie is set');
    assert.match(set, /HttpOnly/i);
    assert.match(set, /SameSite=Lax/i);
    assert.match(set, /Path=\//);
    loginCookieName = set.split('=')[0];
    loginCookie = b.jar.get('127.0.0.1', loginCookieName);
    assert.ok(loginCookie);
    authorizeUrl = hop.next;
  });

  await t.test("the person signs in at the provider (its login and consent forms)", async () => {
    const { loginPage, consentPage, toCallback } = await passProvider(b, authorizeUrl, `${gw.url}/_auth/callback/op`);
    assert.ok(loginPage.url.startsWith(provider.issuer));
    assert.ok(consentPage.url.startsWith(provider.issuer));
    const cb = new URL(toCallback.next);
    assert.equal(cb.searchParams.get('state'), state);
    assert.ok(cb.searchParams.get('code'), 'an authorization code');
    assert.equal(cb.searchParams.get('iss'), provider.issuer);
    callbackUrl = toCallback.next;
  });

  await t.test('the callback sets the session cookie and returns to the protected URL', async () => {
    const hop = await b.request(callbackUrl);
    assert.equal(hop.status, 302, `callback answered ${hop.status}: ${hop.body}\n${h.logs()}`);
    assert.equal(hop.location, protectedPath);
    const set = hop.setCookies.find((c) => c.startsWith('portcullis='));
    assert.ok(set, 'the session cookie is set');
    assert.match(set, /HttpOnly/i);
    assert.match(set, /SameSite=Lax/i);
    assert.match(set, /Path=\//);
    assert.doesNotMatch(set, /Domain=/i, 'host-only');
    assert.ok(hop.setCookies.some((c) => c.startsWith(`${loginCookieName}=;`) && /Max-Age=0/i.test(c)), 'the login state is cleared');
    assert.equal(b.jar.get('127.0.0.1', loginCookieName), undefined);
    sessionCookie = b.jar.get('127.0.0.1', 'portcullis');
    assert.ok(sessionCookie);
    // The provider was really used: token endpoint (with PKCE) and userinfo.
    assert.ok(provider.calls.includes('POST /token'), provider.calls.join('\n'));
    assert.ok(provider.calls.includes('GET /me'), provider.calls.join('\n'));
  });

  await t.test('the browser reaches the upstream with the identity headers', async () => {
    const hop = await b.follow(`${gw.url}${protectedPath}`);
    assert.equal(hop.status, 200, b.trace());
    assert.equal(JSON.parse(hop.body).echo, true);
    const seen = echo.last();
    assert.equal(seen.url, protectedPath);
    assert.equal(seen.headers['x-forwarded-user'], ACCOUNT.claims.preferred_username);
    assert.equal(seen.headers['x-forwarded-email'], ACCOUNT.claims.email);
    assert.deepEqual(groups(seen.headers['x-forwarded-groups']), ['ops', 'staff']);
    assert.equal(seen.headers['x-forwarded-preferred-username'], ACCOUNT.claims.preferred_username);
    assert.doesNotMatch(seen.headers.cookie ?? '', /(^|;\s*)portcullis=/, 'the session cookie is not passed upstream');
  });

  await t.test('the upstream gets the forwarding headers of the browser\'s request', async () => {
    const seen = echo.last();
    assert.equal(seen.headers.host, `127.0.0.1:${gw.port}`, 'the Host is passed unchanged');
    assert.equal(seen.headers['x-forwarded-proto'], 'http');
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
  });

  await t.test(
    'X-Forwarded-Host is the Host the browser sent, port included',
    async () => {
      const seen = echo.last();
      assert.equal(seen.headers['x-forwarded-host'], seen.headers.host);
    },
  );

  await t.test('a replayed callback is refused', async () => {
    const res = await get(callbackUrl, { headers: { accept: 'text/html', cookie: `${loginCookieName}=${loginCookie}` } });
    assert.equal(res.status, 400);
    assert.ok(!res.headers.getSetCookie().some((c) => /^portcullis=[^;]/.test(c)), 'no session from a replay');
  });

  await t.test('cookie-only requests reach the upstream; spoofed identity headers and the session cookie do not', async () => {
    const before = echo.seen.length;
    const res = await get(`${gw.url}/api/items?page=2`, {
      headers: {
        accept: 'application/json',
        cookie: `theme=dark; portcullis=${sessionCookie}`,
        'x-forwarded-user': 'mallory',
        'x-forwarded-email': 'mallory@evil.test',
        'x-auth-request-user': 'mallory',
        'x_forwarded_groups': 'admins',
      },
    });
    assert.equal(res.status, 200);
    assert.equal(echo.seen.length, before + 1);
    const seen = echo.last();
    assert.equal(seen.url, '/api/items?page=2');
    assert.equal(seen.headers['x-forwarded-user'], 'ada', 'one value, the gateway\'s');
    assert.equal(seen.headers['x-forwarded-email'], 'ada@example.test');
    assert.deepEqual(groups(seen.headers['x-forwarded-groups']), ['ops', 'staff']);
    assert.equal(seen.headers['x-auth-request-user'], undefined);
    assert.equal(seen.headers['x_forwarded_groups'], undefined);
    assert.equal(seen.headers.cookie, 'theme=dark', 'other cookies pass, the session cookie does not');
    const users = seen.rawHeaders.filter((_, i) => i % 2 === 0 && seen.rawHeaders[i].toLowerCase() === 'x-forwarded-user');
    assert.equal(users.length, 1);

    const post = await get(`${gw.url}/api/items`, {
      method: 'POST',
      headers: { accept: 'application/json', 'content-type': 'application/json', cookie: `portcullis=${sessionCookie}` },
      body: JSON.stringify({ name: 'x' }),
    });
    assert.equal(post.status, 200);
    assert.equal(echo.last().method, 'POST');
    assert.equal(echo.last().headers['x-forwarded-user'], 'ada');
  });

  await t.test('the session is bound to the host it was issued on', async () => {
    const before = echo.seen.length;
    const cookie = `portcullis=${sessionCookie}`;
    const same = await rawGet(`${gw.url}/api/items`, { headers: { accept: 'application/json', cookie } });
    assert.equal(same.status, 200);
    // Same listener, same app (it has no `host`), but another host name in the request.
    const other = await rawGet(`${gw.url}/api/items`, { headers: { accept: 'application/json', cookie, host: `localhost:${gw.port}` } });
    assert.equal(other.status, 401);
    assert.equal(echo.seen.length, before + 1, 'only the request on the issuing host reached the upstream');
  });

  await t.test('/_auth/userinfo and /_auth/check say who', async () => {
    const res = await get(`${gw.url}/_auth/userinfo`, { headers: { cookie: `portcullis=${sessionCookie}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /application\/json/);
    const me = await res.json();
    assert.equal(me.user, 'ada');
    assert.equal(me.email, 'ada@example.test');
    assert.equal(me.name, 'Ada Lovelace');
    assert.deepEqual([...me.groups].sort(), ['ops', 'staff']);
    assert.equal(me.source, 'op');
    assert.equal(me.kind, 'session');

    const check = await get(`${gw.url}/_auth/check`, { headers: { cookie: `portcullis=${sessionCookie}` } });
    assert.equal(check.status, 200);
    assert.equal(check.headers.get('x-auth-request-user'), 'ada');
    assert.equal(check.headers.get('x-auth-request-email'), 'ada@example.test');
    assert.deepEqual(groups(check.headers.get('x-auth-request-groups')), ['ops', 'staff']);
    assert.equal(check.headers.get('x-auth-request-preferred-username'), 'ada');

    const anon = await get(`${gw.url}/_auth/userinfo`);
    assert.equal(anon.status, 401);
  });

  await t.test('SES-16: a GET of the sign-out URL, or a POST from elsewhere, signs nobody out', async () => {
    const page = await b.request(`${gw.url}/_auth/sign_out?rd=/`);
    assert.equal(page.status, 200);
    assert.deepEqual(page.setCookies, []);
    assert.ok(b.jar.get('127.0.0.1', 'portcullis'), 'the session cookie is kept');
    const forged = await b.request(`${gw.url}/_auth/sign_out?rd=/`, { method: 'POST', headers: { origin: 'http://evil.example' } });
    assert.equal(forged.status, 403);
    assert.deepEqual(forged.setCookies, []);
    const still = await get(`${gw.url}/_auth/userinfo`, { headers: { cookie: `portcullis=${sessionCookie}` } });
    assert.equal(still.status, 200, 'the session still works');
  });

  await t.test('sign-out (the page\'s button) clears the cookie and ends the session at the provider too', async () => {
    const page = await b.request(`${gw.url}/_auth/sign_out?rd=/`);
    const hop = await b.submit(page);
    assert.equal(hop.method, 'POST');
    assert.equal(hop.status, 303);
    assert.ok(hop.setCookies.some((c) => /^portcullis=;.*Max-Age=0/i.test(c)), hop.setCookies.join('\n'));
    assert.equal(b.jar.get('127.0.0.1', 'portcullis'), undefined);
    // RP-initiated logout: the provider's end_session_endpoint, coming back to the gateway.
    const loc = new URL(hop.next);
    assert.equal(`${loc.origin}${loc.pathname}`, discovery.end_session_endpoint);
    assert.equal(loc.searchParams.get('client_id'), CLIENT_ID);
    assert.equal(loc.searchParams.get('post_logout_redirect_uri'), `${gw.url}/`);
    assert.ok(loc.searchParams.get('id_token_hint'), 'the ID token as a hint');
    const confirm = await b.follow(hop.next);
    assert.equal(confirm.status, 200, b.trace());
    const back = await b.submit(confirm, { logout: 'yes' }, { id: 'op.logoutForm' });
    assert.ok([302, 303].includes(back.status), b.trace());
    assert.ok(back.next.startsWith(`${gw.url}/`), `back at the gateway: ${back.next}`);
    const landing = await b.request(back.next);
    assert.equal(landing.status, 302, 'signed out: sent to sign in again');
    assert.equal(new URL(landing.next).pathname, '/_auth/sign_in');
  });

  await t.test('the old session cookie is refused after sign-out', async () => {
    const before = echo.seen.length;
    const api = await get(`${gw.url}/api/items`, { headers: { accept: 'application/json', cookie: `portcullis=${sessionCookie}` } });
    assert.equal(api.status, 401);
    const page = await get(`${gw.url}${protectedPath}`, { headers: { accept: 'text/html', cookie: `portcullis=${sessionCookie}` } });
    assert.equal(page.status, 302);
    assert.equal(new URL(page.headers.get('location'), gw.url).pathname, '/_auth/sign_in');
    const info = await get(`${gw.url}/_auth/userinfo`, { headers: { cookie: `portcullis=${sessionCookie}` } });
    assert.equal(info.status, 401);
    const check = await get(`${gw.url}/_auth/check`, { headers: { cookie: `portcullis=${sessionCookie}` } });
    assert.equal(check.status, 401);
    assert.equal(echo.seen.length, before, 'nothing reached the upstream');
  });
});
