// Chart tests: helm lint, helm template with the default and a
// production-like values file, kubernetes-models validation of every rendered
// object, and assertions on what the rendered objects promise (probes, ports,
// labels, selectors, security, storage, monitoring, schema).
// Run: node --test tests/deploy/chart_test.mjs
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';

import { chartDir, helm, prodValues, render, validateObject, YAML } from './tools.mjs';

const MONITORING = ['--api-versions', 'monitoring.coreos.com/v1'];
const chartValues = YAML.parse(fs.readFileSync(path.join(chartDir, 'values.yaml'), 'utf8'));
const prod = YAML.parse(fs.readFileSync(prodValues, 'utf8'));

// The configurations every structural test runs against.
const configs = [
  { name: 'default', args: [], values: chartValues, fullname: 'dcasgd', namespace: 'ml' },
  {
    name: 'production',
    args: ['-f', prodValues, ...MONITORING],
    values: {
      ...chartValues, ...prod, ps: { ...chartValues.ps, ...prod.ps },
      security: {
        tls: { ...chartValues.security.tls, ...prod.security.tls },
        auth: { ...chartValues.security.auth, ...prod.security.auth },
        networkPolicy: { ...chartValues.security.networkPolicy, ...prod.security.networkPolicy },
      },
    },
    fullname: 'mnist',
    namespace: 'training',
  },
];

function find(objects, kind, name) {
  return objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
}

function one(objects, kind, name) {
  const found = find(objects, kind, name);
  assert.equal(found.length, 1, `expected exactly one ${kind} ${name ?? ''}, got ${found.length}`);
  return found[0];
}

// Pod-bearing objects and their pod templates (or the Pod itself).
function podSpecs(objects) {
  const out = [];
  for (const o of objects) {
    if (o.kind === 'Pod') out.push({ owner: o, meta: o.metadata, spec: o.spec });
    else if (['Deployment', 'StatefulSet', 'Job'].includes(o.kind)) {
      out.push({ owner: o, meta: o.spec.template.metadata, spec: o.spec.template.spec });
    }
  }
  return out;
}

