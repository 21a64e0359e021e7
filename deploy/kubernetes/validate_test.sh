#!/usr/bin/env bash
# Validates deploy/kubernetes offline (validate.mjs: every document against its
# kubernetes-models schema, then what umpathd's deployment needs, against umpathd's own
# flags), then proves the validation can fail: broken copies of the manifests must each
# be refused, with the failure that names what was broken.
#
#   bash deploy/kubernetes/validate_test.sh        # from the repo root (or anywhere)
#
# Needs node and build/tools/node_modules/{kubernetes-models,@kubernetes-models/
# prometheus-operator,js-yaml} (deploy/dev/install-deps.sh installs them). Closes with
# "validate_test: N passed, M failed"; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
repo="$PWD"
modules="$repo/build/tools/node_modules"
validator="$repo/deploy/kubernetes/validate.mjs"

passed=0
failed=0
summary() {
  echo "validate_test: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

if ! command -v node >/dev/null 2>&1; then
  echo "FAIL node is not installed (bash deploy/dev/install-deps.sh installs it)"
  failed=1
  summary
fi
for p in kubernetes-models @kubernetes-models/prometheus-operator js-yaml; do
  if [ ! -f "$modules/$p/package.json" ]; then
    echo "FAIL $modules/$p is missing: npm install --prefix build/tools --no-audit --no-fund" \
         "kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0" \
         "(the npm line of deploy/dev/install-deps.sh)"
    failed=$((failed + 1))
  fi
done
[ "$failed" -eq 0 ] || summary

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. The manifests as they are: every check passes.
echo "=== deploy/kubernetes"
node "$validator" --dir="$repo/deploy/kubernetes" --repo="$repo" --modules="$modules" >"$tmp/real.log" 2>&1
rc=$?
cat "$tmp/real.log"
last="$(tail -n 1 "$tmp/real.log")"
if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  passed=$((passed + BASH_REMATCH[1]))
  failed=$((failed + BASH_REMATCH[2]))
  if [ "$rc" -ne 0 ] && [ "${BASH_REMATCH[2]}" -eq 0 ]; then
    echo "FAIL validate.mjs exited $rc with no failed check"
    failed=$((failed + 1))
  fi
else
  echo "FAIL validate.mjs did not finish (exit $rc)"
  failed=$((failed + 1))
fi

# 2. Broken copies. Each: a name, the file, a sed expression, and a pattern that the
# validator's output must have (a FAIL line naming what was broken).
mutant() {
  local name="$1" file="$2" expr="$3" want="$4"
  local copy="$tmp/$name"
  cp -r "$repo/deploy/kubernetes" "$copy"
  sed -i -e "$expr" "$copy/$file"
  echo "=== broken copy: $name ($file: sed '$expr')"
  if cmp -s "$repo/deploy/kubernetes/$file" "$copy/$file"; then
    echo "FAIL $name: the sed expression changed nothing in $file (the test is stale)"
    failed=$((failed + 1))
    return
  fi
  node "$validator" --dir="$copy" --repo="$repo" --modules="$modules" >"$tmp/$name.log" 2>&1
  local rc=$?
  grep '^FAIL' "$tmp/$name.log" | sed 's/^/    /'
  tail -n 1 "$tmp/$name.log" | sed 's/^/    /'
  if [ "$rc" -eq 0 ]; then
    echo "FAIL $name: validate.mjs accepted it"
    failed=$((failed + 1))
  elif [ "$rc" -ne 1 ]; then
    echo "FAIL $name: validate.mjs exited $rc, not 1 (a crash is not a refusal)"
    failed=$((failed + 1))
  elif ! grep -Eq -- "$want" "$tmp/$name.log"; then
    echo "FAIL $name: refused, but without a line matching: $want"
    failed=$((failed + 1))
  else
    echo "ok   $name: refused"
    passed=$((passed + 1))
  fi
}

# kubelet's gRPC probe takes a number only: the schema refuses a named port.
mutant named-grpc-port umpathd.yaml 's/^\( *\)port: 7444$/\1port: health/' \
  '^FAIL umpathd\.yaml document 1 \(DaemonSet umpath-system/umpathd\): schema: .*field /spec/template/spec/containers/0/startupProbe/grpc/port must be integer'
# The socket directory next to the CSI driver's csi.sock.
mutant socket-under-kubelet-plugins umpathd.yaml 's|^\( *\)path: /run/umpath$|\1path: /var/lib/kubelet/plugins/umpath|' \
  "^FAIL .*the socket's hostPath directory is not under /var/lib/kubelet/plugins.*: is /var/lib/kubelet/plugins/umpath$"
# No Prometheus listener in the config.
mutant no-metrics-address umpathd-config.yaml '/--metrics_address=/d' \
  '^FAIL ConfigMap umpathd-config umpathd\.flags: --metrics_address$'
# A flag umpathd does not have (a typo) would stop umpathd at start.
mutant misspelt-flag umpathd-config.yaml 's/--health_address=/--health_adress=/' \
  "^FAIL ConfigMap umpathd-config umpathd\.flags: --health_adress is umpathd's: not an ABSL_FLAG"
# Not privileged: vfio would not work.
mutant not-privileged umpathd.yaml 's/^\( *\)privileged: true$/\1privileged: false/' \
  '^FAIL umpathd\.yaml .*container umpathd: securityContext\.privileged$'
# The new pod beside the old one, without --take_over: two agents for one node's block
# devices; without --linger_after_handover: the old container, restarted by the kubelet,
# takes the node back. A surge and an unavailable pod at once: two nodes' pods at a time.
mutant surge-without-take-over umpathd.yaml '/^ *- --take_over$/d' \
  '^FAIL .*container umpathd: --take_over \(the new pod starts beside the old one\): not in umpathd --flagfile'
mutant surge-without-linger umpathd.yaml '/^ *- --linger_after_handover$/d' \
  '^FAIL .*container umpathd: --linger_after_handover \(the new pod starts beside the old one\): not in umpathd'
mutant surge-and-unavailable umpathd.yaml 's/^\( *\)maxUnavailable: 0$/\1maxUnavailable: 1/' \
  '^FAIL .*updateStrategy RollingUpdate, one node at a time: maxSurge 1, maxUnavailable 1$'
# Too little memory for the I/O buffers' budget, and a budget past the limit.
mutant small-memory umpathd.yaml 's/^\( *\)memory: 256Mi$/\1memory: 100Mi/' \
  '^FAIL .*resources.limits.memory holds --max_pinned_mib \(64 MiB\) and a 64 MiB base: is 100Mi$'
mutant big-budget umpathd-config.yaml 's|^\( *\)--workers=2$|\1--workers=2\n\1--max_pinned_mib=256|' \
  '^FAIL .*resources.limits.memory holds --max_pinned_mib \(256 MiB\) and a 64 MiB base: is 256Mi$'
# The sidecar as root.
mutant sidecar-as-root examples/csi-node-plugin.yaml 's/^\( *\)runAsUser: 65532$/\1runAsUser: 0/' \
  '^FAIL .*container umpath-sidecar: runs without root'
# The sidecar's calls (issue 19 item 9): settings kept only once the head exists, the old
# polling loop, and an unstage that leaves the device.
mutant sidecar-settings-late examples/csi-node-plugin.yaml 's/ --allow-missing//' \
  '^FAIL .*container umpath-sidecar: keeps the head.s settings ahead'
mutant sidecar-polls examples/csi-node-plugin.yaml 's/^\( *\)ctl -o json wait .*$/\1until ctl head "$head" >\/dev\/null; do sleep 1; done/' \
  '^FAIL .*container umpath-sidecar: (waits for the export|does not poll the head)'
mutant sidecar-keeps-device examples/csi-node-plugin.yaml 's/^\( *\)ctl unexport .*$/\1:/' \
  '^FAIL .*container umpath-sidecar: unexports and forgets the head on unstage'
# The image: the manifests name another than deploy/image/build.sh builds; the
# kustomization sets another tag, names no container's image, or asks for what this
# offline rendering does not apply.
mutant stale-image umpathd.yaml 's|^\( *\)image: umpath/umpathd:.*$|\1image: umpath/umpathd:0.0.0-stale|' \
  '^FAIL umpathd\.yaml .*container umpathd: image umpath/umpathd:[^ ]* \(deploy/image/build\.sh --print-ref\): is umpath/umpathd:0\.0\.0-stale$'
mutant kustomize-stale-tag kustomization.yaml 's/^\( *\)newTag: .*$/\1newTag: "0.0.0-stale"/' \
  '^FAIL kustomization\.yaml rendered: DaemonSet umpathd container umpathd image .*: is umpath/umpathd:0\.0\.0-stale$'
mutant kustomize-unmatched-image kustomization.yaml 's|^\( *- name:\) umpath/umpathd$|\1 umpath/umpath|' \
  "^FAIL kustomization\.yaml: images entry umpath/umpath names a container's image"
mutant kustomize-unrendered-field kustomization.yaml 's/^\(namespace: .*\)$/\1\nnamePrefix: test-/' \
  '^FAIL kustomization\.yaml: only fields this check renders .*: also namePrefix$'
mutant kustomize-other-namespace kustomization.yaml 's/^namespace: .*$/namespace: storage/' \
  '^FAIL kustomization\.yaml: namespace umpath-system \(the manifests.\): is storage$'
# The event relay (issue 20 item 7): a ConfigMap copy that is not the tested script, the
# Events it may not patch (aggregation) or the PVs it may not read, root, and a Python
# image of another Debian release than the libraries copied from umpathd's image.
mutant relay-copy-stale examples/event-relay.yaml 's/^    MAX_MESSAGE = 1024$/    MAX_MESSAGE = 2048/' \
  "^FAIL .*container event-relay: the ConfigMap.s relay\\.py is examples/event-relay\\.py as it is"
mutant relay-no-patch examples/event-relay.yaml 's/^    verbs: \["create", "patch"\]$/    verbs: ["create"]/' \
  '^FAIL .*umpath-event-relay\): its service account may patch events in namespace default$'
mutant relay-no-pv-get examples/event-relay.yaml 's/^    resources: \["persistentvolumes", "nodes"\]$/    resources: ["nodes"]/' \
  '^FAIL .*umpath-event-relay\): its service account may get persistentvolumes$'
mutant relay-as-root examples/event-relay.yaml 's/^\( *\)runAsUser: 65532$/\1runAsUser: 0/' \
  '^FAIL .*container event-relay: runs without root'
mutant relay-other-release examples/event-relay.yaml 's/python:3.11-slim-bookworm/python:3.11-slim-trixie/' \
  '^FAIL .*container event-relay: image of Debian [a-z]+, umpathd.s image.s release: is python:3\.11-slim-trixie$'

# The PrometheusRule: its groups drift from deploy/prometheus/umpath-rules.yaml (a wait
# changed, an alert inverted by hand), a field its schema refuses, and a kustomization
# that leaves it out.
mutant prometheusrule-drift umpathd-prometheusrule.yaml 's/^\( *\)for: 2m$/\1for: 3m/' \
  "^FAIL umpathd-prometheusrule\.yaml document 1 \(PrometheusRule umpath-system/umpathd\): spec\.groups are deploy/prometheus/umpath-rules\.yaml's groups: /0/rules/6/for: \"3m\" in the PrometheusRule, \"2m\" in the rule file"
mutant prometheusrule-inverted umpathd-prometheusrule.yaml 's/umpath_head_failing_fast == 1$/umpath_head_failing_fast == 0/' \
  "^FAIL umpathd-prometheusrule\.yaml .*: spec\.groups are .*: /0/rules/8/expr: \"umpath_head_failing_fast == 0\" in the PrometheusRule"
mutant prometheusrule-bad-for umpathd-prometheusrule.yaml 's/^\( *\)for: 5m$/\1for: five minutes/' \
  '^FAIL umpathd-prometheusrule\.yaml document 1 \(PrometheusRule umpath-system/umpathd\): schema: field /spec/groups/0/rules/[0-9]+/for must match pattern'
mutant kustomize-without-rules kustomization.yaml '/^ *- umpathd-prometheusrule\.yaml$/d' \
  '^FAIL kustomization\.yaml rendered: PrometheusRule umpathd in namespace umpath-system: not in resources$'

# The PrometheusRule is what prometheusrule.sh prints (comments included), so that
# editing the rule file and regenerating is the one way to change it.
echo "=== umpathd-prometheusrule.yaml is prometheusrule.sh's output"
if bash "$repo/deploy/kubernetes/prometheusrule.sh" | cmp -s - "$repo/deploy/kubernetes/umpathd-prometheusrule.yaml"; then
  echo "ok   umpathd-prometheusrule.yaml is bash deploy/kubernetes/prometheusrule.sh's output"
  passed=$((passed + 1))
else
  bash "$repo/deploy/kubernetes/prometheusrule.sh" | diff - "$repo/deploy/kubernetes/umpathd-prometheusrule.yaml" | head -n 10 | sed 's/^/    /'
  echo "FAIL umpathd-prometheusrule.yaml is not prometheusrule.sh's output: regenerate it"
  failed=$((failed + 1))
fi

summary
