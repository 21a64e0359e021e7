// Validates the Kubernetes manifests of deploy/kubernetes offline (no cluster): every
// YAML document against its kubernetes-models schema (by apiVersion and kind), then
// what umpath's deployment needs of them, cross-checked against umpathd's flags.
//
//   node deploy/kubernetes/validate.mjs [--dir=DIR] [--repo=ROOT] [--modules=NODE_MODULES]
//                                       [--image=REF]
//   node deploy/kubernetes/validate.mjs --events=FILE [--modules=NODE_MODULES]
//
// DIR (default: this file's folder) holds the manifests (*.yaml, *.yml, recursively);
// ROOT (default: two folders up) is the repo whose agent/ and server/ sources define
// umpathd's flags and whose deploy/config/umpathd.flags is the sample configuration;
// NODE_MODULES (default: ROOT/build/tools/node_modules) has kubernetes-models,
// @kubernetes-models/prometheus-operator and js-yaml. REF (default: what
// ROOT/deploy/image/build.sh --print-ref says) is the image umpathd's and the sidecar's
// containers must name. A PrometheusRule's groups must equal those of
// ROOT/deploy/prometheus/umpath-rules.yaml, where the rules are written and tested. DIR/kustomization.yaml is rendered here, without kustomize (not
// in Debian 12): its namespace and images applied to its resources, and the result
// checked as the manifests are. Prints one line per check and "N passed, M failed";
// exits 1 when a check failed.
//
// The schemas are kubernetes-models' (types, required fields, enums); they accept fields
// they do not know, so a misspelt field is caught only where a check below asks for it.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const opt = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const m = /^--([a-z]+)=(.*)$/.exec(a);
    if (!m) {
      console.error(`validate: unknown argument ${a}`);
      process.exit(2);
    }
    return [m[1], m[2]];
  }),
);
const dir = path.resolve(opt.dir ?? here);
const repo = path.resolve(opt.repo ?? path.join(here, "..", ".."));
const modules = path.resolve(opt.modules ?? path.join(repo, "build", "tools", "node_modules"));
// One name for the image: the one deploy/image/build.sh gives what it builds.
const imageRef = opt.image ??
  execFileSync("bash", [path.join(repo, "deploy", "image", "build.sh"), "--print-ref"], { encoding: "utf8" }).trim();

