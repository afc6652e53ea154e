// Shared harness of the e2e tier: free ports, temp dirs, child processes that
// are always stopped, bounded waits, the portcullis binary, an echo upstream,
// a real OpenID provider (oidc-provider), and a fetch client that behaves
// like a browser (cookie jar, redirects followed one hop at a time, forms).

import { execFile, spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync, createWriteStream, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';

const execFileP = promisify(execFile);

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');

// The debug binary `cargo build` made (`PORTCULLIS_BIN` overrides; `CARGO_TARGET_DIR` is honoured).
export function portcullisBin() {
  if (process.env.PORTCULLIS_BIN) return path.resolve(process.env.PORTCULLIS_BIN);
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR)
    : path.join(ROOT, 'target');
  const bin = path.join(target, 'debug', 'portcullis');
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: run \`cargo build\` first (scripts/test.sh does)`);
  }
  return bin;
}

// Finds an executable in PATH or the sbin folders (nginx lives in /usr/sbin).
export function which(name) {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    const p = path.join(d, name);
    if (d && existsSync(p)) return p;
  }
  return null;
}

// A port that was free a moment ago on 127.0.0.1 (the OS picks it).
export async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

// Polls `probe` until it returns a truthy value; fails after `timeoutMs`.
export async function waitFor(what, probe, { timeoutMs = 20_000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

// `fetch` with a deadline, never following redirects.
export async function get(url, init = {}) {
  return fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(10_000), ...init });
}

// A GET through node:http, for what fetch will not do: a chosen local
// address (the loopback range is all ours) or a `Host` header of our own.
export function rawGet(url, { headers = {}, localAddress } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, localAddress, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
  });
}

// Everything one test file starts, stopped in reverse order by `stop()`.
export class Harness {
  constructor(name) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), `portcullis-e2e-${name}-`));
    this.cleanups = [];
    this.procs = [];
    // Last resort if the test process ends without `stop()` (a crash, an uncaught error).
    process.once('exit', () => {
      for (const p of this.procs) if (!p.exited) p.child.kill('SIGKILL');
    });
  }

  // Runs `fn` at stop time (last registered runs first).
  defer(fn) {
    this.cleanups.push(fn);
  }

  // Starts a child process whose output goes to DIR/<label>.log; it is
  // stopped (SIGTERM, then SIGKILL after 5 s) by `stop()`.
  spawn(label, cmd, args, opts = {}) {
    const logPath = path.join(this.dir, `${label}.log`);
    const log = createWriteStream(logPath);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    const proc = { label, child, logPath, stdout: '', exited: null };
    child.stdout.on('data', (b) => {
      proc.stdout += b.toString();
      log.write(b);
    });
    child.stderr.on('data', (b) => log.write(b));
    proc.exitedPromise = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        proc.exited = { code, signal };
        resolve(proc.exited);
      });
      child.once('error', (err) => {
        proc.exited = { code: null, signal: null, error: err };
        resolve(proc.exited);
      });
    });
    proc.log = () => {
      try {
        return readFileSync(logPath, 'utf8');
      } catch {
        return '';
      }
    };
    // Fails a wait early (with the log) when the process dies first.
    proc.alive = () => {
      if (proc.exited) {
        throw new Error(`${label} exited (${JSON.stringify(proc.exited)}); its log:\n${proc.log().slice(-4000)}`);
      }
      return true;
    };
    this.procs.push(proc);
    this.defer(async () => {
      await stopProcess(proc);
      log.end();
    });
    return proc;
  }

  // Stops everything, in reverse order; removes the temp dir unless KEEP_E2E_TMP=1.
  async stop() {
    const errors = [];
    while (this.cleanups.length) {
      const fn = this.cleanups.pop();
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    }
    if (process.env.KEEP_E2E_TMP === '1') {
      console.log(`kept ${this.dir}`);
    } else {
      rmSync(this.dir, { recursive: true, force: true });
    }
    if (errors.length) throw errors[0];
  }

  // The logs of every process, for a failure message.
  logs() {
    return this.procs.map((p) => `--- ${p.label} (${p.logPath})\n${p.log().slice(-3000)}`).join('\n');
  }
}

async function stopProcess(proc) {
  if (proc.exited) return;
  proc.child.kill('SIGTERM');
  // Unref'd timers: they must not keep the test process alive once everything is stopped.
  const timer = sleep(5_000, 'timeout', { ref: false });
  if ((await Promise.race([proc.exitedPromise, timer])) === 'timeout') {
    proc.child.kill('SIGKILL');
    await Promise.race([proc.exitedPromise, sleep(2_000, undefined, { ref: false })]);
  }
}

