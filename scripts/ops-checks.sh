#!/usr/bin/env bash
# The operations checks of scripts/test.sh, one per subcommand; each installs what it needs
# (Debian packages through apt-get, a pinned PyPI package into a venv under target/).
#
#   scripts/ops-checks.sh promtool          install promtool (Debian's prometheus) if missing
#   scripts/ops-checks.sh rules             promtool check rules + promtool test rules
#   scripts/ops-checks.sh dashboards SCRAPE every dashboard and alert query names an exported
#                                           metric (SCRAPE: a real /metrics after traffic)
#   scripts/ops-checks.sh compose           docker-compose config, .env.template complete
#   scripts/ops-checks.sh kubernetes        deploy/kubernetes validated offline
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "ops-checks: $*" >&2; }
die() { echo "ops-checks: error: $*" >&2; exit 1; }

# kubernetes-validate bundles the Kubernetes JSON schemas, so it validates offline.
KUBERNETES_VALIDATE_VERSION=1.37.0
# The Kubernetes version whose schemas the manifests are checked against.
KUBERNETES_VERSION=1.33.0
VENV=target/ops/venv

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "not root and no sudo: install $* by hand"; fi
}

APT_UPDATED=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    local log; log="$(mktemp)"
    if [[ -z "$APT_UPDATED" ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 \
            || { cat "$log" >&2; die "apt-get update failed"; }
        APT_UPDATED=1
    fi
    say "installing $* (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1 \
        || { cat "$log" >&2; die "apt-get install $* failed"; }
    rm -f "$log"
}

ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    # Debian ships promtool in the prometheus package, which also installs the server as a
    # service. Only promtool is wanted: stop and disable the server if the package started it
    # (inside containers policy-rc.d usually prevents that), so it takes neither CPU nor :9090.
    apt_install prometheus
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1 && service prometheus status >/dev/null 2>&1; then
        as_root service prometheus stop >/dev/null 2>&1 || true
        as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
    command -v promtool >/dev/null 2>&1 || die "the prometheus package did not bring promtool"
}

ensure_docker_compose() {
    command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
}

ensure_kubernetes_validate() {
    if [[ ! -x "$VENV/bin/kubernetes-validate" ]] \
        || [[ "$("$VENV/bin/pip" show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p')" != "$KUBERNETES_VALIDATE_VERSION" ]]; then
        say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
        mkdir -p "$(dirname "$VENV")"
        [[ -x "$VENV/bin/pip" ]] || python3 -m venv "$VENV" \
            || { apt_install python3-venv && python3 -m venv "$VENV"; }
        "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
            || die "pip install kubernetes-validate failed"
    fi
}

rules() {
    ensure_promtool
    promtool check rules infrastructure/prometheus/alerts.yml
    promtool test rules infrastructure/prometheus/tests/alerts_test.yml
}

dashboards() {
    local scrape="${1:?usage: ops-checks.sh dashboards SCRAPE}"
    [[ -s "$scrape" ]] || die "no scrape at $scrape (cargo test --test pipeline metrics_after_traffic writes it)"
    ensure_promtool
    python3 scripts/check-dashboards.py "$scrape" --promtool "$(command -v promtool)"
}

compose() {
    ensure_docker_compose
    # Interpolation with no .env (the defaults) and with .env.template as .env must both pass.
    docker-compose -f docker-compose.yml config -q
    local dir; dir="$(mktemp -d)"
    cp docker-compose.yml "$dir/"; cp .env.template "$dir/.env"
    mkdir -p "$dir/infrastructure"   # bind-mount sources are not checked by `config`
    (cd "$dir" && docker-compose -f docker-compose.yml config -q)
    rm -rf "$dir"
    # Every setting of the binary and every variable the compose file reads is in the template.
    local var missing=0
    for var in $(sed -n 's/.*env = "\([A-Z_]*\)".*/\1/p' src/config.rs) \
               $(grep -o '\${[A-Z_][A-Z0-9_]*' docker-compose.yml | tr -d '${' | grep -vx VAR | sort -u); do
        grep -q "^$var=" .env.template || { say ".env.template lacks $var"; missing=1; }
    done
    ((missing == 0)) || die ".env.template is incomplete"
    echo "docker-compose config: ok; .env.template lists every variable"
}

kubernetes() {
    ensure_kubernetes_validate
    local files=() f
    # The resources kustomization.yaml lists, each validated against the bundled schemas
    # (unknown fields and wrong types fail: --strict).
    for f in $(sed -n '/^resources:/,/^[a-z]/s/^  - \(.*\.yaml\)$/\1/p' deploy/kubernetes/kustomization.yaml); do
        files+=("deploy/kubernetes/$f")
    done
    ((${#files[@]} >= 8)) || die "kustomization.yaml lists ${#files[@]} resources, expected 8"
    "$VENV/bin/kubernetes-validate" --strict -k "$KUBERNETES_VERSION" "${files[@]}"
    # Where kubectl exists, the kustomize build itself (offline: no cluster is contacted).
    if command -v kubectl >/dev/null 2>&1; then
        local rendered; rendered="$(mktemp --suffix=.yaml)"
        kubectl kustomize deploy/kubernetes >"$rendered"
        "$VENV/bin/kubernetes-validate" --strict -k "$KUBERNETES_VERSION" "$rendered"
        rm -f "$rendered"
    else
        say "kubectl not found: kustomize build not checked (the files themselves were)"
    fi
}

case "${1:-}" in
    promtool) ensure_promtool ;;
    rules) rules ;;
    dashboards) shift; dashboards "$@" ;;
    compose) compose ;;
    kubernetes) kubernetes ;;
    *) die "usage: ops-checks.sh promtool|rules|dashboards SCRAPE|compose|kubernetes" ;;
esac