let passed = 0;
let failed = 0;
function check(name, ok, why = "") {
  if (ok) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${why ? `: ${why}` : ""}`);
  }
  return ok;
}
function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

async function importModule(rel) {
  const file = path.join(modules, rel);
  if (!fs.existsSync(file)) return null;
  return import(pathToFileURL(file).href);
}

const yamlModule = await importModule("js-yaml/index.js");
if (!yamlModule) {
  check(`js-yaml in ${modules}`, false, "missing: run bash deploy/dev/install-deps.sh");
  finish();
}
const yaml = yamlModule.default ?? yamlModule;

// --events=FILE: a JSON array of core/v1 Events (what examples/event_relay_test.py's fake
// API server holds), each against kubernetes-models' v1 Event, then nothing else.
if (opt.events !== undefined) {
  const { Event } = (await importModule("kubernetes-models/v1/Event.js")) ?? {};
  if (Event === undefined) {
    check("kubernetes-models/v1/Event.js", false, `missing in ${modules}`);
    finish();
  }
  const events = JSON.parse(fs.readFileSync(opt.events, "utf8"));
  for (const ev of Array.isArray(events) ? events : [events]) {
    const label = `Event ${ev?.metadata?.name} (${ev?.reason} about ${ev?.involvedObject?.kind} ${ev?.involvedObject?.name})`;
    try {
      new Event(ev).validate();
      // The schema takes any string: the API server takes RFC 3339 only.
      const bad = ["firstTimestamp", "lastTimestamp"].filter((f) => !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(ev[f]));
      check(`${label}: schema`, bad.length === 0, `${bad.join(", ")} not RFC 3339`);
    } catch (e) {
      check(`${label}: schema`, false, (e.errors ?? []).map((x) => `field ${x.instancePath || "/"} ${x.message}`).join("; ") || e.message);
    }
  }
  finish();
}

// The model class for an apiVersion and kind: kubernetes-models for Kubernetes' own
// groups, @kubernetes-models/prometheus-operator for monitoring.coreos.com.
async function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z]+$/.test(kind)) {
    return null;
  }
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const roots = group === ""
    ? [`kubernetes-models/${version}`]
    : [`kubernetes-models/${group}/${version}`, `@kubernetes-models/prometheus-operator/${group}/${version}`];
  for (const root of roots) {
    const mod = await importModule(`${root}/${kind}.js`);
    const Model = mod?.[kind];
    // Only resources have a static apiVersion (not, say, kind: Capabilities).
    if (Model && Model.apiVersion === apiVersion && Model.kind === kind) return Model;
  }
  return null;
}

const clusterScoped = new Set([
  "Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "CustomResourceDefinition",
  "StorageClass", "CSIDriver", "PersistentVolume", "Node", "RuntimeClass",
]);

// A kustomization is no Kubernetes object: section 5 renders it.
const isKustomization = (name) => ["kustomization.yaml", "kustomization.yml", "Kustomization"].includes(name);
function yamlFiles(d) {
  const out = [];
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    if (e.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(e.name) && !isKustomization(e.name)) out.push(p);
  }
  return out.sort();
}

// --- 1. Every document parses and validates against its schema. ---------------------
const docs = []; // {file, index, doc, label}
const files = yamlFiles(dir);
check(`manifests found in ${path.relative(process.cwd(), dir) || "."}`, files.length > 0, "no *.yaml");
for (const file of files) {
  const rel = path.relative(dir, file);
  let loaded;
  try {
    loaded = yaml.loadAll(fs.readFileSync(file, "utf8"), null, { filename: rel });
  } catch (e) {
    check(`${rel}: YAML`, false, e.message.split("\n")[0]);
    continue;
  }
  loaded.forEach((doc, i) => {
    if (doc === null || doc === undefined) return; // an empty document (a trailing ---)
    const name = `${doc?.metadata?.namespace ? `${doc.metadata.namespace}/` : ""}${doc?.metadata?.name ?? "?"}`;
    const label = `${rel} document ${i + 1} (${doc?.kind ?? "no kind"} ${name})`;
    docs.push({ file: rel, index: i + 1, doc, label });
  });
}
// The schema of one document, its name and, when namespaced, its namespace.
async function checkDocument({ doc, label }) {
  const Model = await modelFor(doc?.apiVersion, doc?.kind);
  if (!check(`${label}: a known apiVersion/kind`, Model !== null,
    `no model for apiVersion ${JSON.stringify(doc?.apiVersion)} kind ${JSON.stringify(doc?.kind)}`)) return;
  try {
    new Model(doc).validate();
    check(`${label}: schema`, true);
  } catch (e) {
    const errs = e.errors ?? [];
    const detail = errs.length
      ? errs.map((x) => `field ${x.instancePath || "/"} ${x.message}${x.params?.allowedValues ? ` (${x.params.allowedValues.join(", ")})` : ""}`).join("; ")
      : e.message;
    check(`${label}: schema`, false, detail);
  }
  check(`${label}: metadata.name`, typeof doc.metadata?.name === "string" && doc.metadata.name !== "");
  if (!clusterScoped.has(doc.kind)) {
    check(`${label}: metadata.namespace`, typeof doc.metadata?.namespace === "string",
      "a namespaced object without one lands wherever kubectl points");
  }
}
for (const d of docs) await checkDocument(d);
{
  const seen = new Map();
  for (const d of docs) {
    const key = `${d.doc?.kind}/${d.doc?.metadata?.namespace ?? ""}/${d.doc?.metadata?.name}`;
    if (seen.has(key)) check(`${d.label}: unique`, false, `also ${seen.get(key)}`);
    seen.set(key, d.label);
  }
}

// --- 2. What the deployment needs. --------------------------------------------------
const find = (kind, name) => docs.find((d) => d.doc?.kind === kind && d.doc?.metadata?.name === name);
const get = (obj, ...keys) => keys.reduce((o, k) => (o === undefined || o === null ? undefined : o[k]), obj);
const under = (p, dirPath) => p === dirPath || p.startsWith(dirPath.endsWith("/") ? dirPath : `${dirPath}/`);

// The volume mount that holds a container path (the longest prefix) and where that is on
// the node when it is a hostPath.
function mountFor(podSpec, container, p) {
  let best = null;
  for (const m of container.volumeMounts ?? []) {
    if (under(p, m.mountPath) && (!best || m.mountPath.length > best.mountPath.length)) best = m;
  }
  if (!best) return null;
  const volume = (podSpec.volumes ?? []).find((v) => v.name === best.name);
  const rest = p.slice(best.mountPath.length);
  const host = volume?.hostPath ? path.posix.join(volume.hostPath.path, rest) : null;
  return { mount: best, volume, host };
}

// umpathd's flag names: ABSL_FLAG(type, name, ...) in agent/ and server/, and Abseil's own.
function definedFlags() {
  const names = new Set(["flagfile", "fromenv", "tryfromenv", "undefok", "help", "helpfull",
    "helpshort", "helppackage", "version", "only_check_args"]);
  const walk = (d) => {
    if (!fs.existsSync(d)) return;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(cc|h)$/.test(e.name) && !/_test\.cc$/.test(e.name)) {
        for (const m of fs.readFileSync(p, "utf8").matchAll(/ABSL_FLAG\(\s*[^,()]+?,\s*(\w+)\s*,/g)) names.add(m[1]);
      }
    }
  };
  walk(path.join(repo, "agent"));
  walk(path.join(repo, "server"));
  return names;
}
const knownFlags = definedFlags();
const isKnownFlag = (n) => knownFlags.has(n) || (n.startsWith("no") && knownFlags.has(n.slice(2)));

// "--name=value" lines of a flagfile (comments and blank lines skipped), last one wins.
function parseFlags(text) {
  const flags = new Map();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^--?([A-Za-z0-9_]+)(?:=(.*))?$/.exec(line);
    if (m) flags.set(m[1], m[2] ?? "true");
    else flags.set(line, undefined);
  }
  return flags;
}
const port = (address) => {
  const m = /:(\d+)$/.exec(address ?? "");
  return m ? Number(m[1]) : null;
};
const loopback = (address) => /^(127\.|localhost:|\[::1\]:)/.test(address ?? "");

const ds = find("DaemonSet", "umpathd");
if (!check("a DaemonSet umpathd", ds !== undefined)) finish();
const dsl = ds.label;
const pod = get(ds.doc, "spec", "template", "spec") ?? {};
const c = (pod.containers ?? []).find((x) => x.name === "umpathd");
if (!check(`${dsl}: container umpathd`, c !== undefined)) finish();
const cl = `${dsl} container umpathd`;
const ns = ds.doc.metadata?.namespace;

check(`${dsl}: namespace umpath-system`, ns === "umpath-system", `is ${ns}`);
{
  const nsDoc = find("Namespace", ns);
  check(`Namespace ${ns} is in the manifests`, nsDoc !== undefined);
  check(`Namespace ${ns}: pod-security.kubernetes.io/enforce: privileged`,
    get(nsDoc?.doc, "metadata", "labels", "pod-security.kubernetes.io/enforce") === "privileged",
    "umpathd is privileged; Pod Security Admission would refuse it");
}
check(`${cl}: image ${imageRef} (deploy/image/build.sh --print-ref)`, c.image === imageRef, `is ${c.image}`);
{
  const tag = imageRef.slice(imageRef.lastIndexOf(":") + 1);
  for (const [where, labels] of [["metadata", ds.doc.metadata?.labels], ["pod template", get(ds.doc, "spec", "template", "metadata", "labels")]]) {
    const v = labels?.["app.kubernetes.io/version"];
    check(`${dsl}: ${where} label app.kubernetes.io/version is the image's tag ${tag}`, v === tag, `is ${v}`);
  }
}
const argv = [...(c.command ?? []), ...(c.args ?? [])];
check(`${cl}: command umpathd --flagfile=/etc/umpath/umpathd.flags`,
  argv[0] === "umpathd" && argv[1] === "--flagfile=/etc/umpath/umpathd.flags", JSON.stringify(argv));