// A Node HTTP server on 127.0.0.1:0 that records every request it gets and
// answers with what it saw, as JSON.
export async function startEcho(h) {
  const seen = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const entry = { method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders };
      seen.push(entry);
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ echo: true, ...entry }));
    });
  });
  await listen(server, 0);
  h.defer(() => closeServer(server));
  const { port } = server.address();
  return { server, port, url: `http://127.0.0.1:${port}`, seen, last: () => seen.at(-1) };
}

export function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export function closeServer(server) {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections?.();
  });
}

// The person the outside provider knows. The login form takes `ACCOUNT.id`.
export const ACCOUNT = {
  id: 'u-1001',
  claims: {
    sub: 'u-1001',
    email: 'ada@example.test',
    email_verified: true,
    name: 'Ada Lovelace',
    preferred_username: 'ada',
    groups: ['staff', 'ops'],
  },
};

// A real, certified OpenID provider (npm `oidc-provider`) on 127.0.0.1:0 with
// one confidential client; its built-in dev interactions (login and consent
// forms) are used. PKCE is required of every client. `account` (default
// `ACCOUNT`) is the one person it knows. With `refreshTokens`, the client
// also gets refresh tokens (rotated on every use, a reused one revokes the
// grant) and the revocation endpoint is on; `accessTokenTtl` is in seconds.
// The returned `tokenCalls` records every POST /token ({ grant, status }) and
// `refreshTokens` every refresh token the token endpoint handed out, in order.
export async function startProvider(h, { clientId, clientSecret, redirectUris, postLogoutRedirectUris = [], account = ACCOUNT, refreshTokens = false, accessTokenTtl = 600 }) {
  const { default: Provider } = await import('oidc-provider');
  const server = http.createServer();
  await listen(server, 0);
  h.defer(() => closeServer(server));
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        client_name: 'portcullis e2e',
        redirect_uris: redirectUris,
        post_logout_redirect_uris: postLogoutRedirectUris,
        grant_types: refreshTokens ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: 'openid email profile',
      },
    ],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      // `groups` is not a standard claim; this test provider hands it out with `profile`.
      profile: ['name', 'preferred_username', 'groups'],
    },
    scopes: ['openid', 'email', 'profile'],
    pkce: { required: () => true, methods: ['S256'] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    // A fresh signing key per run and explicit lifetimes (the library warns about its defaults).
    jwks: { keys: [{ ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }), kid: 'e2e', use: 'sig', alg: 'RS256' }] },
    ttl: { AccessToken: accessTokenTtl, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600, RefreshToken: 3600 },
    ...(refreshTokens
      ? {
          // Without `offline_access` (which this library grants only with prompt=consent) the
          // default would issue none; the refresh token still ends with the provider session.
          issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
          rotateRefreshToken: () => true,
          features: { revocation: { enabled: true } },
          // Its default 15 s tolerance would keep a 10 s token valid past its expiry.
          clockTolerance: 0,
        }
      : {}),
    async findAccount(_ctx, id) {
      if (id !== account.id) return undefined;
      return { accountId: id, claims: async () => ({ ...account.claims }) };
    },
  });
  // Otherwise a failure inside the provider only shows as a 500 to portcullis.
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));
  const calls = []; // "METHOD /path" of every request, to prove the provider was really used
  const tokenCalls = [];
  const issuedRefreshTokens = [];
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'POST' && ctx.path === '/token') {
      tokenCalls.push({ grant: ctx.oidc?.params?.grant_type, status: ctx.status });
      if (ctx.body?.refresh_token) issuedRefreshTokens.push(ctx.body.refresh_token);
    }
  });
  const handle = provider.callback();
  server.on('request', (req, res) => {
    calls.push(`${req.method} ${req.url.split('?')[0]}`);
    handle(req, res);
  });
  return {
    issuer,
    port,
    calls,
    tokenCalls,
    refreshTokens: issuedRefreshTokens,
    wellKnown: `${issuer}/.well-known/openid-configuration`,
  };
}

// A comma-separated groups header as a sorted list (the order is not part of the contract).
export function groups(header) {
  return (header ?? '').split(',').filter(Boolean).sort();
}

// Base64 of 32 random bytes: a session secret.
export function secret() {
  return randomBytes(32).toString('base64');
}

