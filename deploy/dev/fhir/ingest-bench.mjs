// Direct ingest of the dev FHIR server: N one-entry transaction bundles,
// each a conditional create of a Communication by identifier (the shape of
// chartbridge's text archive), posted one after another. Prints the rate of
// each block of 500, so a server that slows down as it fills shows it.
//
//   node deploy/dev/fhir/ingest-bench.mjs http://127.0.0.1:8090 2000
const base = (process.argv[2] || 'http://127.0.0.1:8090').replace(/\/+$/, '');
const n = Number.parseInt(process.argv[3] || '2000', 10);
const block = 500;
const run = Date.now();
const system = 'urn:chartbridge:bench:message';

async function transaction(i) {
  const value = `m-${run}-${i}`;
  const bundle = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: `urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
        resource: {
          resourceType: 'Communication',
          status: 'completed',
          identifier: [{ system, value }],
          payload: [{ contentString: `bench ${i}` }],
          sent: '2026-11-30T10:00:00Z',
        },
        request: { method: 'POST', url: 'Communication', ifNoneExist: `identifier=${system}|${value}` },
      },
    ],
  };
  const res = await fetch(`${base}/`, {
    method: 'POST',
    headers: { 'content-type': 'application/fhir+json' },
    body: JSON.stringify(bundle),
  });
  if (res.status >= 300) {
    throw new Error(`transaction ${i}: HTTP ${res.status}: ${await res.text()}`);
  }
  await res.arrayBuffer();
}

const started = performance.now();
let t = started;
for (let i = 0; i < n; i++) {
  await transaction(i);
  if ((i + 1) % block === 0 || i + 1 === n) {
    const now = performance.now();
    const size = (i % block) + 1;
    console.log(`ingest: ${i + 1} tx ${(size / ((now - t) / 1000)).toFixed(1)} tx/s`);
    t = now;
  }
}
console.log(`ingest: total=${n} tx_per_s=${(n / ((performance.now() - started) / 1000)).toFixed(1)}`);