check(`${cl}: --node=$(NODE_NAME) after --flagfile`, argv.indexOf("--node=$(NODE_NAME)") > 1, JSON.stringify(argv));
check(`${cl}: env NODE_NAME from spec.nodeName`,
  (c.env ?? []).some((e) => e.name === "NODE_NAME" && get(e, "valueFrom", "fieldRef", "fieldPath") === "spec.nodeName"));
for (const a of argv.slice(1)) {
  const m = /^--?([A-Za-z0-9_]+)/.exec(a);
  check(`${cl}: command-line flag ${a} is umpathd's`, m !== null && isKnownFlag(m[1]),
    `not an ABSL_FLAG in ${repo}/agent or ${repo}/server`);
}

// The config: the ConfigMap behind --flagfile.
const flagfile = (argv.find((a) => a.startsWith("--flagfile=")) ?? "").slice("--flagfile=".length);
const cfgMount = flagfile ? mountFor(pod, c, flagfile) : null;
const cmName = cfgMount?.volume?.configMap?.name;
check(`${cl}: --flagfile ${flagfile} is on a ConfigMap volume`, cmName !== undefined);
const cm = cmName ? find("ConfigMap", cmName) : undefined;
check(`ConfigMap ${cmName} is in the manifests, namespace ${ns}`, cm !== undefined && cm.doc.metadata?.namespace === ns);
check(`${cl}: ConfigMap mounted at /etc/umpath read-only`,
  cfgMount?.mount.mountPath === "/etc/umpath" && cfgMount?.mount.readOnly === true);
const key = cfgMount ? flagfile.slice(cfgMount.mount.mountPath.length + 1) : "";
const flagsText = get(cm?.doc, "data", key);
if (!check(`ConfigMap ${cmName}: key ${key}`, typeof flagsText === "string")) finish();
const cml = `ConfigMap ${cmName} ${key}`;
const flags = parseFlags(flagsText);
for (const [name, value] of flags) {
  check(`${cml}: --${name} is umpathd's`, value !== undefined && isKnownFlag(name),
    value === undefined ? "not a --name=value line" : `not an ABSL_FLAG in ${repo}/agent or ${repo}/server`);
}
{
  const samplePath = path.join(repo, "deploy", "config", "umpathd.flags");
  if (fs.existsSync(samplePath)) {
    const sample = parseFlags(fs.readFileSync(samplePath, "utf8"));
    const missing = [...sample.keys()].filter((n) => !flags.has(n));
    check(`${cml}: sets every flag deploy/config/umpathd.flags sets`, missing.length === 0,
      `missing ${missing.map((n) => `--${n}`).join(" ")}`);
  }
}
for (const name of ["health_address", "metrics_address", "socket", "state_file", "ublk_state_dir"]) {
  check(`${cml}: --${name}`, flags.has(name));
}
check(`${cml}: no --node (it comes from the command line)`, !flags.has("node"));
for (const name of ["socket_group", "admin_groups", "viewer_groups"]) {
  if (!flags.has(name)) continue;
  check(`${cml}: --${name} is numeric (the image has no /etc/group entry)`,
    /^\d+(,\d+)*$/.test(flags.get(name)), flags.get(name));
}
const healthPort = port(flags.get("health_address"));
const metricsPort = port(flags.get("metrics_address"));
check(`${cml}: --health_address is not loopback (kubelet probes the pod IP)`, !loopback(flags.get("health_address")));
check(`${cml}: --metrics_address is not loopback (Prometheus scrapes the pod IP)`, !loopback(flags.get("metrics_address")));

// Privileges and the pod.
check(`${cl}: securityContext.privileged`, get(c, "securityContext", "privileged") === true);
check(`${cl}: capability IPC_LOCK`, (get(c, "securityContext", "capabilities", "add") ?? []).includes("IPC_LOCK"));
check(`${dsl}: hostPID`, pod.hostPID === true, "umpathd reads /proc for the holders of a block device");
check(`${dsl}: priorityClassName system-node-critical`, pod.priorityClassName === "system-node-critical");
check(`${dsl}: terminationGracePeriodSeconds > 45`, (pod.terminationGracePeriodSeconds ?? 30) > 45,
  `is ${pod.terminationGracePeriodSeconds}; umpathd's own stop takes up to ~45 s (a kernel path's 35 s drain)`);