// Writes `toml` to DIR/<label>.toml and starts `portcullis serve --config`;
// resolves once its admin `/readyz` says ready (every source discovered).
export async function startPortcullis(h, label, { listenPort, adminPort, toml }) {
  const file = path.join(h.dir, `${label}.toml`);
  writeFileSync(file, toml);
  // Asynchronously: `check` fetches discovery, maybe from a provider served by this very process.
  const bin = portcullisBin();
  try {
    await execFileP(bin, ['check', '--config', file], { timeout: 20_000 });
  } catch (e) {
    throw new Error(`portcullis check failed for ${file}: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}\n--- config\n${toml}`);
  }
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info,pingora_core=warn,pingora_proxy=warn' };
  delete env.PORTCULLIS_CONFIG;
  for (const k of Object.keys(env)) if (k.startsWith('PORTCULLIS_') && k.includes('__')) delete env[k];
  const proc = h.spawn(label, bin, ['serve', '--config', file], { env, cwd: h.dir });
  await waitFor(
    `${label} /readyz on 127.0.0.1:${adminPort}`,
    async () => proc.alive() && (await get(`http://127.0.0.1:${adminPort}/readyz`)).status === 200,
    { timeoutMs: 30_000 },
  );
  return { proc, url: `http://127.0.0.1:${listenPort}`, port: listenPort, file };
}

// A cookie jar that keys cookies by host name (not port, as browsers do) and
// honours Path, Max-Age and Expires.
export class CookieJar {
  constructor() {
    this.cookies = []; // { host, name, value, path, expires }
  }

  store(url, setCookies) {
    const u = new URL(url);
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const c = { host: u.hostname, name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), path: defaultPath(u), expires: Infinity };
      for (const a of attrs) {
        const [k, v = ''] = a.split('=');
        const key = k.trim().toLowerCase();
        if (key === 'path' && v.trim().startsWith('/')) c.path = v.trim();
        else if (key === 'max-age') c.expires = Date.now() + Number(v.trim()) * 1000;
        else if (key === 'expires' && c.expires === Infinity) c.expires = Date.parse(v.trim());
      }
      this.cookies = this.cookies.filter((o) => !(o.host === c.host && o.name === c.name && o.path === c.path));
      if (c.expires > Date.now()) this.cookies.push(c);
    }
  }

  header(url) {
    const u = new URL(url);
    const now = Date.now();
    this.cookies = this.cookies.filter((c) => c.expires > now);
    return this.cookies
      .filter((c) => c.host === u.hostname && pathMatches(u.pathname, c.path))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  get(host, name) {
    return this.cookies.find((c) => c.host === host && c.name === name && c.expires > Date.now())?.value;
  }
}

