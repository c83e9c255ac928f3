// Validates Kubernetes objects (a YAML stream: `kubectl kustomize`'s output) against the API
// schemas of kubernetes-models (pinned in package-lock.json): types, required fields, enums.
// With --cairn it also checks what deploy/k8s promises: the master's Service is where the
// workers meet, the job's token comes from a Secret, /dev/shm is a memory emptyDir large enough
// for flash checkpoints, liveness probes hit the agents' /healthz, ports agree with the flags.
// Prints one line per object; exits 1 with every problem found.
// Usage: node validate.mjs FILE [--cairn NAMESPACE | --command KIND/NAME]
import {readFileSync} from 'node:fs';
import {parseAllDocuments} from 'yaml';

const [file, mode, namespace] = process.argv.slice(2);
const problems = [];
const objects = [];
for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
  if (doc.errors.length) problems.push('YAML: ' + doc.errors.map((e) => e.message).join('; '));
  const o = doc.toJS();
  if (o) objects.push(o);
}
if (objects.length === 0) problems.push('no objects in ' + file);

for (const o of objects) {
  const name = `${o.kind}/${o.metadata?.name}`;
  if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') {
    problems.push(`${name}: no apiVersion or kind`);
    continue;
  }
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : [null, o.apiVersion];
  const module = `kubernetes-models/${group ? group + '/' : ''}${version}/${o.kind}`;
  let Model;
  try {
    Model = (await import(module))[o.kind];
  } catch (e) {
    problems.push(`${name}: no schema for ${o.apiVersion} ${o.kind}`);
    continue;
  }
  try {
    new Model(o).validate();
    if (mode !== '--command') console.log(`valid: ${o.apiVersion} ${name}`);
  } catch (e) {
    problems.push(`${name}: ${e.message}`);
  }
}

