#!/usr/bin/env bash
# Creates .venv at the project root and installs the pinned Python tools
# (infra/requirements.txt) into it: moto, which the tests and the local stack
# start from there, and cfn-lint and the SAM CLI, which check and deploy
# template.yaml. With --deploy it also installs Cargo Lambda
# (infra/requirements-deploy.txt), which `sam build` compiles the functions
# with. Unless given --no-browser, it installs Debian's chromium and
# chromium-driver, which the console's browser test drives (nothing
# downloads a browser at run time). Safe to re-run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
deploy=false
browser=true
for arg in "$@"; do
    case "$arg" in
        --deploy) deploy=true ;;
        --no-browser) browser=false ;;
        *) echo "usage: $0 [--deploy] [--no-browser]" >&2; exit 2 ;;
    esac
done
if $browser && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
    echo "== installing Debian's chromium and chromium-driver (the console's browser test)"
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    install=("${as_root[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver)
    # A new machine may have no package lists yet.
    "${install[@]}" >/dev/null 2>&1 || { "${as_root[@]}" apt-get update -q >/dev/null && "${install[@]}" >/dev/null; }
    /usr/bin/chromium --version
fi
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
fi
pip=("$root/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/infra/requirements.txt")
if $deploy; then
    pip+=(-r "$root/infra/requirements-deploy.txt")
fi
"${pip[@]}"
"$root/.venv/bin/python" -c 'import moto.server, importlib.metadata as m; print("moto", m.version("moto"), "ready in .venv")'
"$root/.venv/bin/cfn-lint" --version
SAM_CLI_TELEMETRY=0 "$root/.venv/bin/sam" --version
if $deploy; then
    "$root/.venv/bin/cargo-lambda" lambda --version
    if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
        echo "the functions run on arm64: run 'rustup target add aarch64-unknown-linux-gnu' before 'sam build'" >&2
    fi
fi
