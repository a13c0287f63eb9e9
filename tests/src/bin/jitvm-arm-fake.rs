//! The ARM fake (`jitvm_tests::arm_fake`) as a process, for the local stack:
//!
//!     jitvm-arm-fake [--listen 127.0.0.1:8081] [--ignore-stdin]
//!
//! It seeds a demo world, prints one line to standard output, the demo VM's
//! id, and serves until it is killed or its standard input closes (so it
//! never outlives the script that started it with a pipe). Give
//! `--ignore-stdin` when standard input is not a pipe that stays open (for
//! example `< /dev/null`). It listens on loopback only and logs one line per
//! request to standard error.
//!
//! The demo world, in subscription `00000000-0000-0000-0000-0000000000a1`,
//! resource group `jitvm-demo`: virtual network `demo-vnet` with subnet
//! `default` (10.0.0.0/24), NSG `demo-nsg` with a customer rule
//! `allow-ssh-anywhere` (Inbound, Allow, Tcp 22 from `*`, priority 300), and
//! VM `demo-vm` at 10.0.0.4 whose NIC `demo-vm-nic` carries `demo-nsg`.

use std::io::{Read, Write};
use std::net::SocketAddr;

use jitvm_tests::arm_fake::{ArmFake, CLIENT_ID, TENANT};
use serde_json::json;

const SUBSCRIPTION: &str = "00000000-0000-0000-0000-0000000000a1";
const RESOURCE_GROUP: &str = "jitvm-demo";
const USAGE: &str = "usage: jitvm-arm-fake [--listen 127.0.0.1:8081] [--ignore-stdin]";

fn main() {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8081));
    let mut watch_stdin = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let Some(value) = args.next() else {
                    fail(&format!("--listen needs an address\n{USAGE}"));
                };
                listen = value.parse().unwrap_or_else(|_| {
                    fail(&format!(
                        "--listen {value}: not an address and port\n{USAGE}"
                    ))
                });
            }
            "--ignore-stdin" => watch_stdin = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if !listen.ip().is_loopback() {
        fail(&format!(
            "--listen {listen}: the ARM fake listens on loopback only (127.0.0.1)"
        ));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    runtime.block_on(async move {
        let arm = ArmFake::start_on(listen)
            .await
            .unwrap_or_else(|e| fail(&format!("cannot listen on {listen}: {e}")));
        arm.set_request_log(true);
        let vm = seed(&arm);
        println!("{vm}");
        let _ = std::io::stdout().flush();
        eprintln!(
            "jitvm-arm-fake: ARM and token endpoint on {} (tenant {TENANT}, client {CLIENT_ID}); \
             demo VM {vm}",
            arm.base_url()
        );
        if watch_stdin {
            std::thread::spawn(|| {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
                eprintln!("jitvm-arm-fake: standard input closed, stopping");
                std::process::exit(0);
            });
        }
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("jitvm-arm-fake: interrupted, stopping");
        drop(arm);
    });
}

/// Seeds the demo world and returns the demo VM's id.
fn seed(arm: &ArmFake) -> String {
    let nsg = arm.add_nsg(SUBSCRIPTION, RESOURCE_GROUP, "demo-nsg");
    arm.put_rule(
        &nsg,
        "allow-ssh-anywhere",
        json!({"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
            "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
            "access": "Allow", "priority": 300, "direction": "Inbound",
            "description": "SSH from anywhere (a standing exposure, for the demo)"}),
    );
    let subnet = arm.add_subnet(
        SUBSCRIPTION,
        RESOURCE_GROUP,
        "demo-vnet",
        "default",
        "10.0.0.0/24",
        None,
    );
    arm.add_vm(
        SUBSCRIPTION,
        RESOURCE_GROUP,
        "demo-vm",
        &subnet,
        "10.0.0.4",
        Some(&nsg),
    )
}

fn fail(message: &str) -> ! {
    eprintln!("jitvm-arm-fake: {message}");
    std::process::exit(2);
}