// What cairn's manifests promise.
function cairnChecks() {
  const find = (kind, n) => objects.find((o) => o.kind === kind && o.metadata?.name === n);
  const need = (cond, what) => { if (!cond) problems.push(what); };
  const arg = (c, flag) => (c.args || []).find((a) => a.startsWith(flag + '='))?.slice(flag.length + 1);
  const portOf = (c, name) => (c.ports || []).find((p) => p.name === name)?.containerPort;
  const tokenFromSecret = (c) => (c.env || []).some((e) => e.name === 'CAIRN_JOB_TOKEN' &&
      e.valueFrom?.secretKeyRef?.name && e.valueFrom.secretKeyRef.key);
  // The files a flag names come from a mounted Secret.
  const fromSecret = (c, podSpec, flag) => {
    const file = arg(c, flag);
    const mount = file && (c.volumeMounts || []).find((v) => file.startsWith(v.mountPath + '/'));
    return Boolean(mount && (podSpec.volumes || []).find((v) => v.name === mount.name)?.secret?.secretName);
  };
  for (const o of objects)
    need(!namespace || o.metadata?.namespace === namespace,
         `${o.kind}/${o.metadata?.name}: not in namespace ${namespace}`);

  const master = find('Deployment', 'cairn-master');
  const service = find('Service', 'cairn-master');
  const job = find('Job', 'cairn-workers');
  const pvc = find('PersistentVolumeClaim', 'cairn-shared');
  need(master && service && job && pvc,
       'expected Deployment, Service cairn-master, Job cairn-workers, PVC cairn-shared');
  if (!(master && service && job && pvc)) return;
  need(pvc.spec.accessModes.includes('ReadWriteMany'), 'cairn-shared must be ReadWriteMany');

  const m = master.spec.template.spec.containers[0];
  need(master.spec.replicas === 1 && master.spec.strategy?.type === 'Recreate',
       'the master: one replica, Recreate (never two on one journal)');
  need(tokenFromSecret(m), 'the master: CAIRN_JOB_TOKEN from a Secret');
  need(String(portOf(m, 'rdzv')) === arg(m, '--port'), 'the master: --port is its rdzv port');
  need(String(portOf(m, 'dashboard')) === arg(m, '--dashboard-port'),
       'the master: --dashboard-port is its dashboard port');
  need(arg(m, '--journal')?.startsWith('/shared/'), 'the master: its journal on the shared volume');
  need(m.livenessProbe?.httpGet?.path === '/healthz' && m.livenessProbe.httpGet.scheme === 'HTTPS',
       'the master: liveness on /healthz over HTTPS');
  need(['--dashboard-tls-cert', '--dashboard-tls-key'].every((f) => fromSecret(m, master.spec.template.spec, f)),
       'the master: its dashboard over HTTPS (--dashboard-tls-cert, --dashboard-tls-key) from a Secret');
  const mSpec = master.spec.template.spec;
  need(['--tls-cert', '--tls-key', '--tls-client-ca'].every((f) => fromSecret(m, mSpec, f)) &&
       !(m.args || []).includes('--insecure'),
       'the master: mutual TLS (--tls-cert, --tls-key, --tls-client-ca) from a Secret');
  const sPorts = Object.fromEntries(service.spec.ports.map((p) => [p.name, p.port]));
  need(sPorts.rdzv === portOf(m, 'rdzv') && sPorts.dashboard === portOf(m, 'dashboard'),
       'the Service exposes the master\'s rdzv and dashboard ports');
  const sel = service.spec.selector || {};
  const labels = master.spec.template.metadata.labels || {};
  need(Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => labels[k] === v),
       'the Service selects the master\'s pods');

  const spec = job.spec.template.spec;
  const w = spec.containers[0];
  need(job.spec.completionMode === 'Indexed', 'the workers: an Indexed Job');
  need(arg(w, '--rdzv-backend') === 'cairn', 'the workers: --rdzv-backend=cairn');
  need(arg(w, '--rdzv-endpoint') === `cairn-master:${sPorts.rdzv}`,
       'the workers meet at the master\'s Service and port');
  const maxNodes = Number((arg(w, '--nnodes') || '').split(':').pop());
  need(maxNodes === job.spec.parallelism && arg(m, '--nnodes') === arg(w, '--nnodes'),
       'the master\'s and the workers\' --nnodes agree with the Job\'s parallelism');
  need(tokenFromSecret(w), 'the workers: CAIRN_JOB_TOKEN from a Secret');
  need(['--tls-ca', '--tls-cert', '--tls-key'].every((f) => fromSecret(w, spec, f)) &&
       !(w.args || []).includes('--insecure'),
       'the workers: TLS to the master (--tls-ca, --tls-cert, --tls-key) from a Secret');
  need(String(portOf(w, 'dashboard')) === arg(w, '--dashboard-port') &&
       arg(w, '--dashboard-bind') === '0.0.0.0', 'the workers: the dashboard on its port, all addresses');
  need(w.livenessProbe?.httpGet?.path === '/healthz' && w.livenessProbe.httpGet.port === 'dashboard' &&
       w.livenessProbe.httpGet.scheme === 'HTTPS',
       'the workers: liveness on the agent\'s /healthz over HTTPS');
  need(['--dashboard-tls-cert', '--dashboard-tls-key'].every((f) => fromSecret(w, spec, f)),
       'the workers: the dashboard over HTTPS (--dashboard-tls-cert, --dashboard-tls-key) from a Secret');
  const shmMount = (w.volumeMounts || []).find((v) => v.mountPath === '/dev/shm');
  const shm = shmMount && (spec.volumes || []).find((v) => v.name === shmMount.name);
  const gib = (q) => { const m = /^(\d+)(Gi|Mi)$/.exec(q || ''); return m ? Number(m[1]) / (m[2] === 'Mi' ? 1024 : 1) : 0; };
  need(shm?.emptyDir?.medium === 'Memory' && gib(shm.emptyDir.sizeLimit) >= 1,
       '/dev/shm: an emptyDir in memory of at least 1Gi (the default 64 MB breaks flash checkpoints)');
  need((w.volumeMounts || []).some((v) => v.mountPath === '/shared') &&
       (w.args || []).some((a) => a.startsWith('ckpt.dir=/shared/')),
       'the workers: checkpoints on the shared volume');
  need((w.args || []).includes('--resume-or-start'), 'the workers resume from the newest checkpoint');
}
if (mode === '--cairn') cairnChecks();
// --command KIND/NAME: that object's first container's command and args, one per line.
if (mode === '--command') {
  const o = objects.find((x) => `${x.kind}/${x.metadata?.name}` === namespace);
  if (!o) problems.push('no ' + namespace);
  else {
    const c = o.spec.template.spec.containers[0];
    for (const w of [...(c.command || []), ...(c.args || [])]) console.log(w);
    process.exit(0);
  }
}

if (problems.length) {
  for (const p of problems) console.error('PROBLEM: ' + p);
  process.exit(1);
}
console.log(`${objects.length} objects valid`);
