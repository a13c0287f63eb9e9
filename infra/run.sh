#!/usr/bin/env bash
# The local stack, with no AWS or Azure account: moto for EC2/SQS/DynamoDB
# and the ARM fake for Azure on loopback, a demo instance and a demo Azure
# VM, and the local host running the same handlers as the Lambda functions.
# With JITVM_AZURE_TENANT_ID already set, real Azure is used instead of the
# fake (give the other JITVM_AZURE_* variables too).
#
#   bash infra/run.sh          start it and print how to use it (Ctrl-C stops)
#   bash infra/run.sh --demo   run a short scenario end to end, then stop
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mode="${1:-serve}"

moto_port="${JITVM_MOTO_PORT:-5050}"
arm_port="${JITVM_ARM_FAKE_PORT:-8081}"
export JITVM_LISTEN="${JITVM_LISTEN:-127.0.0.1:8080}"
export JITVM_LOCAL_TOKENS="${JITVM_LOCAL_TOKENS:-admin=admin-token-1,alice=alice-token-1,bob=bob-token-1}"
export JITVM_ADMINS="${JITVM_ADMINS:-local:admin}"
# The Slack routes, signed with this secret (README "Slack": try it locally).
export JITVM_SLACK_SIGNING_SECRET="${JITVM_SLACK_SIGNING_SECRET:-local-slack-signing-secret}"
# Only members of these Slack workspaces may use it (README "Slack").
export JITVM_SLACK_WORKSPACES="${JITVM_SLACK_WORKSPACES:-T0LOCAL}"
if [ "$mode" = "--demo" ]; then
    export JITVM_SWEEP_INTERVAL_SECS="${JITVM_SWEEP_INTERVAL_SECS:-5}"
fi
export AWS_ENDPOINT_URL="http://127.0.0.1:${moto_port}"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export RUST_LOG="${RUST_LOG:-info}"

echo "== installing moto into .venv"
bash infra/setup.sh --no-browser
mkdir -p .jitvm

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

wait_for() { # url seconds
    for _ in $(seq 1 $(( $2 * 10 ))); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answered at $1 within $2 s" >&2
    return 1
}

echo "== starting moto on 127.0.0.1:${moto_port} (log: .jitvm/moto.log)"
.venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" > .jitvm/moto.log 2>&1 &
pids+=($!)
wait_for "${AWS_ENDPOINT_URL}/moto-api/" 60

echo "== seeding a demo VPC and instance"
vm="$(.venv/bin/python infra/seed.py)"
echo "$vm" > .jitvm/demo-instance
echo "   $vm"

echo "== building the local host and the ARM fake (the first build takes several minutes)"
cargo build --quiet -p jitvm-local -p jitvm-tests -p jitvm-cli --bin jitvm-local --bin jitvm-arm-fake --bin jitvm
bin="${CARGO_TARGET_DIR:-$root/target}/debug/jitvm-local"
cli="${CARGO_TARGET_DIR:-$root/target}/debug/jitvm"
fake="${CARGO_TARGET_DIR:-$root/target}/debug/jitvm-arm-fake"

azure_vm=""
if [ -z "${JITVM_AZURE_TENANT_ID:-}" ]; then
    echo "== starting the ARM fake on 127.0.0.1:${arm_port} (log: .jitvm/arm-fake.log)"
    "$fake" --listen "127.0.0.1:${arm_port}" --ignore-stdin < /dev/null > .jitvm/arm-fake.out 2> .jitvm/arm-fake.log &
    pids+=($!)
    for _ in $(seq 1 100); do
        [ -s .jitvm/arm-fake.out ] && break
        sleep 0.1
    done
    azure_vm="$(head -n 1 .jitvm/arm-fake.out)"
    [ -n "$azure_vm" ] || { echo "the ARM fake did not start; see .jitvm/arm-fake.log" >&2; exit 1; }
    echo "   $azure_vm"
    # The fake's app registration (tests/src/arm_fake.rs: TENANT, CLIENT_ID, CLIENT_SECRET).
    export JITVM_AZURE_TENANT_ID="72f988bf-0000-4000-8000-000000000001"
    export JITVM_AZURE_CLIENT_ID="6d2c5e3a-0000-4000-8000-00000000c1d0"
    export JITVM_AZURE_CLIENT_SECRET="fake-secret~0123456789abcdefghijklmnopqrstuv"
    export JITVM_AZURE_AUTHORITY_URL="http://127.0.0.1:${arm_port}"
    export JITVM_AZURE_ARM_URL="http://127.0.0.1:${arm_port}"
    export JITVM_AZURE_SUBSCRIPTIONS="00000000-0000-0000-0000-0000000000a1"
    echo "$azure_vm" > .jitvm/demo-azure-vm
