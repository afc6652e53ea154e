// e2e: the identity assertion checked by an independent library. The real
// portcullis binary signs a person in through a real OpenID provider (npm
// `oidc-provider`) and verifies a machine token; the Node echo upstream
// receives `X-Portcullis-Assertion`, which npm `jose` verifies with the
// gateway's `/_auth/jwks.json` (as an upstream would) and refuses when the key
// is wrong, the assertion has expired or it was tampered with.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { SignJWT, createRemoteJWKSet, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify } from 'jose';

import {
  ACCOUNT,
  Browserish,
  Harness,
  freePort,
  gatewayToml,
  get,
  passProvider,
  startEcho,
  startPortcullis,
  startProvider,
} from './support.mjs';

const h = new Harness('assertion');
const CLIENT_ID = 'portcullis';
const CLIENT_SECRET = randomBytes(24).toString('base64url');
const MACHINE_ISSUER = 'https://ci.e2e.example';
let echo;
let gw;
let machineKey;

before(async () => {
  try {
    const gwPort = await freePort();
    const adminPort = await freePort();
    const gwUrl = `http://127.0.0.1:${gwPort}`;
    echo = await startEcho(h);
    const provider = await startProvider(h, {
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUris: [`${gwUrl}/_auth/callback/op`],
    });
    // A machine issuer whose key the gateway knows inline.
    machineKey = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(machineKey.publicKey)), kid: 'ci-1', alg: 'ES256', use: 'sig' };
    const toml = `${gatewayToml({
      dir: h.dir,
      listenPort: gwPort,
      adminPort,
      publicUrl: gwUrl,
      provider,
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      upstream: echo.url,
      appKeys: 'identity_assertion = true\njwt_sources = ["ci"]\njwt_audiences = ["echo"]\n',
    })}
[[source]]
slug = "ci"
type = "openidconnect"
issuer = "${MACHINE_ISSUER}"
oidc_jwks = '${JSON.stringify({ keys: [jwk] })}'
`;
    gw = await startPortcullis(h, 'portcullis', { listenPort: gwPort, adminPort, toml });
  } catch (e) {
    await h.stop().catch(() => {});
    throw e;
  }
}, { timeout: 60_000 });

after(() => h.stop());

// What an upstream does: the gateway's JWKS, its issuer, its own app name as audience.
async function verifyAsUpstream(jwt, options = {}) {
  const jwks = createRemoteJWKSet(new URL(`${gw.url}/_auth/jwks.json`));
  return jwtVerify(jwt, jwks, { issuer: gw.url, audience: 'echo', algorithms: ['ES256'], ...options });
}

// The refusals any verifier must make.
async function refusalsHold(jwt, payload) {
  const stranger = await generateKeyPair('ES256');
  await assert.rejects(jwtVerify(jwt, stranger.publicKey, { algorithms: ['ES256'] }), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'another key');
  await assert.rejects(verifyAsUpstream(jwt, { currentDate: new Date((payload.exp + 1) * 1000) }), { code: 'ERR_JWT_EXPIRED' }, 'past its exp');
  const [head, body, sig] = jwt.split('.');
  const changed = { ...JSON.parse(Buffer.from(body, 'base64url').toString()), sub: 'admin' };
  const tampered = `${head}.${Buffer.from(JSON.stringify(changed)).toString('base64url')}.${sig}`;
  await assert.rejects(verifyAsUpstream(tampered), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'tampered');
  await assert.rejects(verifyAsUpstream(jwt, { audience: 'another-app' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'another audience');
}

// Every copy of the assertion the upstream received, in any spelling.
function assertionsSeen(seen) {
  const out = [];
  for (let i = 0; i < seen.rawHeaders.length; i += 2) {
    if (seen.rawHeaders[i].toLowerCase().replaceAll('_', '-') === 'x-portcullis-assertion') out.push(seen.rawHeaders[i + 1]);
  }
  return out;
}

test('the JWKS is public and lists ES256 keys only', async () => {
  const res = await get(`${gw.url}/_auth/jwks.json`);
  assert.equal(res.status, 200);
  const { keys } = await res.json();
  assert.equal(keys.length, 1);
  assert.equal(keys[0].kty, 'EC');
  assert.equal(keys[0].crv, 'P-256');
  assert.equal(keys[0].alg, 'ES256');
  assert.equal(keys[0].d, undefined, 'never the private part');
});

test('a signed-in person: jose verifies the assertion with the served JWKS', { timeout: 60_000 }, async () => {
  const b = new Browserish();
  const start = await b.request(`${gw.url}/_auth/login/op?rd=/app`);
  assert.equal(start.status, 302, b.trace());
  const { toCallback } = await passProvider(b, start.next, `${gw.url}/_auth/callback/op`);
  const back = await b.request(toCallback.next);
  assert.equal(back.status, 302, `${back.body}\n${h.logs()}`);
  // Forged copies, in both spellings, never reach the upstream.
  const hop = await b.request(`${gw.url}/app`, { headers: { 'x-portcullis-assertion': 'forged.by.client', x_portcullis_assertion: 'forged.by.client' } });
  assert.equal(hop.status, 200, b.trace());
  const sent = assertionsSeen(echo.last());
  assert.equal(sent.length, 1, `exactly the gateway's own: ${sent}`);
  const jwt = sent[0];
  assert.notEqual(jwt, 'forged.by.client');

  const { payload, protectedHeader } = await verifyAsUpstream(jwt);
  assert.equal(protectedHeader.alg, 'ES256');
  assert.equal(protectedHeader.kid, decodeProtectedHeader(jwt).kid);
  assert.equal(payload.iss, gw.url);
  assert.equal(payload.aud, 'echo');
  assert.equal(payload.kind, 'session');
  assert.equal(payload.email, ACCOUNT.claims.email);
  assert.equal(payload.name, ACCOUNT.claims.name);
  assert.equal(payload.preferred_username, ACCOUNT.claims.preferred_username);
  assert.deepEqual([...payload.groups].sort(), ['ops', 'staff']);
  assert.match(payload.sub, /\S/, 'the local user id');
  assert.ok(payload.exp - payload.iat <= 300, 'at most five minutes');
  await refusalsHold(jwt, payload);
});

test('a machine token: the assertion names its issuer and subject', async () => {
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ email: 'bot@ci.e2e.example' })
    .setProtectedHeader({ alg: 'ES256', kid: 'ci-1' })
    .setIssuer(MACHINE_ISSUER)
    .setSubject('deploy-bot')
    .setAudience('echo')
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(machineKey.privateKey);
  const res = await get(`${gw.url}/deploy`, { headers: { authorization: `Bearer ${token}`, 'x-portcullis-assertion': 'forged.by.client' } });
  assert.equal(res.status, 200, await res.text());
  const sent = assertionsSeen(echo.last());
  assert.equal(sent.length, 1);
  const { payload } = await verifyAsUpstream(sent[0]);
  assert.equal(payload.sub, `${MACHINE_ISSUER}#deploy-bot`);
  assert.equal(payload.kind, 'bearer');
  assert.equal(payload.email, 'bot@ci.e2e.example');
  await refusalsHold(sent[0], payload);
});
