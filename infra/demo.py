"""A short scenario against the running local stack, printing each step:
enable JIT, a refused request, a granted request, the rule it opened, and
the rule closed by the sweep after its end time; then the same on the demo
Azure VM of the ARM fake. Run by `infra/run.sh --demo`.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import boto3

BASE = "http://" + os.environ.get("JITVM_LISTEN", "127.0.0.1:8080")
ADMIN, ALICE = "admin-token-1", "alice-token-1"


def call(method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def step(text):
    print(f"\n[{datetime.now(timezone.utc):%H:%M:%S}] {text}")


def jit_rules(ec2, instance_id):
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"jitvm-{instance_id}"]}])["SecurityGroups"]
    if not groups:
        return []
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [groups[0]["GroupId"]]}])["SecurityGroupRules"]
    return [r for r in rules if not r["IsEgress"]]


def main(vm):
    instance_id = vm.rsplit("/", 1)[1]
    # The VM id is the rest of the path, as written (percent-encoded works too).
    path = f"/v1/policies/{vm}"
    ec2 = boto3.client("ec2", region_name=os.environ.get("AWS_REGION", "us-east-1"))

    step("admin enables JIT: port 22/tcp from 198.51.100.0/24, at most 1 hour, requester local:alice")
    status, policy = call("PUT", path, ADMIN, {
        "ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
                   "maxRequestAccessDuration": "PT1H"}],
        "requesters": ["local:alice"]})
    print(f"  {status}: version {policy.get('version')}, dedicated group {policy.get('firewall')}")
    for x in policy.get("exposures", []):
        print(f"  exposure: {x['firewall']} rule {x['rule']} lets {x['source']} reach port {x['port']} ({x.get('description')})")

    step("alice asks for port 22 from 203.0.113.9, outside the allowed prefixes")
    status, body = call("POST", "/v1/requests", ALICE, {"virtualMachines": [{"id": vm, "ports": [
        {"number": 22, "duration": "PT10M", "allowedSourceAddressPrefix": "203.0.113.9"}]}]})
    print(f"  {status}: {body['error']['code']}: {body['error']['message']}")

    step("alice asks for port 22 from 198.51.100.7 for 20 seconds")
    status, record = call("POST", "/v1/requests", ALICE, {"virtualMachines": [{"id": vm, "ports": [
        {"number": 22, "duration": "PT20S", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
        "justification": "jitvm demo"})
    print(f"  {status}: request {record['id']} {record['status']}, port 22 {record['virtualMachines'][0]['ports'][0]['status']}")
    request_id = record["id"]
    end = record["virtualMachines"][0]["ports"][0]["endTimeUtc"]

    deadline = time.time() + 60
    while time.time() < deadline:
        _, record = call("GET", f"/v1/requests/{request_id}", ALICE)
        if record["virtualMachines"][0]["ports"][0]["status"] != "Initiating":
            break
        time.sleep(0.5)
    port = record["virtualMachines"][0]["ports"][0]
    step(f"the grant function took it from the queue: port 22 is {port['status']} until {port['endTimeUtc']}")
    for r in jit_rules(ec2, instance_id):
        tags = {t["Key"]: t["Value"] for t in r.get("Tags", [])}
        print(f"  rule opened: {r['SecurityGroupRuleId']} {r['IpProtocol']} {r['FromPort']} from {r.get('CidrIpv4') or r.get('CidrIpv6')}")
        print(f"    description: {r.get('Description')}")
        print(f"    tags: {tags}")

    step(f"waiting for the end time ({end}) and the sweep")
    deadline = time.time() + 120
    while time.time() < deadline and jit_rules(ec2, instance_id):
        time.sleep(0.5)
    gone = datetime.now(timezone.utc)
    if jit_rules(ec2, instance_id):
        print("  the rule is still there after 2 minutes: the sweep did not run")
        return 1
    overshoot = (gone - datetime.fromisoformat(end.replace("Z", "+00:00"))).total_seconds()
    print(f"  rule closed at {gone:%H:%M:%S} ({overshoot:.1f} s after its end time)")
    time.sleep(1)
    _, record = call("GET", f"/v1/requests/{request_id}", ALICE)
    port = record["virtualMachines"][0]["ports"][0]
    print(f"  request record: port 22 {port['status']} / {port['statusReason']}")

    step("admin disables JIT: the dedicated group is removed")
    status, _ = call("DELETE", path, ADMIN)
    print(f"  {status}")
    return 0


def arm_rules(nsg):
    """The NSG's rules, read straight from the ARM fake (or Azure)."""
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": os.environ["JITVM_AZURE_CLIENT_ID"],
        "client_secret": os.environ["JITVM_AZURE_CLIENT_SECRET"],
        "scope": "https://management.azure.com/.default"}).encode()
    authority = os.environ["JITVM_AZURE_AUTHORITY_URL"]
    tenant = os.environ["JITVM_AZURE_TENANT_ID"]
    with urllib.request.urlopen(f"{authority}/{tenant}/oauth2/v2.0/token", data=form, timeout=30) as resp:
        token = json.loads(resp.read())["access_token"]
    req = urllib.request.Request(f"{os.environ['JITVM_AZURE_ARM_URL']}{nsg}?api-version=2024-05-01",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        rules = json.loads(resp.read())["properties"]["securityRules"]
    return sorted(rules, key=lambda r: r["properties"]["priority"])


def show(rule):
    p = rule["properties"]
    print(f"  {p['priority']:>4} {p['access']:<5} {p['protocol']:<3} port {p['destinationPortRange']:<5} "
          f"from {p['sourceAddressPrefix']:<16} to {p['destinationAddressPrefix']:<10} {rule['name']}")


def main_azure(vm):
    # An Azure id starts with "/": it follows "policies" directly.
    path = f"/v1/policies{vm}"
    step(f"admin enables JIT on the Azure VM {vm.rsplit('/', 1)[1]}: port 22/tcp from 198.51.100.0/24")
    status, policy = call("PUT", path, ADMIN, {
        "ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
                   "maxRequestAccessDuration": "PT1H"}],
        "requesters": ["local:alice"]})
    nsg = policy.get("firewall")
    print(f"  {status}: version {policy.get('version')}, NSG {nsg}")
    for r in arm_rules(nsg):
        show(r)

    step("alice asks for port 22 from 198.51.100.7 for 20 seconds")
    status, record = call("POST", "/v1/requests", ALICE, {"virtualMachines": [{"id": vm, "ports": [
        {"number": 22, "duration": "PT20S", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
        "justification": "jitvm demo on Azure"})
    request_id = record["id"]
    end = record["virtualMachines"][0]["ports"][0]["endTimeUtc"]
    deadline = time.time() + 60
    while time.time() < deadline:
        _, record = call("GET", f"/v1/requests/{request_id}", ALICE)
        if record["virtualMachines"][0]["ports"][0]["status"] != "Initiating":
            break
        time.sleep(0.5)
    port = record["virtualMachines"][0]["ports"][0]
    step(f"port 22 is {port['status']} until {port['endTimeUtc']}; the NSG now reads:")
    for r in arm_rules(nsg):
        show(r)

    step(f"waiting for the end time ({end}) and the sweep")
    granted = lambda: [r for r in arm_rules(nsg) if r["name"].endswith(request_id)]
    deadline = time.time() + 120
    while time.time() < deadline and granted():
        time.sleep(0.5)
    if granted():
        print("  the rule is still there after 2 minutes: the sweep did not run")
        return 1
    gone = datetime.now(timezone.utc)
    overshoot = (gone - datetime.fromisoformat(end.replace("Z", "+00:00"))).total_seconds()
    print(f"  rule deleted at {gone:%H:%M:%S} ({overshoot:.1f} s after its end time)")

    step("admin disables JIT: the Deny rule goes, the customer's rules stay")
    status, _ = call("DELETE", path, ADMIN)
    print(f"  {status}")
    for r in arm_rules(nsg):
        show(r)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    if code == 0 and len(sys.argv) > 2 and sys.argv[2]:
        code = main_azure(sys.argv[2])
    sys.exit(code)