check(`${dsl}: nodeSelector or tolerations for storage nodes`,
  Object.keys(pod.nodeSelector ?? {}).some((k) => k !== "kubernetes.io/os") || (pod.tolerations ?? []).length > 0);
// One node at a time: either the old pod goes first (maxUnavailable 1, maxSurge 0), or
// the new one starts beside it (maxUnavailable 0, maxSurge 1) and takes over from it,
// which needs --take_over (else two agents for one node's devices) and
// --linger_after_handover (else the kubelet restarts the old container, which takes the
// node back).
const rolling = get(ds.doc, "spec", "updateStrategy", "rollingUpdate") ?? {};
const surge = rolling.maxSurge ?? 0;
const unavailable = rolling.maxUnavailable ?? 1;
check(`${dsl}: updateStrategy RollingUpdate, one node at a time`,
  get(ds.doc, "spec", "updateStrategy", "type") === "RollingUpdate" &&
  ((surge === 0 && unavailable === 1) || (surge === 1 && unavailable === 0)),
  `maxSurge ${surge}, maxUnavailable ${unavailable}`);
if (surge !== 0) {
  for (const flag of ["--take_over", "--linger_after_handover"]) {
    check(`${cl}: ${flag} (the new pod starts beside the old one)`, argv.includes(flag), `not in ${argv.join(" ")}`);
  }
}
check(`${cl}: resources.requests cpu and memory`,
  get(c, "resources", "requests", "cpu") !== undefined && get(c, "resources", "requests", "memory") !== undefined);
check(`${cl}: resources.limits.memory`, get(c, "resources", "limits", "memory") !== undefined);
// The memory limit holds the I/O buffers' budget (--max_pinned_mib, 64 by default) and
// a 64 MiB base (the agent ~28 MiB, ~2 MiB per vfio controller): past it, the kernel's
// OOM killer and not a RESOURCE_EXHAUSTED export would say no.
const mebibytes = (q) => {
  const m = /^(\d+)(Ki|Mi|Gi|k|M|G)?$/.exec(String(q ?? ""));
  if (!m) return NaN;
  const unit = { Ki: 1 / 1024, Mi: 1, Gi: 1024, k: 1e3 / 2 ** 20, M: 1e6 / 2 ** 20, G: 1e9 / 2 ** 20 }[m[2]] ?? 1 / 2 ** 20;
  return Number(m[1]) * unit;
};
const memLimit = mebibytes(get(c, "resources", "limits", "memory"));
const memRequest = mebibytes(get(c, "resources", "requests", "memory"));
check(`${cl}: resources.requests.memory equals the limit (never the first evicted)`, memLimit === memRequest,
  `request ${get(c, "resources", "requests", "memory")}, limit ${get(c, "resources", "limits", "memory")}`);
const pinnedMib = Number(flags.get("max_pinned_mib") ?? 64);
check(`${cl}: resources.limits.memory holds --max_pinned_mib (${pinnedMib} MiB) and a 64 MiB base`,
  memLimit >= pinnedMib + 64, `is ${get(c, "resources", "limits", "memory")}`);

// hostPaths, each at the same path in the container.
const hostMount = (p) => {
  const m = mountFor(pod, c, p);
  return m && m.mount.mountPath === p && m.volume?.hostPath?.path === p ? m : null;
};
for (const p of ["/dev", "/sys", "/run/umpath", "/run/umpath/ublk", "/var/lib/umpath"]) {
  check(`${cl}: hostPath ${p} at ${p}`, hostMount(p) !== null);
}
check(`${cl}: hostPath /lib/modules at /lib/modules, read-only`, hostMount("/lib/modules")?.mount.readOnly === true);
const socket = flags.get("socket") ?? "";
const socketDir = path.posix.dirname(socket);
const socketMount = mountFor(pod, c, socket);
check(`${cml}: --socket ends in .sock`, socket.endsWith(".sock"), socket);
check(`${cl}: the socket's directory ${socketDir} is a hostPath`, socketMount?.volume?.hostPath !== undefined &&
  under(socketDir, socketMount.mount.mountPath), socketMount ? `mount ${socketMount.mount.name} is not a hostPath` : "not mounted");
const socketHostDir = socketMount?.host ? path.posix.dirname(socketMount.host) : null;
check(`${cl}: the socket's hostPath directory is not under /var/lib/kubelet/plugins (the CSI driver's)`,
  socketHostDir !== null && !under(socketHostDir, "/var/lib/kubelet/plugins"), `is ${socketHostDir}`);
for (const name of ["state_file", "ublk_state_dir"]) {
  const p = flags.get(name) ?? "";
  const m = mountFor(pod, c, name === "state_file" ? path.posix.dirname(p) : p);
  check(`${cl}: --${name} ${p} is on a hostPath (it must outlive the container)`, m?.volume?.hostPath !== undefined);
}