function matches(selector, labels) {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
    if (labels?.[k] !== v) return false;
  }
  for (const expr of selector.matchExpressions ?? []) {
    const has = labels && Object.prototype.hasOwnProperty.call(labels, expr.key);
    if (expr.operator === 'In' && !(has && expr.values.includes(labels[expr.key]))) return false;
    if (expr.operator === 'NotIn' && has && expr.values.includes(labels[expr.key])) return false;
    if (expr.operator === 'Exists' && !has) return false;
    if (expr.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

function envValue(container, name) {
  return container.env?.find((e) => e.name === name);
}

function arg(container, flag) {
  const prefix = `--${flag}=`;
  const found = (container.args ?? []).filter((a) => a.startsWith(prefix));
  return found.length === 0 ? undefined : found[found.length - 1].slice(prefix.length);
}

// The Kubernetes versions the chart supports (Chart.yaml kubeVersion, up to
// the newest kubectl/helm the tests run): both value files render for each and
// every object passes the kubernetes-models schemas; older clusters are refused.
// Both files turn TLS, tokens and the NetworkPolicy on (the production one
// with mutual TLS).
describe('supported Kubernetes versions', () => {
  for (const kubeVersion of ['1.27.0', '1.30.0', '1.35.0']) {
    for (const cfg of configs) {
      test(`${cfg.name} values render and validate for Kubernetes ${kubeVersion}`, async () => {
        const objects = render([...cfg.args, '--kube-version', kubeVersion],
          { namespace: cfg.namespace });
        assert.ok(objects.length >= 8, `only ${objects.length} objects rendered`);
        for (const o of objects) await validateObject(o);
      });
    }
  }
  test('a cluster older than kubeVersion is refused', () => {
    const out = helm(['template', 'dcasgd', chartDir, '--kube-version', '1.26.0']);
    assert.notEqual(out.status, 0);
    assert.match(out.stderr, /kubeVersion/);
  });
});

describe('helm lint', () => {
  test('passes strict lint with default values', () => {
    const out = helm(['lint', '--strict', chartDir]);
    assert.equal(out.status, 0, out.stdout + out.stderr);
  });
  test('passes strict lint with the production values', () => {
    const out = helm(['lint', '--strict', chartDir, '-f', prodValues]);
    assert.equal(out.status, 0, out.stdout + out.stderr);
  });
});

for (const cfg of configs) {
  describe(`rendered with ${cfg.name} values`, () => {
    const objects = render(cfg.args, { namespace: cfg.namespace });
    const ps = cfg.values.ps;
    const stsName = `${cfg.fullname}-ps`;
    const headlessName = `${cfg.fullname}-ps-headless`;

    test('every object passes its kubernetes-models schema', async () => {
      assert.ok(objects.length >= 8, `only ${objects.length} objects rendered`);
      for (const o of objects) await validateObject(o);
    });

    test('every object is namespaced to the release and carries the recommended labels', () => {
      for (const o of objects) {
        const l = o.metadata.labels ?? {};
        assert.equal(l['app.kubernetes.io/name'], 'dcasgd', `${o.kind}/${o.metadata.name}`);
        assert.equal(l['app.kubernetes.io/instance'], 'dcasgd', `${o.kind}/${o.metadata.name}`);
        assert.ok(l['app.kubernetes.io/component'], `${o.kind}/${o.metadata.name} has no component`);
        assert.equal(l['app.kubernetes.io/managed-by'], 'Helm');
        assert.match(l['helm.sh/chart'], /^dcasgd-\d+\.\d+\.\d+/);
        assert.ok(l['app.kubernetes.io/version']);
        const expectedNs = o.kind === 'ConfigMap' && o.metadata.name.endsWith('-dashboard') &&
          cfg.values.dashboard?.namespace ? cfg.values.dashboard.namespace : cfg.namespace;
        assert.equal(o.metadata.namespace, expectedNs, `${o.kind}/${o.metadata.name}`);
      }
    });

    test('workload selectors match their pods and hold no version or chart label', () => {
      for (const kind of ['StatefulSet', 'Deployment', 'PodDisruptionBudget']) {
        for (const o of find(objects, kind)) {
          const sel = o.spec.selector.matchLabels;
          assert.deepEqual(Object.keys(sel).sort(), [
            'app.kubernetes.io/component', 'app.kubernetes.io/instance', 'app.kubernetes.io/name',
          ], `${kind}/${o.metadata.name}`);
          if (kind !== 'PodDisruptionBudget') {
            assert.ok(matches(o.spec.selector, o.spec.template.metadata.labels),
              `${kind}/${o.metadata.name} selector does not match its template`);
          }
        }
      }
      // No two workloads select each other's pods.
      const workloads = [...find(objects, 'StatefulSet'), ...find(objects, 'Deployment')];
      for (const a of workloads) {
        for (const b of workloads) {
          if (a === b) continue;
          assert.ok(!matches(a.spec.selector, b.spec.template.metadata.labels),
            `${a.metadata.name} selects pods of ${b.metadata.name}`);
        }
      }
    });

    test('shards: StatefulSet with a headless Service, stable DNS and shardCount replicas', () => {
      const sts = one(objects, 'StatefulSet', stsName);
      const svc = one(objects, 'Service', headlessName);
      assert.equal(sts.spec.replicas, ps.shardCount);
      assert.equal(sts.spec.serviceName, headlessName);
      assert.equal(svc.spec.clusterIP, 'None');
      assert.equal(svc.spec.publishNotReadyAddresses, true);
      assert.ok(matches({ matchLabels: svc.spec.selector }, sts.spec.template.metadata.labels));
      const ports = Object.fromEntries(svc.spec.ports.map((p) => [p.name, p]));
      assert.equal(ports.grpc.port, ps.grpcPort);
      assert.equal(ports.metrics.port, ps.metricsPort);
      const c = sts.spec.template.spec.containers[0];
      const cports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
      assert.deepEqual(cports, { grpc: ps.grpcPort, metrics: ps.metricsPort,
        health: cfg.values.security.tls.healthPort });
      assert.equal(arg(c, 'listen'), `0.0.0.0:${ps.grpcPort}`);
      assert.equal(arg(c, 'metrics_address'), `0.0.0.0:${ps.metricsPort}`);
      assert.equal(arg(c, 'shard_index'), 'auto');
    });

    test('shards: native gRPC probes on the plaintext health-only port (TLS is on)', () => {
      const c = one(objects, 'StatefulSet', stsName).spec.template.spec.containers[0];
      const healthPort = cfg.values.security.tls.healthPort;
      assert.equal(arg(c, 'health_listen'), `0.0.0.0:${healthPort}`);
      for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        assert.ok(c[probe], `${probe} missing`);
        assert.equal(c[probe].grpc?.port, healthPort, `${probe} is not a gRPC probe on the health port`);
        assert.equal(c[probe].httpGet, undefined);
        assert.equal(c[probe].exec, undefined);
      }
      // Readiness reports durability (checkpoints succeeding); the shard
      // keeps serving when it is not ready (publishNotReadyAddresses).
      assert.equal(c.readinessProbe.grpc.service, 'dcasgd.checkpoint');
      assert.equal(c.livenessProbe.grpc.service, undefined);
    });

    test('shards: preStop and a grace period long enough for the final checkpoint', () => {
      const spec = one(objects, 'StatefulSet', stsName).spec.template.spec;
      const preStop = spec.containers[0].lifecycle.preStop;
      const sleep = preStop.sleep ? preStop.sleep.seconds : Number(preStop.exec.command.at(-1));
      assert.equal(sleep, ps.preStopSleepSeconds);
      assert.equal(spec.terminationGracePeriodSeconds, ps.terminationGracePeriodSeconds);
      // preStop, then up to 10 s of graceful shutdown, then the checkpoint,
      // retried for the rest of the grace period minus 3 s of margin.
      assert.ok(spec.terminationGracePeriodSeconds > sleep + 10 + 5);
      assert.equal(Number(arg(spec.containers[0], 'final_checkpoint_timeout_seconds')),
        spec.terminationGracePeriodSeconds - sleep - 10 - 3);
    });

    test('shards: one PVC per shard mounted at the checkpoint directory', () => {
      const sts = one(objects, 'StatefulSet', stsName);
      const vct = sts.spec.volumeClaimTemplates;
      assert.equal(vct.length, 1);
      assert.equal(vct[0].metadata.name, 'checkpoints');
      assert.deepEqual(vct[0].spec.accessModes, ['ReadWriteOnce']);
      assert.equal(vct[0].spec.resources.requests.storage, ps.checkpoint.persistence.size);
      const sc = ps.checkpoint.persistence.storageClass;
      assert.equal(vct[0].spec.storageClassName, sc === '' ? undefined : sc);
      const c = sts.spec.template.spec.containers[0];
      const mount = c.volumeMounts.find((m) => m.name === 'checkpoints');
      assert.equal(mount.mountPath, arg(c, 'checkpoint_dir'));
      assert.equal(arg(c, 'checkpoint_interval_seconds'), String(ps.checkpoint.intervalSeconds));
      assert.equal(sts.spec.template.spec.volumes.find((v) => v.name === 'checkpoints'), undefined,
        'checkpoints must come from the claim template, not a pod volume');
    });

    test('shards: memory budget, worker limit and in-flight budget from the values', () => {
      const c = one(objects, 'StatefulSet', stsName).spec.template.spec.containers[0];
      assert.equal(arg(c, 'memory_budget_bytes'), String(ps.memoryBudgetBytes));
      assert.equal(arg(c, 'max_workers'), String(ps.maxWorkers));
      assert.equal(arg(c, 'max_inflight_bytes'), String(ps.maxInflightBytes));
      assert.equal(arg(c, 'backup_dtype'), ps.backupDtype);
    });

    test('shards: PodDisruptionBudget covers exactly the shard pods', () => {
      const pdb = one(objects, 'PodDisruptionBudget', stsName);
      assert.equal(pdb.spec.maxUnavailable, ps.pdb.maxUnavailable);
      const sts = one(objects, 'StatefulSet', stsName);
      assert.ok(matches(pdb.spec.selector, sts.spec.template.metadata.labels));
      for (const d of find(objects, 'Deployment')) {
        assert.ok(!matches(pdb.spec.selector, d.spec.template.metadata.labels), d.metadata.name);
      }
    });

    test('workers and evaluator find every shard through the headless Service', () => {
      const expected = `${stsName}-{i}.${headlessName}.${cfg.namespace}.svc.cluster.local:${ps.grpcPort}`;
      const worker = one(objects, 'Deployment', `${cfg.fullname}-worker`);
      const evaluator = one(objects, 'Deployment', `${cfg.fullname}-evaluator`);
      assert.equal(worker.spec.replicas, cfg.values.worker.replicas);
      assert.equal(evaluator.spec.replicas, 1);
      for (const [d, role] of [[worker, 'train'], [evaluator, 'eval']]) {
        const c = d.spec.template.spec.containers[0];
        assert.equal(arg(c, 'role'), role);
        assert.equal(arg(c, 'ps_address_template'), expected);
        assert.equal(arg(c, 'worker_name'), undefined, 'worker identity must default to the pod name');
        assert.equal(envValue(c, 'DCASGD_SHARD_COUNT').valueFrom.configMapKeyRef.key, 'shard_count');
        const port = c.ports.find((p) => p.name === 'metrics').containerPort;
        assert.equal(arg(c, 'metrics_address'), `0.0.0.0:${port}`);
      }
    });

    test('S3 credentials come from the existing Secret', () => {
      const s3 = cfg.values.data.s3;
      for (const d of find(objects, 'Deployment')) {
        const c = d.spec.template.spec.containers[0];
        const id = envValue(c, 'AWS_ACCESS_KEY_ID').valueFrom.secretKeyRef;
        const secret = envValue(c, 'AWS_SECRET_ACCESS_KEY').valueFrom.secretKeyRef;
        assert.deepEqual(id, { name: s3.existingSecret, key: s3.accessKeyIdKey });
        assert.deepEqual(secret, { name: s3.existingSecret, key: s3.secretAccessKeyKey });
        assert.equal(envValue(c, 'AWS_REGION').value, s3.region);
        assert.equal(envValue(c, 'AWS_ENDPOINT_URL_S3')?.value, s3.endpoint || undefined);
      }
    });

    test('training ConfigMap holds the configuration and every env reference resolves', () => {
      const cm = one(objects, 'ConfigMap', `${cfg.fullname}-config`);
      const t = cfg.values.training;
      assert.equal(cm.data.update_rule, t.updateRule);
      assert.equal(Number(cm.data.lr), t.lr);
      assert.equal(Number(cm.data.lambda0), t.lambda0);
      assert.equal(cm.data.model, t.model);
      assert.equal(Number(cm.data.epochs), t.epochs);
      assert.equal(Number(cm.data.batch_size), t.batchSize);
      assert.equal(Number(cm.data.shard_count), ps.shardCount);
      assert.equal(Number(cm.data.max_gradient_abs), t.maxGradientAbs);
      assert.equal(Number(cm.data.max_weight_abs), t.maxWeightAbs);
      const shard = one(objects, 'StatefulSet', stsName).spec.template.spec.containers[0];
      assert.equal(cm.data.staleness_aware, String(t.stalenessAware ?? false));
      // Helm merges a values file into the chart's defaults key by key.
      const gapAware = t.gapAware ?? chartValues.training.gapAware;
      assert.equal(cm.data.gap_aware, String(Boolean(gapAware) && t.sync !== 'ssgd'));
      for (const key of ['max_gradient_abs', 'max_weight_abs', 'staleness_aware', 'gap_aware']) {
        assert.equal(envValue(shard, `DCASGD_${key.toUpperCase()}`)?.valueFrom?.configMapKeyRef?.key,
          key, `the shards read ${key}`);
      }
      let refs = 0;
      for (const { spec } of podSpecs(objects)) {
        for (const c of spec.containers) {
          for (const e of c.env ?? []) {
            const ref = e.valueFrom?.configMapKeyRef;
            if (!ref) continue;
            refs++;
            assert.equal(ref.name, cm.metadata.name);
            assert.ok(ref.key in cm.data, `${c.name}: ${e.name} reads missing key ${ref.key}`);
            assert.equal(e.name, `DCASGD_${ref.key.toUpperCase()}`);
          }
        }
      }
      assert.ok(refs >= 15, `only ${refs} config references`);
    });

    test('pod templates carry a checksum of the training configuration', () => {
      for (const kind of ['StatefulSet', 'Deployment']) {
        for (const o of find(objects, kind)) {
          assert.match(o.spec.template.metadata.annotations['checksum/config'], /^[0-9a-f]{64}$/,
            `${kind}/${o.metadata.name}`);
        }
      }
    });

    test('every pod and container is hardened and has resource requests', () => {
      const specs = podSpecs(objects);
      assert.ok(specs.length >= 4);
      for (const { owner, spec } of specs) {
        const where = `${owner.kind}/${owner.metadata.name}`;
        assert.equal(spec.securityContext.runAsNonRoot, true, where);
        assert.equal(spec.securityContext.runAsUser, 10001, where);
        assert.equal(spec.securityContext.seccompProfile.type, 'RuntimeDefault', where);
        assert.equal(spec.automountServiceAccountToken, false, where);
        for (const c of spec.containers) {
          const sc = c.securityContext;
          assert.equal(sc.readOnlyRootFilesystem, true, `${where} ${c.name}`);
          assert.equal(sc.allowPrivilegeEscalation, false, `${where} ${c.name}`);
          assert.equal(sc.runAsNonRoot, true, `${where} ${c.name}`);
          assert.deepEqual(sc.capabilities.drop, ['ALL'], `${where} ${c.name}`);
          assert.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${where} ${c.name}`);
          assert.ok(c.resources?.limits?.memory, `${where} ${c.name}`);
        }
      }
    });

    test('dashboard ConfigMap carries the Grafana sidecar label and the dashboard JSON', () => {
      const cm = one(objects, 'ConfigMap', `${cfg.fullname}-dashboard`);
      assert.equal(cm.metadata.labels.grafana_dashboard, '1');
      const file = JSON.parse(fs.readFileSync(path.join(chartDir, 'dashboards', 'dcasgd.json'), 'utf8'));
      assert.deepEqual(JSON.parse(cm.data['dcasgd.json']), file);
    });

    test('security: generated certificates name every shard and chain to the CA', () => {
      const tls = one(objects, 'Secret', `${cfg.fullname}-tls`);
      const pem = (secret, key) => Buffer.from(secret.data[key], 'base64').toString();
      const ca = new crypto.X509Certificate(pem(tls, 'ca.crt'));
      const server = new crypto.X509Certificate(pem(tls, 'tls.crt'));
      assert.ok(server.verify(ca.publicKey), 'the server certificate is not signed by ca.crt');
      assert.ok(server.checkPrivateKey(crypto.createPrivateKey(pem(tls, 'tls.key'))));
      for (let i = 0; i < ps.shardCount; i++) {
        const host = `${stsName}-${i}.${headlessName}.${cfg.namespace}.svc.cluster.local`;
        assert.notEqual(server.checkHost(host), undefined, `the certificate does not name ${host}`);
      }
      // The CA's key lives in its own Secret, which no pod mounts.
      const caSecret = one(objects, 'Secret', `${cfg.fullname}-ca`);
      assert.equal(caSecret.metadata.annotations['helm.sh/resource-policy'], 'keep');
      for (const { spec } of podSpecs(objects)) {
        for (const v of spec.volumes ?? []) {
          assert.notEqual(v.secret?.secretName, caSecret.metadata.name);
        }
      }
      const client = find(objects, 'Secret', `${cfg.fullname}-client-tls`);
      assert.equal(client.length, cfg.values.security.tls.mutual ? 1 : 0);
      if (client.length === 1) {
        const cert = new crypto.X509Certificate(pem(client[0], 'tls.crt'));
        assert.ok(cert.verify(ca.publicKey), 'the client certificate is not signed by ca.crt');
      }
    });

    test('security: a token per role, and the shards\' token file lists them', () => {
      const auth = one(objects, 'Secret', `${cfg.fullname}-auth`);
      const lines = auth.stringData.tokens.trim().split('\n').map((l) => l.trim().split(/\s+/));
      assert.deepEqual(lines.map((l) => l[1]), ['worker', 'reader', 'admin']);
      for (const [token, role] of lines) {
        assert.equal(auth.stringData[role], token);
        assert.match(token, /^[A-Za-z0-9]{48}$/);
      }
      assert.equal(new Set(lines.map((l) => l[0])).size, 3, 'tokens must differ');
    });

    test('security: shards serve TLS and check tokens from the mounted Secrets', () => {
      const spec = one(objects, 'StatefulSet', stsName).spec.template.spec;
      const c = spec.containers[0];
      const tls = cfg.values.security.tls;
      assert.equal(arg(c, 'tls_cert'), '/etc/dcasgd/tls/tls.crt');
      assert.equal(arg(c, 'tls_key'), '/etc/dcasgd/tls/tls.key');
      assert.equal(arg(c, 'tls_ca'), tls.mutual ? '/etc/dcasgd/tls/ca.crt' : undefined);
      assert.equal(arg(c, 'tls_reload_seconds'), String(tls.reloadSeconds));
      assert.equal(arg(c, 'auth_tokens_file'), '/etc/dcasgd/auth/tokens');
      const mounts = Object.fromEntries(c.volumeMounts.map((m) => [m.name, m]));
      assert.equal(mounts.tls.mountPath, '/etc/dcasgd/tls');
      assert.equal(mounts.auth.mountPath, '/etc/dcasgd/auth');
      // Directory mounts: renewed certificates and rotated tokens arrive.
      assert.equal(mounts.tls.subPath, undefined);
      assert.equal(mounts.auth.subPath, undefined);
      const volumes = Object.fromEntries(spec.volumes.map((v) => [v.name, v]));
      assert.equal(volumes.tls.secret.secretName, `${cfg.fullname}-tls`);
      assert.deepEqual(volumes.auth.secret.items, [{ key: 'tokens', path: 'tokens' }]);
      assert.equal(volumes.auth.secret.secretName, `${cfg.fullname}-auth`);
    });

    test('security: workers send the worker token, the evaluator the reader token, over TLS', () => {
      const tls = cfg.values.security.tls;
      for (const [name, role] of [['worker', 'worker'], ['evaluator', 'reader']]) {
        const spec = one(objects, 'Deployment', `${cfg.fullname}-${name}`).spec.template.spec;
        const c = spec.containers[0];
        assert.equal(arg(c, 'tls_ca'), '/etc/dcasgd/tls/ca.crt', name);
        assert.equal(arg(c, 'tls_cert'), tls.mutual ? '/etc/dcasgd/tls/tls.crt' : undefined, name);
        assert.equal(arg(c, 'auth_token_file'), '/etc/dcasgd/auth/token', name);
        const volumes = Object.fromEntries(spec.volumes.map((v) => [v.name, v]));
        assert.deepEqual(volumes.auth.secret.items, [{ key: role, path: 'token' }], name);
        // Clients never see the shards' private key.
        const tlsVolume = volumes.tls.secret;
        assert.equal(tlsVolume.secretName,
          tls.mutual ? `${cfg.fullname}-client-tls` : `${cfg.fullname}-tls`, name);
        assert.deepEqual(tlsVolume.items.map((i) => i.key),
          tls.mutual ? ['ca.crt', 'tls.crt', 'tls.key'] : ['ca.crt'], name);
        for (const m of c.volumeMounts.filter((m) => ['tls', 'auth'].includes(m.name))) {
          assert.equal(m.readOnly, true, `${name} ${m.name}`);
        }
      }
      // The helm test pod checks health over TLS, without a token.
      const pod = one(objects, 'Pod');
      assert.equal(arg(pod.spec.containers[0], 'tls_ca'), '/etc/dcasgd/tls/ca.crt');
      assert.equal(arg(pod.spec.containers[0], 'auth_token_file'), undefined);
    });

    test('security: the NetworkPolicy admits only the job\'s pods and Prometheus', () => {
      const np = one(objects, 'NetworkPolicy', stsName);
      const sts = one(objects, 'StatefulSet', stsName);
      assert.ok(matches(np.spec.podSelector, sts.spec.template.metadata.labels));
      assert.deepEqual(np.spec.policyTypes, ['Ingress']);
      const byPort = (port) => np.spec.ingress.filter((r) => r.ports.some((p) => p.port === port));
      const grpcRules = byPort(ps.grpcPort);
      assert.equal(grpcRules.length, 1);
      const admitted = (labels) => grpcRules[0].from.some((f) => matches(f.podSelector, labels));
      for (const name of ['worker', 'evaluator']) {
        const d = one(objects, 'Deployment', `${cfg.fullname}-${name}`);
        assert.ok(admitted(d.spec.template.metadata.labels), `${name} cannot reach the shards`);
      }
      assert.ok(admitted(one(objects, 'Pod').metadata.labels), 'the helm test pod is refused');
      assert.ok(!admitted({ 'app.kubernetes.io/name': 'dcasgd', 'app.kubernetes.io/instance': 'other',
        'app.kubernetes.io/component': 'worker' }), 'another release\'s workers are admitted');
      for (const f of grpcRules[0].from) assert.equal(f.namespaceSelector, undefined);
      const metricsRules = byPort(ps.metricsPort);
      assert.equal(metricsRules.length, 1);
      assert.deepEqual(metricsRules[0].from, [{
        namespaceSelector: cfg.values.security.networkPolicy.prometheus.namespaceSelector,
        podSelector: cfg.values.security.networkPolicy.prometheus.podSelector,
      }]);
      const healthRules = byPort(cfg.values.security.tls.healthPort);
      assert.equal(healthRules.length, 1);
      assert.equal(healthRules[0].from, undefined, 'the kubelet probes the health port');
    });

    test('helm test hook health-checks every shard', () => {
      const pod = one(objects, 'Pod');
      assert.equal(pod.metadata.annotations['helm.sh/hook'], 'test');
      const c = pod.spec.containers[0];
      assert.equal(arg(c, 'role'), 'healthcheck');
      assert.equal(arg(c, 'shard_count'), String(ps.shardCount));
      assert.equal(arg(c, 'ps_address_template'),
        `${stsName}-{i}.${headlessName}.${cfg.namespace}.svc.cluster.local:${ps.grpcPort}`);
      assert.equal(pod.spec.restartPolicy, 'Never');
    });
  });
}

// Replicated shards (ps.replicas 2; docs/design.md, "Replicated shards"):
// 2N shard pods as pairs, a witness, the replication token, the traffic
// between them, and clients that know both members of every shard.
describe('replicated shards (ps.replicas 2)', () => {
  const ns = 'ml';
  const n = 3;
  const objects = render(['--set', 'ps.replicas=2', '--set', `ps.shardCount=${n}`,
    '--set', 'ps.replication.failoverTimeoutMs=5000'], { namespace: ns });
  const sts = one(objects, 'StatefulSet', 'dcasgd-ps');
  const c = sts.spec.template.spec.containers[0];
  const witness = one(objects, 'StatefulSet', 'dcasgd-witness');
  const wc = witness.spec.template.spec.containers[0];
  const template = `dcasgd-ps-{i}.dcasgd-ps-headless.${ns}.svc.cluster.local:${chartValues.ps.grpcPort}`;
  const witnessAddress = `dcasgd-witness.${ns}.svc.cluster.local:${chartValues.ps.grpcPort}`;

  test('every object passes its kubernetes-models schema, with the recommended labels', async () => {
    for (const kubeVersion of ['1.27.0', '1.35.0']) {
      const rendered = render(['--set', 'ps.replicas=2', '--kube-version', kubeVersion],
        { namespace: ns });
      for (const o of rendered) await validateObject(o);
    }
    for (const o of objects) {
      assert.equal(o.metadata.namespace, ns, `${o.kind}/${o.metadata.name}`);
      assert.ok(o.metadata.labels?.['app.kubernetes.io/component'], `${o.kind}/${o.metadata.name}`);
    }
  });

  test('one StatefulSet of shardCount x 2 members, each told its pair and the witness', () => {
    assert.equal(sts.spec.replicas, 2 * n);
    assert.equal(arg(c, 'replicas'), '2');
    assert.equal(arg(c, 'member'), 'auto');
    assert.equal(arg(c, 'shard_index'), 'auto');
    // '{i}' is the peer's pod ordinal: the pods' own stable DNS names.
    assert.equal(arg(c, 'peer_address'), template);
    assert.equal(arg(c, 'witness_address'), witnessAddress);
    assert.equal(arg(c, 'failover_timeout_ms'), '5000');
    // Outgoing calls to the peer and the witness: TLS with the job's CA and
    // the replication token, both from mounted files.
    assert.equal(arg(c, 'peer_tls_ca'), '/etc/dcasgd/tls/ca.crt');
    assert.equal(arg(c, 'peer_token_file'), '/etc/dcasgd/auth/replication');
    const volumes = Object.fromEntries(sts.spec.template.spec.volumes.map((v) => [v.name, v]));
    assert.deepEqual(volumes.auth.secret.items,
      [{ key: 'tokens', path: 'tokens' }, { key: 'replication', path: 'replication' }]);
    assert.ok(volumes.tls.secret.items.some((i) => i.key === 'ca.crt'));
    const mounts = Object.fromEntries(c.volumeMounts.map((m) => [m.name, m.mountPath]));
    assert.equal(mounts.auth, '/etc/dcasgd/auth');
    assert.equal(mounts.tls, '/etc/dcasgd/tls');
    // Each member keeps its own checkpoints: one claim per pod.
    assert.equal(sts.spec.volumeClaimTemplates.length, 1);
  });

  test('pods spread over nodes as a preference', () => {
    const spread = sts.spec.template.spec.topologySpreadConstraints;
    assert.equal(spread.length, 1);
    assert.equal(spread[0].topologyKey, 'kubernetes.io/hostname');
    assert.equal(spread[0].whenUnsatisfiable, 'ScheduleAnyway');
    assert.ok(matches(spread[0].labelSelector, sts.spec.template.metadata.labels));
  });

  test('the witness: one pod of dcasgd-witness with its own volume, behind a Service', () => {
    const ps = chartValues.ps;
    assert.equal(witness.spec.replicas, 1);
    assert.equal(wc.image, c.image, 'the witness ships in the ps image');
    assert.deepEqual(wc.command, ['/usr/local/bin/dcasgd-witness']);
    assert.equal(arg(wc, 'shard_count'), String(n));
    assert.equal(arg(wc, 'listen'), `0.0.0.0:${ps.grpcPort}`);
    const vct = witness.spec.volumeClaimTemplates;
    assert.equal(vct.length, 1);
    assert.equal(vct[0].spec.resources.requests.storage, chartValues.witness.persistence.size);
    const mount = wc.volumeMounts.find((m) => m.name === vct[0].metadata.name);
    assert.equal(mount.mountPath, arg(wc, 'state_dir'));
    // TLS with the shards' certificate, tokens from the shards' file.
    assert.equal(arg(wc, 'tls_cert'), '/etc/dcasgd/tls/tls.crt');
    assert.equal(arg(wc, 'auth_tokens_file'), '/etc/dcasgd/auth/tokens');
    const volumes = Object.fromEntries(witness.spec.template.spec.volumes.map((v) => [v.name, v]));
    assert.deepEqual(volumes.auth.secret.items, [{ key: 'tokens', path: 'tokens' }]);
    for (const probe of ['readinessProbe', 'livenessProbe']) {
      assert.equal(wc[probe].grpc.port, chartValues.security.tls.healthPort, probe);
    }
    const svc = one(objects, 'Service', 'dcasgd-witness');
    assert.ok(matches({ matchLabels: svc.spec.selector }, witness.spec.template.metadata.labels));
    assert.ok(!matches({ matchLabels: svc.spec.selector }, sts.spec.template.metadata.labels));
    assert.equal(svc.spec.ports.find((p) => p.name === 'grpc').port,
      Number(witnessAddress.split(':')[1]));
    assert.equal(`${svc.metadata.name}.${ns}.svc.cluster.local`, witnessAddress.split(':')[0]);
  });

  test('the certificate names every member and the witness', () => {
    const tls = one(objects, 'Secret', 'dcasgd-tls');
    const server = new crypto.X509Certificate(Buffer.from(tls.data['tls.crt'], 'base64'));
    for (let i = 0; i < 2 * n; i++) {
      const host = template.replace('{i}', i).split(':')[0];
      assert.notEqual(server.checkHost(host), undefined, host);
    }
    assert.notEqual(server.checkHost(witnessAddress.split(':')[0]), undefined);
    const certManager = render(['--set', 'ps.replicas=2', '--api-versions', 'cert-manager.io/v1'],
      { namespace: ns });
    const cert = one(certManager, 'Certificate', 'dcasgd-ps');
    assert.ok(cert.spec.dnsNames.includes(witnessAddress.split(':')[0]));
  });

  test('a replication token, in the shards\' file and mounted only in shard pods', () => {
    const auth = one(objects, 'Secret', 'dcasgd-auth');
    const lines = auth.stringData.tokens.trim().split('\n').map((l) => l.trim().split(/\s+/));
    assert.deepEqual(lines.map((l) => l[1]), ['worker', 'reader', 'admin', 'replication']);
    assert.equal(auth.stringData.replication, lines[3][0]);
    assert.match(auth.stringData.replication, /^[A-Za-z0-9]{48}$/);
    assert.equal(new Set(lines.map((l) => l[0])).size, 4, 'tokens must differ');
    for (const { owner, spec } of podSpecs(objects)) {
      const mountsIt = (spec.volumes ?? []).some((v) =>
        (v.secret?.items ?? []).some((i) => i.key === 'replication'));
      assert.equal(mountsIt, owner === sts, `${owner.kind}/${owner.metadata.name}`);
    }
  });

  test('NetworkPolicies admit shard-to-shard and shard-to-witness traffic, no other client of the witness', () => {
    const grpcPort = chartValues.ps.grpcPort;
    const admits = (np, labels, port) => np.spec.ingress.some((rule) =>
      (rule.ports ?? []).some((p) => p.port === port) &&
      (rule.from ?? []).some((f) => f.podSelector && !f.namespaceSelector && matches(f.podSelector, labels)));
    const psPolicy = one(objects, 'NetworkPolicy', 'dcasgd-ps');
    const witnessPolicy = one(objects, 'NetworkPolicy', 'dcasgd-witness');
    const shardLabels = sts.spec.template.metadata.labels;
    assert.ok(matches(psPolicy.spec.podSelector, shardLabels));
    assert.ok(matches(witnessPolicy.spec.podSelector, witness.spec.template.metadata.labels));
    assert.ok(admits(psPolicy, shardLabels, grpcPort), 'shards cannot reach each other');
    assert.ok(admits(witnessPolicy, shardLabels, grpcPort), 'shards cannot reach the witness');
    for (const d of find(objects, 'Deployment')) {
      assert.ok(admits(psPolicy, d.spec.template.metadata.labels, grpcPort), d.metadata.name);
      assert.ok(!admits(witnessPolicy, d.spec.template.metadata.labels, grpcPort), d.metadata.name);
    }
  });

  test('the PodDisruptionBudget covers all 2N shard pods, not the witness', () => {
    const pdb = one(objects, 'PodDisruptionBudget', 'dcasgd-ps');
    assert.equal(pdb.spec.maxUnavailable, chartValues.ps.pdb.maxUnavailable);
    assert.ok(matches(pdb.spec.selector, sts.spec.template.metadata.labels));
    assert.ok(!matches(pdb.spec.selector, witness.spec.template.metadata.labels));
  });

  test('workers and the evaluator know both members of every shard', () => {
    for (const name of ['dcasgd-worker', 'dcasgd-evaluator']) {
      const wcont = one(objects, 'Deployment', name).spec.template.spec.containers[0];
      assert.equal(envValue(wcont, 'DCASGD_PS_REPLICAS')?.value, '2', name);
      // Member b of shard i is the template at i + shardCount: the pods N..2N-1.
      assert.equal(arg(wcont, 'ps_address_template'), template, name);
    }
    // `helm test` checks every member.
    const probe = one(objects, 'Pod', 'dcasgd-test-shard-health').spec.containers[0];
    assert.equal(envValue(probe, 'DCASGD_PS_REPLICAS')?.value, '2');
  });

  test('with ps.replicas 1 (the default) nothing of it renders', () => {
    for (const args of [[], ['--set', 'ps.replicas=1']]) {
      const single = render(args, { namespace: ns });
      const s = one(single, 'StatefulSet', 'dcasgd-ps');
      const sc = s.spec.template.spec.containers[0];
      assert.equal(s.spec.replicas, chartValues.ps.shardCount);
      for (const flag of ['replicas', 'member', 'peer_address', 'witness_address',
        'failover_timeout_ms', 'peer_tls_ca', 'peer_token_file']) {
        assert.equal(arg(sc, flag), undefined, flag);
      }
      assert.equal(s.spec.template.spec.topologySpreadConstraints, undefined);
      assert.equal(envValue(one(single, 'Pod', 'dcasgd-test-shard-health').spec.containers[0],
        'DCASGD_PS_REPLICAS'), undefined);
      assert.equal(single.filter((o) => o.metadata.name.includes('witness')).length, 0);
      assert.equal(one(single, 'Secret', 'dcasgd-auth').stringData.replication, undefined);
      for (const d of find(single, 'Deployment')) {
        assert.equal(envValue(d.spec.template.spec.containers[0], 'DCASGD_PS_REPLICAS'), undefined);
      }
      const np = one(single, 'NetworkPolicy', 'dcasgd-ps');
      assert.ok(!np.spec.ingress.some((rule) => (rule.from ?? []).some((f) =>
        f.podSelector && matches(f.podSelector, s.spec.template.metadata.labels))),
      'shards admitted to shards without replicas');
    }
  });

  test('the schema refuses other replica counts and a failover timeout below the lease', () => {
    for (const bad of ['ps.replicas=3', 'ps.replicas=0', 'ps.replication.failoverTimeoutMs=2000',
      'witness.size=1Gi']) {
      const out = helm(['template', 'dcasgd', chartDir, '--set', bad]);
      assert.notEqual(out.status, 0, `accepted ${bad}`);
      assert.match(out.stderr, /schema/, `${bad}: ${out.stderr}`);
    }
  });

  test('with mutual TLS the members present the client certificate to their peer', async () => {
    const mutual = render(['--set', 'ps.replicas=2', '--set', 'security.tls.mutual=true'],
      { namespace: ns });
    for (const o of mutual) await validateObject(o);
    const m = one(mutual, 'StatefulSet', 'dcasgd-ps');
    const mc = m.spec.template.spec.containers[0];
    assert.equal(arg(mc, 'peer_tls_ca'), '/etc/dcasgd/tls/ca.crt');
    assert.equal(arg(mc, 'peer_tls_cert'), '/etc/dcasgd/peer-tls/tls.crt');
    assert.equal(arg(mc, 'peer_tls_key'), '/etc/dcasgd/peer-tls/tls.key');
    const volumes = Object.fromEntries(m.spec.template.spec.volumes.map((v) => [v.name, v]));
    assert.equal(volumes['peer-tls'].secret.secretName, 'dcasgd-client-tls');
    assert.deepEqual(volumes['peer-tls'].secret.items.map((i) => i.key), ['tls.crt', 'tls.key']);
    const mounts = Object.fromEntries(mc.volumeMounts.map((v) => [v.name, v.mountPath]));
    assert.equal(mounts['peer-tls'], '/etc/dcasgd/peer-tls');
    // The client Secret exists (the chart made it) and its certificate is
    // signed by the CA the members verify clients with.
    const client = one(mutual, 'Secret', 'dcasgd-client-tls');
    const server = one(mutual, 'Secret', 'dcasgd-tls');
    const ca = new crypto.X509Certificate(Buffer.from(server.data['ca.crt'], 'base64'));
    const cert = new crypto.X509Certificate(Buffer.from(client.data['tls.crt'], 'base64'));
    assert.ok(cert.verify(ca.publicKey));
    // Without mutual TLS, no client certificate in the shard pods.
    assert.equal(arg(c, 'peer_tls_cert'), undefined);
    assert.ok(!sts.spec.template.spec.volumes.some((v) => v.name === 'peer-tls'));
  });
});

describe('monitoring', () => {
  test('without the monitoring API: no monitors, scrape annotations on every metrics pod', () => {
    const objects = render([]);
    assert.equal(find(objects, 'ServiceMonitor').length, 0);
    assert.equal(find(objects, 'PodMonitor').length, 0);
    const workloads = [...find(objects, 'StatefulSet'), ...find(objects, 'Deployment')];
    assert.equal(workloads.length, 3);
    for (const w of workloads) {
      const a = w.spec.template.metadata.annotations;
      const c = w.spec.template.spec.containers[0];
      const metricsPort = c.ports.find((p) => p.name === 'metrics').containerPort;
      assert.equal(a['prometheus.io/scrape'], 'true', w.metadata.name);
      assert.equal(a['prometheus.io/port'], String(metricsPort), w.metadata.name);
      assert.equal(a['prometheus.io/path'], '/metrics');
    }
  });

  test('with monitoring.coreos.com/v1: ServiceMonitor and PodMonitor reach every metrics port', () => {
    const objects = render(MONITORING);
    const sm = one(objects, 'ServiceMonitor');
    const pm = one(objects, 'PodMonitor');
    const svc = one(objects, 'Service', 'dcasgd-ps-headless');
    assert.ok(matches(sm.spec.selector, svc.metadata.labels), 'ServiceMonitor misses the shard Service');
    assert.deepEqual(sm.spec.namespaceSelector.matchNames, ['ml']);
    assert.ok(svc.spec.ports.some((p) => p.name === sm.spec.endpoints[0].port));
    const selected = find(objects, 'Deployment').concat(find(objects, 'StatefulSet'))
      .filter((w) => matches(pm.spec.selector, w.spec.template.metadata.labels))
      .map((w) => w.metadata.name).sort();
    assert.deepEqual(selected, ['dcasgd-evaluator', 'dcasgd-worker']);
    for (const d of find(objects, 'Deployment')) {
      const c = d.spec.template.spec.containers[0];
      assert.ok(c.ports.some((p) => p.name === pm.spec.podMetricsEndpoints[0].port));
      assert.equal(d.spec.template.metadata.annotations['prometheus.io/scrape'], undefined);
    }
    assert.equal(
      one(objects, 'StatefulSet').spec.template.metadata.annotations['prometheus.io/scrape'], undefined);
  });

  test('monitor labels from values reach the monitors', () => {
    const objects = render(['-f', prodValues, ...MONITORING]);
    for (const kind of ['ServiceMonitor', 'PodMonitor']) {
      assert.equal(one(objects, kind).metadata.labels.release, 'kube-prometheus-stack');
      assert.equal(one(objects, kind).metadata.namespace, 'ml');
    }
  });
});

describe('values', () => {
  test('a training value change rolls every pod; a replica change does not', () => {
    const checksums = (args) => render(args)
      .filter((o) => ['StatefulSet', 'Deployment'].includes(o.kind))
      .map((o) => o.spec.template.metadata.annotations['checksum/config']);
    const base = checksums([]);
    assert.equal(new Set(base).size, 1);
    const lr = checksums(['--set', 'training.lr=0.01']);
    assert.equal(new Set(lr).size, 1);
    assert.notEqual(lr[0], base[0]);
    assert.deepEqual(checksums(['--set', 'worker.replicas=7']), base);
  });

  test('selectors stay the same across chart versions, app versions and image tags', () => {
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'dcasgd-chart-'));
    try {
      fs.cpSync(chartDir, copy, { recursive: true });
      const chartYaml = path.join(copy, 'Chart.yaml');
      fs.writeFileSync(chartYaml, fs.readFileSync(chartYaml, 'utf8')
        .replace(/^version: .*$/m, 'version: 9.8.7').replace(/^appVersion: .*$/m, 'appVersion: "5.0.0"'));
      const selectors = (objects) => Object.fromEntries(objects
        .filter((o) => o.spec?.selector)
        .map((o) => [`${o.kind}/${o.metadata.name}`, o.spec.selector]));
      const before = render([]);
      const after = render(['--set', 'image.ps.tag=x', '--set', 'image.worker.tag=y'], { chart: copy });
      assert.equal(one(after, 'StatefulSet').metadata.labels['helm.sh/chart'], 'dcasgd-9.8.7');
      assert.deepEqual(selectors(after), selectors(before));
      assert.ok(Object.keys(selectors(before)).length >= 5);
    } finally {
      fs.rmSync(copy, { recursive: true, force: true });
    }
  });

  test('schema rejects a bad update rule, a string shard count, unknown keys and bad models', () => {
    const bad = [
      [['--set', 'training.updateRule=foo'], /updateRule/],
      [['--set-string', 'ps.shardCount=two'], /shardCount/],
      [['--set', 'ps.shardCount=0'], /shardCount/],
      [['--set', 'training.sync=sometimes'], /sync/],
      [['--set', 'training.model=resnet'], /model/],
      [['--set', 'training.model=cnn:8\\,16'], /model/],
      [['--set', 'training.model=torchscript:'], /model/],
      [['--set', 'training.model=torchscript:relative.pt'], /model/],
      [['--set', 'training.lr=-1'], /lr/],
      [['--set', 'worker.replica=3'], /replica/],
      [['--set', 'data.url=ftp://x/y'], /url/],
    ];
    for (const [args, where] of bad) {
      const out = helm(['template', 'dcasgd', chartDir, ...args]);
      assert.notEqual(out.status, 0, `accepted ${args.join(' ')}`);
      assert.match(out.stderr, /schema/, `${args.join(' ')}: ${out.stderr}`);
      assert.match(out.stderr, where);
    }
    // helm's --set splits on commas unless they are escaped.
    for (const model of ['mlp:64', 'mlp:256\\,128', 'cnn', 'cnn:16\\,32\\,128',
      'torchscript:/models/cnn.pt']) {
      const good = helm(['template', 'dcasgd', chartDir, '--set', 'training.updateRule=asgd',
        '--set', 'ps.shardCount=3', '--set', `training.model=${model}`]);
      assert.equal(good.status, 0, `${model}: ${good.stderr}`);
    }
  });

  test('schema rejects memory limits that make no sense', () => {
    for (const bad of ['ps.maxWorkers=0', 'ps.memoryBudgetBytes=-1', 'ps.maxInflightBytes=-1',
      'training.maxGradientAbs=0', 'training.maxWeightAbs=-1', 'ps.maxWorkers=1000000']) {
      const out = helm(['template', 'dcasgd', chartDir, '--set', bad]);
      assert.notEqual(out.status, 0, bad);
      assert.match(out.stderr, /schema/, `${bad}: ${out.stderr}`);
    }
  });

  test('worker.wireDtype reaches the workers; float16 needs maxWeightAbs within its range', () => {
    const c = (args) =>
      one(render(args), 'Deployment', 'dcasgd-worker').spec.template.spec.containers[0];
    assert.equal(arg(c([]), 'wire_dtype'), 'float32');
    assert.equal(arg(c(['--set', 'worker.wireDtype=bfloat16']), 'wire_dtype'), 'bfloat16');
    assert.equal(arg(c(['--set', 'worker.wireDtype=float16', '--set', 'training.maxWeightAbs=65504']),
      'wire_dtype'), 'float16');
    const evaluator = one(render(['--set', 'worker.wireDtype=bfloat16']), 'Deployment',
      'dcasgd-evaluator').spec.template.spec.containers[0];
    assert.equal(arg(evaluator, 'wire_dtype'), undefined, 'the evaluator reads float32 weights');
    const wide = helm(['template', 'dcasgd', chartDir, '--set', 'worker.wireDtype=float16']);
    assert.notEqual(wide.status, 0, 'float16 with maxWeightAbs 1e6 must fail');
    assert.match(wide.stderr, /worker.wireDtype=float16 holds \|w\| <= 65504 only/);
    const bad = helm(['template', 'dcasgd', chartDir, '--set', 'worker.wireDtype=int8']);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /schema/);
  });

  test('worker.pipelineDepth reaches the workers, auto by default, and only 0-4', () => {
    const c = (args) =>
      one(render(args), 'Deployment', 'dcasgd-worker').spec.template.spec.containers[0];
    assert.equal(arg(c([]), 'pipeline_depth'), 'auto');
    assert.equal(arg(c(['--set-string', 'worker.pipelineDepth=0']), 'pipeline_depth'), '0');
    assert.equal(arg(c(['--set-string', 'worker.pipelineDepth=2']), 'pipeline_depth'), '2');
    const evaluator = one(render([]), 'Deployment', 'dcasgd-evaluator').spec.template.spec
      .containers[0];
    assert.equal(arg(evaluator, 'pipeline_depth'), undefined, 'the evaluator does not push');
    for (const bad of ['5', 'one']) {
      const out = helm(['template', 'dcasgd', chartDir, '--set-string', `worker.pipelineDepth=${bad}`]);
      assert.notEqual(out.status, 0, bad);
      assert.match(out.stderr, /schema/, `${bad}: ${out.stderr}`);
    }
  });

  test('worker.dataCacheMb reaches the workers, 256 by default, and never below 0', () => {
    const c = (args) =>
      one(render(args), 'Deployment', 'dcasgd-worker').spec.template.spec.containers[0];
    assert.equal(arg(c([]), 'data_cache_mb'), '256');
    assert.equal(arg(c(['--set', 'worker.dataCacheMb=0']), 'data_cache_mb'), '0');
    assert.equal(arg(c(['--set', 'worker.dataCacheMb=4096']), 'data_cache_mb'), '4096');
    const evaluator = one(render([]), 'Deployment', 'dcasgd-evaluator').spec.template.spec
      .containers[0];
    assert.equal(arg(evaluator, 'data_cache_mb'), undefined, 'the evaluator trains on nothing');
    for (const bad of ['-1', '1.5', 'lots']) {
      const out = helm(['template', 'dcasgd', chartDir, '--set', `worker.dataCacheMb=${bad}`]);
      assert.notEqual(out.status, 0, bad);
      assert.match(out.stderr, /schema/, `${bad}: ${out.stderr}`);
    }
  });

  test('ps.backupDtype reaches the shards; float16 needs maxWeightAbs within its range', () => {
    const c = (args) => one(render(args), 'StatefulSet', 'dcasgd-ps').spec.template.spec.containers[0];
    assert.equal(arg(c([]), 'backup_dtype'), 'float32');
    assert.equal(arg(c(['--set', 'ps.backupDtype=bfloat16']), 'backup_dtype'), 'bfloat16');
    assert.equal(arg(c(['--set', 'ps.backupDtype=float16', '--set', 'training.maxWeightAbs=65504']),
      'backup_dtype'), 'float16');
    const wide = helm(['template', 'dcasgd', chartDir, '--set', 'ps.backupDtype=float16']);
    assert.notEqual(wide.status, 0, 'float16 with maxWeightAbs 1e6 must fail');
    assert.match(wide.stderr, /ps.backupDtype=float16 holds \|w\| <= 65504 only/);
    const bad = helm(['template', 'dcasgd', chartDir, '--set', 'ps.backupDtype=int8']);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /schema/);
    assert.match(bad.stderr, /backupDtype/);
  });

  test('a grace period too short for the final checkpoint fails the render', () => {
    const out = helm(['template', 'dcasgd', chartDir, '--set', 'ps.terminationGracePeriodSeconds=12']);
    assert.notEqual(out.status, 0);
    assert.match(out.stderr, /terminationGracePeriodSeconds/);
  });

  test('gapAware is on by default, can be turned off, and is off under ssgd', () => {
    assert.equal(one(render([]), 'ConfigMap', 'dcasgd-config').data.gap_aware, 'true');
    const off = one(render(['--set', 'training.gapAware=false']), 'ConfigMap', 'dcasgd-config');
    assert.equal(off.data.gap_aware, 'false');
    const ssgd = one(render(['--set', 'training.sync=ssgd']), 'ConfigMap', 'dcasgd-config');
    assert.equal(ssgd.data.gap_aware, 'false');
    const out = helm(['template', 'dcasgd', chartDir, '--set-string', 'training.gapAware=yes']);
    assert.notEqual(out.status, 0);
    assert.match(out.stderr, /gapAware/);
  });

  test('stalenessAware reaches the shards as true/false, and only a boolean is accepted', () => {
    const cm = one(render(['--set', 'training.stalenessAware=true']), 'ConfigMap', 'dcasgd-config');
    assert.equal(cm.data.staleness_aware, 'true');
    const out = helm(['template', 'dcasgd', chartDir, '--set-string', 'training.stalenessAware=yes']);
    assert.notEqual(out.status, 0);
    assert.match(out.stderr, /stalenessAware/);
  });

  test('--set passes floats as strings; the schema and ConfigMap take them as numbers', () => {
    const cm = one(render(['--set', 'training.lr=0.01', '--set', 'training.lambda0=1e-2']),
      'ConfigMap', 'dcasgd-config');
    assert.equal(cm.data.lr, '0.01');
    assert.equal(Number(cm.data.lambda0), 0.01);
    const out = helm(['template', 'dcasgd', chartDir, '--set', 'training.lr=fast']);
    assert.notEqual(out.status, 0);
    assert.match(out.stderr, /lr/);
  });

  test('large integers from a values file reach the pods as integers, not 1e+07', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dcasgd-values-'));
    try {
      const file = path.join(dir, 'big.yaml');
      fs.writeFileSync(file, 'training: {epochs: 10000000, batchSize: 2000000}\n' +
        'worker: {replicas: 1000000}\ndataPrep: {enabled: true, shards: 3000000}\n');
      const objects = render(['-f', file]);
      const cm = one(objects, 'ConfigMap', 'dcasgd-config');
      assert.equal(cm.data.epochs, '10000000');
      assert.equal(cm.data.batch_size, '2000000');
      assert.equal(one(objects, 'Deployment', 'dcasgd-worker').spec.replicas, 1000000);
      assert.equal(arg(one(objects, 'Job').spec.template.spec.containers[0], 'shards'), '3000000');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('persistence off: checkpoints on an emptyDir and no claim templates', () => {
    const sts = one(render(['--set', 'ps.checkpoint.persistence.enabled=false']), 'StatefulSet');
    assert.equal(sts.spec.volumeClaimTemplates, undefined);
    assert.deepEqual(sts.spec.template.spec.volumes.find((v) => v.name === 'checkpoints').emptyDir, {});
  });

  test('data from a directory in the image injects no S3 environment', () => {
    const objects = render(['--set', 'data.url=/usr/share/datasets/fashion-mnist']);
    for (const d of find(objects, 'Deployment')) {
      const names = d.spec.template.spec.containers[0].env.map((e) => e.name);
      assert.ok(!names.some((n) => n.startsWith('AWS_')), names.join(','));
    }
    assert.equal(one(objects, 'ConfigMap', 'dcasgd-config').data.data, '/usr/share/datasets/fashion-mnist');
  });

  test('data-prep Job: off by default, a pre-install hook uploading to data.url when on', () => {
    assert.equal(find(render([]), 'Job').length, 0);
    const job = one(render(['-f', prodValues]), 'Job');
    assert.match(job.metadata.annotations['helm.sh/hook'], /pre-install/);
    const c = job.spec.template.spec.containers[0];
    assert.deepEqual(c.command, ['dcasgd-prepare-data']);
    assert.equal(arg(c, 'dest'), prod.data.url);
    assert.equal(arg(c, 'shards'), String(prod.dataPrep.shards));
    assert.equal(arg(c, 'source_dir'), '/usr/share/datasets/fashion-mnist');
    assert.equal(envValue(c, 'AWS_ACCESS_KEY_ID').valueFrom.secretKeyRef.name, prod.data.s3.existingSecret);
    const plain = one(render(['-f', prodValues, '--set', 'dataPrep.hook=false']), 'Job');
    assert.equal(plain.metadata.annotations, undefined);
  });

  test('monitors can be switched off even when the API exists', () => {
    const objects = render([...MONITORING, '--set', 'metrics.serviceMonitor.enabled=false',
      '--set', 'metrics.podMonitor.enabled=false']);
    assert.equal(find(objects, 'ServiceMonitor').length + find(objects, 'PodMonitor').length, 0);
  });

  test('NOTES explain how to reach the metrics and how to scale', () => {
    const out = helm(['install', 'dcasgd', chartDir, '--dry-run=client', '--namespace', 'ml']);
    assert.equal(out.status, 0, out.stderr);
    const notes = out.stdout.slice(out.stdout.indexOf('NOTES:'));
    assert.match(notes, /kubectl -n ml scale deployment dcasgd-worker --replicas=/);
    assert.match(notes, /port-forward pod\/dcasgd-ps-0 9100/);
    assert.match(notes, /dcasgd-ps-\{i\}\.dcasgd-ps-headless\.ml\.svc\.cluster\.local:7000/);
    assert.match(notes, /helm test dcasgd/);
  });
});

describe('security values', () => {
  test('each part can be turned off', async () => {
    const objects = render(['--set', 'security.tls.enabled=false', '--set',
      'security.auth.enabled=false', '--set', 'security.networkPolicy.enabled=false']);
    for (const o of objects) await validateObject(o);
    assert.equal(find(objects, 'Secret').length, 0);
    assert.equal(find(objects, 'NetworkPolicy').length, 0);
    const c = one(objects, 'StatefulSet', 'dcasgd-ps').spec.template.spec.containers[0];
    for (const flag of ['tls_cert', 'tls_key', 'tls_ca', 'health_listen', 'auth_tokens_file']) {
      assert.equal(arg(c, flag), undefined, flag);
    }
    assert.equal(c.readinessProbe.grpc.port, chartValues.ps.grpcPort);
    for (const d of find(objects, 'Deployment')) {
      const w = d.spec.template.spec.containers[0];
      assert.equal(arg(w, 'tls_ca'), undefined);
      assert.equal(arg(w, 'auth_token_file'), undefined);
    }
  });

  test('existing Secrets are used as they are', () => {
    const objects = render(['--set', 'security.tls.existingSecret=my-tls', '--set',
      'security.auth.existingSecret=my-tokens']);
    assert.equal(find(objects, 'Secret').length, 0);
    const volumes = one(objects, 'StatefulSet', 'dcasgd-ps').spec.template.spec.volumes;
    assert.equal(volumes.find((v) => v.name === 'tls').secret.secretName, 'my-tls');
    assert.equal(volumes.find((v) => v.name === 'auth').secret.secretName, 'my-tokens');
  });

  test('cert-manager makes the certificates when the cluster serves its API', async () => {
    for (const [args, mutual] of [[[], false], [['-f', prodValues], true]]) {
      const objects = render([...args, '--api-versions', 'cert-manager.io/v1']);
      for (const o of objects) await validateObject(o);
      const fullname = mutual ? 'mnist' : 'dcasgd';
      // No generated certificates; the tokens Secret stays.
      assert.deepEqual(find(objects, 'Secret').map((s) => s.metadata.name), [`${fullname}-auth`]);
      const server = one(objects, 'Certificate', `${fullname}-ps`);
      assert.equal(server.spec.secretName, `${fullname}-tls`);
      assert.ok(server.spec.dnsNames.includes(`*.${fullname}-ps-headless.ml.svc.cluster.local`));
      assert.ok(server.spec.usages.includes('server auth'));
      // The chart's own CA: a self-signed root and a CA Issuer.
      assert.equal(one(objects, 'Issuer', `${fullname}-selfsigned`).spec.selfSigned !== undefined,
        true);
      assert.equal(one(objects, 'Certificate', `${fullname}-ca`).spec.isCA, true);
      assert.equal(server.spec.issuerRef.name, `${fullname}-ca`);
      const client = find(objects, 'Certificate', `${fullname}-client`);
      assert.equal(client.length, mutual ? 1 : 0);
      if (mutual) assert.equal(client[0].spec.secretName, `${fullname}-client-tls`);
      const volumes = one(objects, 'StatefulSet', `${fullname}-ps`).spec.template.spec.volumes;
      assert.equal(volumes.find((v) => v.name === 'tls').secret.secretName, `${fullname}-tls`);
    }
  });

  test('cert-manager with an issuer of the cluster', () => {
    const objects = render(['--api-versions', 'cert-manager.io/v1', '--set',
      'security.tls.certManager.issuerRef.name=corp-ca', '--set',
      'security.tls.certManager.issuerRef.kind=ClusterIssuer']);
    assert.equal(find(objects, 'Issuer').length, 0);
    assert.deepEqual(one(objects, 'Certificate', 'dcasgd-ps').spec.issuerRef,
      { name: 'corp-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' });
  });

  test('a wrong security value is refused by the schema', () => {
    const out = helm(['template', 'dcasgd', chartDir, '--set', 'security.tls.healthPort=0']);
    assert.notEqual(out.status, 0);
    const unknown = helm(['template', 'dcasgd', chartDir, '--set', 'security.tls.bogus=1']);
    assert.notEqual(unknown.status, 0);
  });
});
