// Shared helpers for the chart tests: locate the tools installed by
// scripts/tools/install-helm.sh, run helm offline, parse and schema-validate
// rendered manifests with kubernetes-models.
//
// The npm packages live in the tools cache (not next to this file), so they
// are imported by absolute path rather than by bare specifier.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const chartDir = path.join(repoRoot, 'deploy', 'helm', 'dcasgd');
export const prodValues = path.join(here, 'values-prod.yaml');

// Installs the tools if needed. Throws (so the test FAILS, never skips) with
// the installer's message when they cannot be had.
function ensureTools() {
  const installer = path.join(repoRoot, 'scripts', 'tools', 'install-helm.sh');
  const run = spawnSync('bash', [installer, '--print-dir'], { encoding: 'utf8' });
  if (run.status !== 0) {
    throw new Error(
      `cannot install helm/kubernetes-models with ${installer} (exit ${run.status}):\n` +
        `${run.stderr}\nThe deploy tests need them; they do not skip.`);
  }
  return run.stdout.trim();
}

export const toolsDir = ensureTools();
export const helmBin = path.join(toolsDir, 'bin', 'helm');
const modules = path.join(toolsDir, 'node_modules');
const requireFromTools = createRequire(path.join(toolsDir, 'package.json'));
const YAML = requireFromTools('yaml');

// Helm with its config, cache and data in a private temp dir: no user state,
// no network.
const helmHome = fs.mkdtempSync(path.join(os.tmpdir(), 'dcasgd-helm-'));
const helmEnv = {
  ...process.env,
  HELM_CONFIG_HOME: path.join(helmHome, 'config'),
  HELM_CACHE_HOME: path.join(helmHome, 'cache'),
  HELM_DATA_HOME: path.join(helmHome, 'data'),
};
process.on('exit', () => fs.rmSync(helmHome, { recursive: true, force: true }));

// Runs helm; returns {status, stdout, stderr} without throwing.
export function helm(args) {
  const run = spawnSync(helmBin, args, { encoding: 'utf8', env: helmEnv, maxBuffer: 64 << 20 });
  if (run.error) throw run.error;
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

// `helm template` of the chart (or `chart`) with extra args; throws with
// helm's stderr when rendering fails. Returns the parsed objects.
export function render(extraArgs = [], { release = 'dcasgd', namespace = 'ml', chart = chartDir } = {}) {
  const out = helm(['template', release, chart, '--namespace', namespace, ...extraArgs]);
  if (out.status !== 0) throw new Error(`helm template failed:\n${out.stderr}`);
  return parseManifests(out.stdout);
}

export function parseManifests(text) {
  return YAML.parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`bad YAML from helm: ${doc.errors[0].message}`);
      return doc.toJS();
    })
    .filter((obj) => obj !== null && obj !== undefined);
}

// apiVersion -> module directory inside the tools' node_modules.
function modelPath(apiVersion, kind) {
  if (apiVersion.startsWith('monitoring.coreos.com/')) {
    return path.join(modules, '@kubernetes-models', 'prometheus-operator', apiVersion, `${kind}.js`);
  }
  if (apiVersion.startsWith('cert-manager.io/')) {
    return path.join(modules, '@kubernetes-models', 'cert-manager', apiVersion, `${kind}.js`);
  }
  return path.join(modules, 'kubernetes-models', apiVersion, `${kind}.js`);
}

// Validates one object against its kubernetes-models schema. Throws when the
// kind is unknown to the models or the object is invalid (wrong types,
// missing required fields; unknown fields are not detected by the models).
export async function validateObject(obj) {
  const file = modelPath(obj.apiVersion, obj.kind);
  if (!fs.existsSync(file)) {
    throw new Error(`no schema for ${obj.apiVersion} ${obj.kind} (${file})`);
  }
  const mod = await import(pathToFileURL(file).href);
  const Model = mod[obj.kind];
  if (typeof Model !== 'function') throw new Error(`${file} exports no ${obj.kind}`);
  try {
    new Model(obj).validate();
  } catch (err) {
    throw new Error(`${obj.kind}/${obj.metadata?.name}: ${err.message}`);
  }
}

export { YAML, execFileSync };