// Probes and ports.
const ports = c.ports ?? [];
for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
  const g = get(c, probe, "grpc");
  check(`${cl}: ${probe} is grpc`, g !== undefined);
  check(`${cl}: ${probe} grpc port is numeric, --health_address's (${healthPort})`,
    Number.isInteger(g?.port) && g.port === healthPort, `is ${JSON.stringify(g?.port)}`);
}
check(`${cl}: containerPort ${metricsPort} named metrics (--metrics_address)`,
  metricsPort !== null && ports.some((p) => p.name === "metrics" && p.containerPort === metricsPort));
check(`${cl}: containerPort ${healthPort} (--health_address)`,
  healthPort !== null && ports.some((p) => p.containerPort === healthPort));

// --- 3. The PodMonitor. ---------------------------------------------------------------
const monitors = docs.filter((d) => d.doc?.kind === "PodMonitor");
check("a PodMonitor", monitors.length > 0);
const podLabels = get(ds.doc, "spec", "template", "metadata", "labels") ?? {};
for (const pm of monitors) {
  const spec = pm.doc.spec ?? {};
  check(`${pm.label}: namespace ${ns}`, pm.doc.metadata?.namespace === ns ||
    (get(spec, "namespaceSelector", "matchNames") ?? []).includes(ns));
  const sel = get(spec, "selector", "matchLabels") ?? {};
  check(`${pm.label}: selector matches the DaemonSet's pods`,
    Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => podLabels[k] === v), JSON.stringify(sel));
  const eps = spec.podMetricsEndpoints ?? [];
  check(`${pm.label}: podMetricsEndpoints`, eps.length > 0);
  for (const ep of eps) {
    check(`${pm.label}: endpoint port metrics is the container's`, ep.port === "metrics" &&
      ports.some((p) => p.name === ep.port), `port ${JSON.stringify(ep.port)}`);
    check(`${pm.label}: endpoint path /metrics`, ep.path === "/metrics", `is ${ep.path}`);
    check(`${pm.label}: endpoint interval 30s`, ep.interval === "30s", `is ${ep.interval}`);
  }
}

// --- 3b. The PrometheusRule: the rule file's groups, exactly. -------------------------
// deploy/prometheus/umpath-rules.yaml is where the rules are written and tested
// (promtool); deploy/kubernetes/prometheusrule.sh prints the PrometheusRule from it. Any
// difference (a hand edit, a stale copy) is refused, naming the first one.
function firstDifference(a, b, where = "") {
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return `${where || "/"}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`;
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const d = firstDifference(a[i], b[i], `${where}/${i}`);
      if (d) return d;
    }
    return null;
  }
  if (a !== null && b !== null && typeof a === "object" && typeof b === "object") {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const d = firstDifference(a[k], b[k], `${where}/${k}`);
      if (d) return d;
    }
    return null;
  }
  return a === b ? null : `${where || "/"}: ${JSON.stringify(a)} in the PrometheusRule, ${JSON.stringify(b)} in the rule file`;
}
const ruleFile = path.join(repo, "deploy", "prometheus", "umpath-rules.yaml");
const promRules = docs.filter((d) => d.doc?.kind === "PrometheusRule");
check("a PrometheusRule", promRules.length > 0);
for (const pr of promRules) {
  check(`${pr.label}: namespace ${ns}`, pr.doc.metadata?.namespace === ns, `is ${pr.doc.metadata?.namespace}`);
  let fileGroups;
  try {
    fileGroups = yaml.load(fs.readFileSync(ruleFile, "utf8"), { filename: ruleFile })?.groups;
  } catch (e) {
    check(`${ruleFile}: YAML`, false, e.message.split("\n")[0]);
    continue;
  }
  const diff = firstDifference(get(pr.doc, "spec", "groups"), fileGroups);
  check(`${pr.label}: spec.groups are deploy/prometheus/umpath-rules.yaml's groups`, diff === null,
    `${diff} (regenerate: bash deploy/kubernetes/prometheusrule.sh > deploy/kubernetes/umpathd-prometheusrule.yaml)`);
  const alerts = (get(pr.doc, "spec", "groups") ?? []).flatMap((g) => g.rules ?? []).filter((r) => r.alert);
  check(`${pr.label}: ${alerts.length} alerts, each with a runbook_url`,
    alerts.length > 0 && alerts.every((r) => typeof r.annotations?.runbook_url === "string"),
    alerts.filter((r) => typeof r.annotations?.runbook_url !== "string").map((r) => r.alert).join(", "));
}

