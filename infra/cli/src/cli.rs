//! The command line, as clap reads it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::EXIT_CODES_HELP;

/// Just-in-time network access to VMs: ask for a port, from a source, for
/// a while; approve, revoke, and see what is open.
#[derive(Debug, Parser)]
#[command(name = "jitvm", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The config file (default: $XDG_CONFIG_HOME/jitvm/config.toml or
    /// ~/.config/jitvm/config.toml). Keys: endpoint, auth ("sigv4" or
    /// "bearer"), token, region; JITVM_ENDPOINT, JITVM_TOKEN, JITVM_AUTH and
    /// AWS_REGION override them.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The API's base URL (overrides the config file and JITVM_ENDPOINT).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Human tables, or the API's JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Who jitvm takes you for, and what you may do.
    Whoami,
    /// The VMs: Configured, NotConfigured or Unsupported (with the reason).
    Vms,
    /// Ask for access to ports of a VM.
    Request(RequestArgs),
    /// One request, or your recent requests.
    Status {
        /// The request id; without it, your recent requests.
        id: Option<String>,
    },
    /// Requests, newest first.
    List(ListArgs),
    /// Close a request's rules now (or withdraw a pending request).
    Revoke { id: String },
    /// Approve a request waiting for you.
    Approve {
        id: String,
        /// Why (kept in the request's history).
        #[arg(short = 'm', long = "message", value_name = "REASON")]
        reason: Option<String>,
    },
    /// Deny a request waiting for you.
    Deny {
        id: String,
        /// Why (shown to the requestor).
        #[arg(short = 'm', long = "message", value_name = "REASON")]
        reason: Option<String>,
    },
    /// Read, write or delete a VM's JIT policy (admins write).
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Export the audit log as CSV (admins and auditors).
    Audit(AuditArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The VM: instance ARN, Azure resource id, instance id (i-...), or the
    /// Azure VM name or resourceGroup/name.
    pub vm: String,
    /// The port or ports, comma-separated (22 or 22,3389).
    #[arg(value_delimiter = ',', required = true)]
    pub ports: Vec<u16>,
    /// How long (1h, 30m, 1h30m, PT1H); default the policy's maximum.
    #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
    pub duration: Option<String>,
    /// Until when (RFC 3339, such as 2026-12-01T18:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// The source address or network; default your own address as the API
    /// sees it.
    #[arg(long, value_name = "CIDR")]
    pub from: Option<String>,
    /// The justification.
    #[arg(short = 'm', long = "message", value_name = "JUSTIFICATION")]
    pub justification: Option<String>,
    /// Break glass: open at once without waiting for an approver, where the
    /// VM's policy names you for it. Needs -m; the time is at most the
    /// policy's break-glass maximum, and the approvers are told.
    #[arg(long)]
    pub break_glass: bool,
    /// Wait until every port is open, then print what to connect to.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits at most (including for an approval).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub wait_timeout: String,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this VM's requests.
    #[arg(long)]
    pub vm: Option<String>,
    /// Only my requests.
    #[arg(long, conflicts_with = "pending")]
    pub mine: bool,
    /// Only requests waiting for my approval.
    #[arg(long)]
    pub pending: bool,
    /// At most this many (1-200).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub limit: u16,
    /// The next page: the token a previous page ended with.
    #[arg(long, value_name = "TOKEN", conflicts_with = "pending")]
    pub next_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Print the policy.
    Get { vm: String },
    /// Create or replace the policy from a JSON or YAML file.
    Put {
        vm: String,
        /// The policy document (.json, .yaml or .yml; `-` reads stdin as JSON or YAML).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Disable JIT on the VM: close its grants and undo what enabling did.
    Delete { vm: String },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// From (inclusive, RFC 3339); default 7 days ago.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// To (exclusive, RFC 3339); default now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this VM.
    #[arg(long)]
    pub vm: Option<String>,
    /// Write the CSV to FILE instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}
