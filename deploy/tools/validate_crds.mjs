// Validates the Prometheus Operator resources (ServiceMonitor,
// PrometheusRule) in Kubernetes manifests against the operator's CRD
// schemas (npm @kubernetes-models/prometheus-operator), which
// kubernetes-validate does not know. Usage: node validate_crds.mjs FILE...
// with NODE_PATH naming the node_modules that hold the models and js-yaml.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.env.NODE_PATH ?? "node_modules";
const require = createRequire(path.join(modules, "x.js"));
const yaml = require("js-yaml");
const models = await import(
  pathToFileURL(
    path.join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js"),
  ).href
);

let checked = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc || doc.apiVersion !== "monitoring.coreos.com/v1") continue;
    const Model = models[doc.kind];
    if (!Model) {
      console.error(`${file}: no schema for ${doc.kind}`);
      failed++;
      continue;
    }
    try {
      new Model(doc).validate();
      console.log(`${file}: ${doc.kind}/${doc.metadata?.name} valid`);
      checked++;
    } catch (e) {
      console.error(`${file}: ${doc.kind}/${doc.metadata?.name}: ${e.message}`);
      failed++;
    }
  }
}
if (failed > 0 || checked === 0) {
  console.error(`${checked} valid, ${failed} invalid`);
  process.exit(1);
}