function defaultPath(u) {
  const p = u.pathname;
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

function pathMatches(reqPath, cookiePath) {
  if (reqPath === cookiePath) return true;
  if (!reqPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || reqPath[cookiePath.length] === '/';
}

// A fetch client that acts like a browser on one tab: sends and stores
// cookies, follows nothing by itself, records every hop.
export class Browserish {
  constructor() {
    this.jar = new CookieJar();
    this.hops = [];
  }

  // One request; `Accept` defaults to a browser's.
  async request(url, { method = 'GET', headers = {}, form } = {}) {
    const h = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8', ...headers };
    const cookie = this.jar.header(url);
    if (cookie && !('cookie' in h)) h.cookie = cookie;
    let body;
    if (form) {
      body = new URLSearchParams(form).toString();
      h['content-type'] = 'application/x-www-form-urlencoded';
    }
    const started = Date.now();
    const res = await get(url, { method, headers: h, body });
    this.jar.store(url, res.headers.getSetCookie());
    const text = await res.text();
    const hop = { method, url, status: res.status, headers: res.headers, location: res.headers.get('location'), body: text, setCookies: res.headers.getSetCookie(), ms: Date.now() - started };
    if (hop.location) hop.next = new URL(hop.location, url).toString();
    this.hops.push(hop);
    return hop;
  }

  // Follows redirects from `start` (a URL to GET, or a hop already made)
  // until a non-redirect, or a redirect whose target satisfies `until`
  // (returned unfollowed); at most `max` hops.
  async follow(start, { max = 12, until = () => false, ...opts } = {}) {
    let hop = typeof start === 'string' ? await this.request(start, opts) : start;
    for (let i = 0; hop.status >= 300 && hop.status < 400 && hop.next && !until(hop.next); i++) {
      if (i >= max) throw new Error(`more than ${max} redirects:\n${this.trace()}`);
      hop = await this.request(hop.next);
    }
    return hop;
  }

  // Submits the form of `page` (first one, or the one with `id`) as a browser would:
  // its action resolved against the page URL, its inputs, plus `fields`; a POST
  // carries the page's `Origin`, as browsers send it.
  async submit(page, fields = {}, { id } = {}) {
    const form = parseForms(page.body).find((f) => (id ? f.id === id : true));
    if (!form) throw new Error(`no form${id ? ` #${id}` : ''} on ${page.url}:\n${page.body.slice(0, 2000)}`);
    const action = new URL(form.action || page.url, page.url).toString();
    const method = (form.method || 'GET').toUpperCase();
    const headers = method === 'POST' ? { origin: new URL(page.url).origin } : {};
    return this.request(action, { method, headers, form: { ...form.fields, ...fields } });
  }

  // A short trace of every hop so far, for failure messages.
  trace() {
    return this.hops.map((h) => `${h.method} ${h.url} -> ${h.status}${h.location ? ` ${h.location}` : ''} (${h.ms} ms)`).join('\n');
  }
}

// The forms of an HTML page: id, action, method, and their named inputs' values.
export function parseForms(html) {
  const forms = [];
  const re = /<form\b([^>]*)>([\s\S]*?)<\/form>/gi;
  for (let m; (m = re.exec(html)); ) {
    const attrs = parseAttrs(m[1]);
    const fields = {};
    for (const input of m[2].matchAll(/<input\b([^>]*)>/gi)) {
      const a = parseAttrs(input[1]);
      if (a.name !== undefined && (a.type ?? 'text') !== 'submit') fields[a.name] = a.value ?? '';
    }
    forms.push({ id: attrs.id, action: attrs.action, method: attrs.method, fields });
  }
  return forms;
}

function parseAttrs(s) {
  const out = {};
  for (const m of s.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>/]+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

function decodeEntities(s) {
  return s
    .replace(/&#x([0-9a-f]+);/gi, (_, x) => String.fromCodePoint(parseInt(x, 16)))
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"')
    .replace(/&#39;|&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

// The config of a portcullis in front of `upstream` with the outside provider as source `op`.
// `appKeys` (TOML lines) go into the app "echo" before its access rule.
// `sessionSecret` and `storeUrl` let replicas share sessions and a store.
export function gatewayToml({ dir, listenPort, adminPort, publicUrl, provider, clientId, clientSecret, upstream, trustedProxies = [], appKeys = '', sessionSecret = secret(), storeUrl = `sqlite://${path.join(dir, `portcullis-${listenPort}.db`)}` }) {
  return `# generated by tests/e2e
[server]
listen = "127.0.0.1:${listenPort}"
admin_listen = "127.0.0.1:${adminPort}"
public_url = "${publicUrl}"
trusted_proxies = ${JSON.stringify(trustedProxies)}
threads = 1
shutdown_timeout = "2s"

[session]
secrets = ["${sessionSecret}"]

[store]
url = "${storeUrl}"

[[source]]
slug = "op"
name = "Node OpenID Provider"
type = "openidconnect"
consumer_key = "${clientId}"
consumer_secret = "${clientSecret}"
oidc_well_known_url = "${provider.wellKnown}"
scopes = ["openid", "email", "profile"]
pkce = "S256"
token_auth_method = "client_secret_basic"

[[app]]
name = "echo"
upstream = "${upstream}"
public_paths = ["/public/"]
${appKeys}
[[app.policy]]
on = ["access"]
effect = "allow"
`;
}

// The provider's leg of a sign-in, as a person at the keyboard: from the
// authorization URL through the dev login form (account id, any password) and
// the consent form, up to the provider's redirect to `callbackPrefix`, which
// is not followed. Returns the pages and that last hop. `account` (default
// `ACCOUNT`) is whom the login form is filled in as.
export async function passProvider(b, authorizeUrl, callbackPrefix, { account = ACCOUNT } = {}) {
  const until = (next) => next.startsWith(callbackPrefix);
  const loginPage = await b.follow(authorizeUrl, { until });
  assert.equal(loginPage.status, 200, `provider login page\n${b.trace()}`);
  assert.match(loginPage.body, /name="login"/, 'the provider shows its login form');
  let hop = await b.submit(loginPage, { login: account.id, password: 'any password' });
  hop = await b.follow(hop, { until });
  assert.equal(hop.status, 200, `provider consent page\n${b.trace()}`);
  assert.match(hop.body, /name="prompt" value="consent"/, 'the provider asks for consent');
  const consentPage = hop;
  hop = await b.follow(await b.submit(consentPage), { until });
  assert.ok(hop.next && until(hop.next), `the provider redirects to the callback\n${b.trace()}`);
  return { loginPage, consentPage, toCallback: hop };
}