// --- 4. The CSI sidecar: every container named umpath-sidecar. -------------------------
const gidsOf = (s) => (s ?? "").split(",").filter((x) => /^\d+$/.test(x)).map(Number);
const socketGid = gidsOf(flags.get("socket_group"))[0];
const adminGids = gidsOf(flags.get("admin_groups"));
const workloads = docs.filter((d) => ["DaemonSet", "Deployment", "StatefulSet", "Pod"].includes(d.doc?.kind));
let sidecars = 0;
for (const w of workloads) {
  const spec = w.doc.kind === "Pod" ? w.doc.spec : get(w.doc, "spec", "template", "spec");
  for (const sc of spec?.containers ?? []) {
    if (sc.name !== "umpath-sidecar") continue;
    sidecars++;
    const sl = `${w.label} container umpath-sidecar`;
    check(`${sl}: image ${imageRef} (umpathd's, which has umpathctl)`, sc.image === imageRef, `is ${sc.image}`);
    // The commands it runs: its command and args, and the ConfigMaps it mounts.
    let text = [...(sc.command ?? []), ...(sc.args ?? [])].join(" ");
    for (const m of sc.volumeMounts ?? []) {
      const v = (spec.volumes ?? []).find((x) => x.name === m.name);
      const scm = v?.configMap ? docs.find((d) => d.doc?.kind === "ConfigMap" && d.doc.metadata?.name === v.configMap.name &&
        d.doc.metadata?.namespace === w.doc.metadata?.namespace) : undefined;
      if (v?.configMap) check(`${sl}: ConfigMap ${v.configMap.name} is in the manifests`, scm !== undefined);
      text += ` ${Object.values(scm?.doc.data ?? {}).join("\n")}`;
    }
    check(`${sl}: uses umpathd's socket ${socket}`, text.includes(socket) && text.includes("--socket="));
    // The calls in order (README.md, "A CSI node plugin's calls in order"): settings kept
    // before the head exists, a wait instead of a polling loop, the unexport on unstage.
    check(`${sl}: keeps the head's settings ahead (settings set HEAD --delayed-removal=N --export=true --allow-missing)`,
      /umpathctl[\s\S]*\bsettings\s+set\s+\S+[^\n]*--delayed-removal=\S+[^\n]*--export=true[^\n]*--allow-missing/.test(text));
    check(`${sl}: waits for the export (wait HEAD --for=exported --timeout=...)`,
      /\bwait\s+"?\$\S*[^\n]*--for=exported[^\n]*--timeout=/.test(text));
    check(`${sl}: does not poll the head (no umpathctl head HEAD)`, !/\bctl\s+(-\S+\s+)*head\s/.test(text));
    check(`${sl}: unexports and forgets the head on unstage (unexport HEAD, settings delete HEAD)`,
      /\bunexport\s+"?\$/.test(text) && /\bsettings\s+delete\s+"?\$/.test(text));
    const m = mountFor(spec, sc, socket);
    check(`${sl}: mounts the node's ${socketHostDir} (umpathd's socket directory)`,
      m?.host !== null && m?.host !== undefined && socketHostDir !== null && path.posix.dirname(m.host) === socketHostDir,
      m ? `its ${socket} is the node's ${m.host}` : `${socket} is not mounted`);
    const uid = sc.securityContext?.runAsUser ?? spec.securityContext?.runAsUser;
    const nonRoot = sc.securityContext?.runAsNonRoot ?? spec.securityContext?.runAsNonRoot;
    check(`${sl}: runs without root`, nonRoot === true && uid !== undefined && uid !== 0, `runAsNonRoot ${nonRoot} runAsUser ${uid}`);
    check(`${sl}: allowPrivilegeEscalation false`, sc.securityContext?.allowPrivilegeEscalation === false);
    const supplemental = spec.securityContext?.supplementalGroups ?? [];
    check(`${sl}: supplementalGroups has --socket_group ${socketGid}`, socketGid !== undefined && supplemental.includes(socketGid),
      JSON.stringify(supplemental));
    // umpathd takes a Unix caller's role from SO_PEERCRED (uid, primary gid).
    const gid = sc.securityContext?.runAsGroup ?? spec.securityContext?.runAsGroup;
    check(`${sl}: runAsGroup is one of --admin_groups ${adminGids.join(",")} (roles go by the primary gid)`,
      adminGids.includes(gid), `runAsGroup ${gid}`);
  }
  // A CSI driver's own socket stays under /var/lib/kubelet/plugins, apart from umpathd's.
  for (const v of spec?.volumes ?? []) {
    const hp = v.hostPath?.path;
    if (hp && under(hp, "/var/lib/kubelet/plugins") && socketHostDir) {
      check(`${w.label}: volume ${v.name} (${hp}) is not umpathd's socket directory`, !under(socketHostDir, hp));
    }
  }
}
check("a container umpath-sidecar (the CSI node plugin example)", sidecars > 0);

// --- 4b. The event relay (examples/event-relay.yaml). -----------------------------------
// Its ConfigMap carries examples/event-relay.py (the file event_relay_test.py runs) as it
// is; umpathctl from umpathd's image; umpathd's socket as a viewer; what it posts allowed.
function checkEventRelay() {
  const relay = docs.find((d) => d.doc?.kind === "DaemonSet" && d.doc.metadata?.name === "umpath-event-relay");
  if (!check("a DaemonSet umpath-event-relay (the event relay example)", relay !== undefined)) return;
  const rl = relay.label;
  const rns = relay.doc.metadata?.namespace;
  const spec = get(relay.doc, "spec", "template", "spec") ?? {};
  const rc = (spec.containers ?? []).find((x) => x.name === "event-relay");
  if (!check(`${rl}: container event-relay`, rc !== undefined)) return;
  const cl = `${rl} container event-relay`;
  const argv = [...(rc.command ?? []), ...(rc.args ?? [])];
  const script = argv[1] ?? "";
  const sm = mountFor(spec, rc, script);
  const scm = sm?.volume?.configMap ? docs.find((d) => d.doc?.kind === "ConfigMap" &&
    d.doc.metadata?.name === sm.volume.configMap.name && d.doc.metadata?.namespace === rns) : undefined;
  const key = sm ? script.slice(sm.mount.mountPath.length + 1) : "";
  const source = path.join(dir, "examples", "event-relay.py");
  check(`${cl}: runs python3 on a script of a ConfigMap of the manifests`, argv[0] === "python3" &&
    typeof get(scm?.doc, "data", key) === "string", JSON.stringify(argv));
  check(`${cl}: the ConfigMap's ${key} is examples/event-relay.py as it is`, fs.existsSync(source) &&
    get(scm?.doc, "data", key) === fs.readFileSync(source, "utf8"),
    "a stale copy: put the file in again, indented by 4 spaces");
  // The Python image's release is umpathd's image's (the copied libraries need its glibc).
  const suite = fs.readFileSync("/etc/os-release", "utf8").match(/^VERSION_CODENAME=(\S+)$/m)?.[1];
  check(`${cl}: image of Debian ${suite}, umpathd's image's release`, suite !== undefined &&
    new RegExp(`-${suite}$`).test(rc.image ?? ""), `is ${rc.image}`);
  const init = (spec.initContainers ?? []).find((x) => x.image === imageRef);
  check(`${rl}: an init container of ${imageRef} copies umpathctl`, init !== undefined &&
    [...(init.command ?? []), ...(init.args ?? [])].join(" ").includes("umpathctl"));
  const sock = argv.find((x) => x.startsWith("--socket="))?.slice("--socket=".length) ?? "/run/umpath/umpathd.sock";
  check(`${cl}: umpathd's socket ${socket}`, sock === socket, `is ${sock}`);
  const m = mountFor(spec, rc, socket);
  check(`${cl}: mounts the node's ${socketHostDir} (umpathd's socket directory)`,
    m?.host !== null && m?.host !== undefined && path.posix.dirname(m.host) === socketHostDir, m ? m.host : "not mounted");
  check(`${cl}: env NODE_NAME from spec.nodeName`,
    (rc.env ?? []).some((e) => e.name === "NODE_NAME" && get(e, "valueFrom", "fieldRef", "fieldPath") === "spec.nodeName"));
  const uid = rc.securityContext?.runAsUser ?? spec.securityContext?.runAsUser;
  const nonRoot = rc.securityContext?.runAsNonRoot ?? spec.securityContext?.runAsNonRoot;
  check(`${cl}: runs without root`, nonRoot === true && uid !== undefined && uid !== 0, `runAsNonRoot ${nonRoot} runAsUser ${uid}`);
  const gid = rc.securityContext?.runAsGroup ?? spec.securityContext?.runAsGroup;
  const viewers = [...gidsOf(flags.get("viewer_groups")), ...adminGids];
  check(`${cl}: runAsGroup is one of --viewer_groups or --admin_groups (${viewers.join(",")})`, viewers.includes(gid),
    `runAsGroup ${gid}`);
  check(`${rl}: supplementalGroups has --socket_group ${socketGid}`,
    (spec.securityContext?.supplementalGroups ?? []).includes(socketGid));
  // RBAC: what its service account may do, through the roles bound to it.
  const sa = spec.serviceAccountName;
  check(`${rl}: serviceAccountName, a ServiceAccount of the manifests`,
    sa !== undefined && find("ServiceAccount", sa)?.doc.metadata?.namespace === rns, `${sa}`);
  const rules = [];
  for (const b of docs.filter((d) => ["RoleBinding", "ClusterRoleBinding"].includes(d.doc?.kind))) {
    const bound = (b.doc.subjects ?? []).some((x) => x.kind === "ServiceAccount" && x.name === sa && x.namespace === rns);
    const ref = b.doc.roleRef ?? {};
    const role = docs.find((d) => d.doc?.kind === ref.kind && d.doc.metadata?.name === ref.name &&
      (ref.kind === "ClusterRole" || d.doc.metadata?.namespace === b.doc.metadata?.namespace));
    if (!bound || !role) continue;
    const where = b.doc.kind === "RoleBinding" ? b.doc.metadata?.namespace : "*";
    for (const r of role.doc.rules ?? []) rules.push({ ...r, where });
  }
  const may = (verb, resource, ns) => rules.some((r) => (r.where === "*" || r.where === ns) &&
    (r.apiGroups ?? []).includes("") && (r.resources ?? []).includes(resource) && (r.verbs ?? []).includes(verb));
  for (const verb of ["create", "patch"]) {
    check(`${rl}: its service account may ${verb} events in namespace default`, may(verb, "events", "default"));
  }
  for (const res of ["persistentvolumes", "nodes"]) {
    check(`${rl}: its service account may get ${res}`, may("get", res, "*"));
  }
  check(`${rl}: its service account may not delete events`, !may("delete", "events", "default"));
}
checkEventRelay();

// --- 5. The kustomization, rendered as kustomize would render it. -----------------------
// Only what this renderer applies may be in it: namespace (kustomize's namespace
// transformer sets metadata.namespace of namespaced objects and renames Namespace
// objects) and images (containers' and initContainers' images whose name, without tag or
// digest, is an entry's name get its newName, newTag or digest); resources are files of
// DIR. Anything else would pass here unapplied, so it is refused.
const kustomizationFields = new Set(["apiVersion", "kind", "metadata", "namespace", "resources", "images"]);
function podSpecs(doc) {
  switch (doc?.kind) {
    case "Pod": return [doc.spec];
    case "CronJob": return [get(doc, "spec", "jobTemplate", "spec", "template", "spec")];
    case "DaemonSet": case "Deployment": case "StatefulSet": case "ReplicaSet": case "Job":
      return [get(doc, "spec", "template", "spec")];
    default: return [];
  }
}
// name[:tag][@digest]; a registry's port (host:5000/name) is before the last slash.
function splitImage(image) {
  const at = image.indexOf("@");
  let name = at >= 0 ? image.slice(0, at) : image;
  const digest = at >= 0 ? image.slice(at + 1) : undefined;
  let tag;
  const colon = name.lastIndexOf(":");
  if (colon > name.lastIndexOf("/")) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
  }
  return { name, tag, digest };
}
function renderImages(rendered, images) {
  const matched = images.map(() => 0);
  for (const { doc } of rendered) {
    for (const spec of podSpecs(doc)) {
      for (const c of [...(spec?.containers ?? []), ...(spec?.initContainers ?? [])]) {
        if (typeof c.image !== "string") continue;
        const cur = splitImage(c.image);
        images.forEach((e, i) => {
          if (e?.name !== cur.name) return;
          matched[i]++;
          const digest = e.digest ?? (e.newTag === undefined ? cur.digest : undefined);
          const tag = e.digest === undefined ? (e.newTag === undefined ? cur.tag : String(e.newTag)) : undefined;
          c.image = `${e.newName ?? cur.name}${tag !== undefined ? `:${tag}` : ""}${digest !== undefined ? `@${digest}` : ""}`;
        });
      }
    }
  }
  return matched;
}
async function checkKustomization() {
  const file = ["kustomization.yaml", "kustomization.yml", "Kustomization"].map((n) => path.join(dir, n)).find((f) => fs.existsSync(f));
  if (!check("a kustomization.yaml", file !== undefined)) return;
  const kl = path.relative(dir, file);
  let k;
  try {
    k = yaml.load(fs.readFileSync(file, "utf8"), { filename: kl });
  } catch (e) {
    check(`${kl}: YAML`, false, e.message.split("\n")[0]);
    return;
  }
  check(`${kl}: apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization`,
    k?.apiVersion === "kustomize.config.k8s.io/v1beta1" && k?.kind === "Kustomization", `${k?.apiVersion} ${k?.kind}`);
  const unknown = Object.keys(k ?? {}).filter((f) => !kustomizationFields.has(f));
  check(`${kl}: only fields this check renders (${[...kustomizationFields].join(", ")})`, unknown.length === 0,
    `also ${unknown.join(", ")}`);
  check(`${kl}: namespace ${ns} (the manifests')`, k?.namespace === ns, `is ${k?.namespace}`);

  // The resources, read afresh (the transformers write to them).
  const rendered = [];
  for (const r of k?.resources ?? []) {
    const p = typeof r === "string" ? path.resolve(dir, r) : "";
    if (!check(`${kl}: resource ${r} is a file of ${path.basename(dir)}`,
      p !== "" && !r.includes("://") && under(p, dir) && fs.existsSync(p) && fs.statSync(p).isFile(),
      "remote bases and directories are not rendered here")) continue;
    yaml.loadAll(fs.readFileSync(p, "utf8"), null, { filename: r }).forEach((doc, i) => {
      if (doc !== null && doc !== undefined) rendered.push({ doc, r, i: i + 1 });
    });
  }
  if (typeof k?.namespace === "string") {
    for (const { doc } of rendered) {
      doc.metadata ??= {};
      if (doc.kind === "Namespace") doc.metadata.name = k.namespace;
      else if (!clusterScoped.has(doc.kind)) doc.metadata.namespace = k.namespace;
    }
  }
  const images = Array.isArray(k?.images) ? k.images : [];
  const matched = renderImages(rendered, images);
  images.forEach((e, i) => check(`${kl}: images entry ${e?.name} names a container's image`, matched[i] > 0,
    "it matches none, and kustomize would leave every image as it is"));
  for (const d of rendered) {
    const name = `${d.doc?.metadata?.namespace ? `${d.doc.metadata.namespace}/` : ""}${d.doc?.metadata?.name ?? "?"}`;
    d.label = `${kl} rendered: ${d.r} document ${d.i} (${d.doc?.kind ?? "no kind"} ${name})`;
    await checkDocument(d);
  }

  // What it deploys: the namespace, the ConfigMap, the DaemonSet with build.sh's image.
  const has = (kind, n) => rendered.find((d) => d.doc?.kind === kind && d.doc.metadata?.name === n);
  const rns = has("Namespace", k?.namespace);
  check(`${kl} rendered: Namespace ${k?.namespace}, Pod Security privileged`,
    get(rns?.doc, "metadata", "labels", "pod-security.kubernetes.io/enforce") === "privileged");
  const rds = has("DaemonSet", "umpathd");
  if (!check(`${kl} rendered: DaemonSet umpathd`, rds !== undefined)) return;
  const rpod = get(rds.doc, "spec", "template", "spec") ?? {};
  const rc = (rpod.containers ?? []).find((x) => x.name === "umpathd");
  check(`${kl} rendered: DaemonSet umpathd container umpathd image ${imageRef} (deploy/image/build.sh's)`,
    rc?.image === imageRef, `is ${rc?.image}`);
  for (const v of rpod.volumes ?? []) {
    if (v.configMap) {
      check(`${kl} rendered: ConfigMap ${v.configMap.name} (volume ${v.name})`, has("ConfigMap", v.configMap.name) !== undefined);
    }
  }
  // The monitoring: the scrape and the alerts on it go together (UmpathdDown fires on
  // rules without a scrape).
  for (const [kind, name] of [["PodMonitor", "umpathd"], ["PrometheusRule", "umpathd"]]) {
    const r = has(kind, name);
    check(`${kl} rendered: ${kind} ${name} in namespace ${k?.namespace}`, r?.doc.metadata?.namespace === k?.namespace,
      r ? `in ${r.doc.metadata?.namespace}` : "not in resources");
  }
}

await checkKustomization();
finish();
