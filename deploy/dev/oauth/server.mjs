// Local OAuth 2.0 authorization server for chartbridge's KIS auth tests:
// oidc-provider (a certified OpenID Provider implementation) with the
// client credentials grant, client_secret_basic and private_key_jwt
// (RS384/ES384, SMART Backend Services) client authentication,
// token introspection (for the test's resource-server gate) and revocation.
//
// Env: OAUTH_PORT (8190), OAUTH_HOST (127.0.0.1), OAUTH_KEYS_DIR (the
// repository's fixtures/oauth: test-only client private keys; the public
// halves become the clients' JWKS), OAUTH_CONSOLE_REDIRECT_URIS (space-
// separated redirect URIs of the console client; default the worker's
// http://127.0.0.1:9464/console/callback).
//
// Console test users (login name = subject; the dev login form takes any
// password): compliance-officer [compliance], reviewer [reviewer],
// operator [operator], all-roles [compliance reviewer operator],
// no-roles []. Other names cannot log in.
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.OAUTH_PORT || 8190);
const host = process.env.OAUTH_HOST || '127.0.0.1';
const issuer = `http://${host}:${port}`;
const keysDir = process.env.OAUTH_KEYS_DIR;
if (!keysDir) throw new Error('OAUTH_KEYS_DIR is required');

function publicJwk(file, alg) {
  const jwk = createPublicKey(readFileSync(`${keysDir}/${file}`)).export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: file };
}

const SCOPE = 'system/Communication.c system/DocumentReference.cr system/Binary.cru';
const CONSOLE_USERS = {
  'compliance-officer': ['compliance'],
  reviewer: ['reviewer'],
  operator: ['operator'],
  'all-roles': ['compliance', 'reviewer', 'operator'],
  'no-roles': [],
};
const consoleRedirects = (process.env.OAUTH_CONSOLE_REDIRECT_URIS || 'http://127.0.0.1:9464/console/callback')
  .split(' ').filter(Boolean);

const machine = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: SCOPE };

const provider = new Provider(issuer, {
  clients: [
    { ...machine, client_id: 'chartbridge-secret', client_secret: 'test-secret-not-for-production',
      token_endpoint_auth_method: 'client_secret_basic' },
    { ...machine, client_id: 'chartbridge-short', client_secret: 'test-secret-not-for-production',
      token_endpoint_auth_method: 'client_secret_basic' },
    { ...machine, client_id: 'chartbridge-smart-es384', token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES384', jwks: { keys: [publicJwk('client-es384.pem', 'ES384')] } },
    { ...machine, client_id: 'chartbridge-smart-rs384', token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'RS384', jwks: { keys: [publicJwk('client-rs384.pem', 'RS384')] } },
    // the web console: authorization code + PKCE, roles in the ID token
    { client_id: 'chartbridge-console', client_secret: 'test-console-secret-not-for-production',
      grant_types: ['authorization_code'], response_types: ['code'], redirect_uris: consoleRedirects,
      token_endpoint_auth_method: 'client_secret_basic' },
    // the KIS's resource server: introspects tokens
    { client_id: 'kis-resource-server', client_secret: 'test-rs-secret-not-for-production',
      grant_types: [], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic' },
  ],
  scopes: [...SCOPE.split(' '), 'openid', 'roles'],
  claims: { openid: ['sub'], roles: ['roles'] },
  // scope claims in the ID token (the console reads roles from it)
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    if (!Object.hasOwn(CONSOLE_USERS, id)) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, roles: CONSOLE_USERS[id] }) };
  },
  // the console is a first-party client: no consent screen
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (ctx.oidc.client.clientId !== 'chartbridge-console') return undefined;
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid roles');
    await grant.save();
    return grant;
  },
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    // the built-in login form (any password) for the console's test users
    devInteractions: { enabled: true },
  },
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS256', 'RS384', 'ES256', 'ES384'],
  },
  ttl: {
    ClientCredentials: (ctx, token, client) => (client.clientId === 'chartbridge-short' ? 4 : 600),
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description));
provider.listen(port, host, () => console.log(`oauth server at ${issuer}`));