fi

echo "== starting the local host on ${JITVM_LISTEN} (log: .jitvm/host.log)"
"$bin" > .jitvm/host.log 2>&1 &
pids+=($!)
wait_for "http://${JITVM_LISTEN}/healthz" 60

if [ "$mode" = "--demo" ]; then
    .venv/bin/python infra/demo.py "$vm" "$azure_vm"
    exit 0
fi

cat <<INFO

jitvm is running at http://${JITVM_LISTEN} (Ctrl-C stops everything).
Tokens: admin-token-1 (local:admin, may write policies), alice-token-1, bob-token-1.

The console: open http://${JITVM_LISTEN}/ and sign in with a token.
  1. As admin-token-1: Virtual machines > Not configured > Enable JIT > Save,
     for the demo instance and the demo Azure VM.
  2. Sign out; as alice-token-1: Configured > Request access > Open ports.
     Port 22 opens from your own address (127.0.0.1) and the page shows it Initiated.

The CLI (${cli}):

   export JITVM_ENDPOINT=http://${JITVM_LISTEN} JITVM_TOKEN=alice-token-1
   ${cli} vms
   ${cli} request ${vm} 22 --for 30m -m "trying jitvm" --wait
   ${cli} list --mine
   ${cli} revoke <id>

The HTTP API with curl:

1. Enable JIT on the demo instance (port 22 from 198.51.100.0/24, at most 1 hour):

   curl -s -X PUT "http://${JITVM_LISTEN}/v1/policies/${vm}" \\
     -H 'Authorization: Bearer admin-token-1' -H 'Content-Type: application/json' \\
     -d '{"ports":[{"number":22,"protocol":"tcp","allowedSourceAddressPrefixes":["198.51.100.0/24"],"maxRequestAccessDuration":"PT1H"}],"requesters":["local:alice"]}'

2. As alice, ask for port 22 from 198.51.100.7 for 2 minutes:

   curl -s -X POST http://${JITVM_LISTEN}/v1/requests \\
     -H 'Authorization: Bearer alice-token-1' -H 'Content-Type: application/json' \\
     -d '{"virtualMachines":[{"id":"${vm}","ports":[{"number":22,"duration":"PT2M","allowedSourceAddressPrefix":"198.51.100.7"}]}],"justification":"trying jitvm"}'

3. Watch it open and, after its end time, close (the sweep runs every ${JITVM_SWEEP_INTERVAL_SECS:-60} s):

   curl -s http://${JITVM_LISTEN}/v1/requests/<id> -H 'Authorization: Bearer alice-token-1'
   curl -s http://${JITVM_LISTEN}/v1/vms -H 'Authorization: Bearer alice-token-1'

The moto endpoint is ${AWS_ENDPOINT_URL} (AWS CLI: --endpoint-url ${AWS_ENDPOINT_URL}).
INFO
if [ -n "$azure_vm" ]; then
    cat <<AZURE
The same for the demo Azure VM on the ARM fake (http://127.0.0.1:${arm_port}):

   curl -s -X PUT "http://${JITVM_LISTEN}/v1/policies${azure_vm}" \\
     -H 'Authorization: Bearer admin-token-1' -H 'Content-Type: application/json' \\
     -d '{"ports":[{"number":22,"protocol":"tcp","allowedSourceAddressPrefixes":["198.51.100.0/24"],"maxRequestAccessDuration":"PT1H"}],"requesters":["local:alice"]}'

   curl -s -X POST http://${JITVM_LISTEN}/v1/requests \\
     -H 'Authorization: Bearer alice-token-1' -H 'Content-Type: application/json' \\
     -d '{"virtualMachines":[{"id":"${azure_vm}","ports":[{"number":22,"duration":"PT2M","allowedSourceAddressPrefix":"198.51.100.7"}]}]}'

AZURE
fi
wait "${pids[-1]}"
