//! jitvm-core: the one crate every jitvm function shares.
//!
//! - [`domain`] is pure: policies, access requests and their validation, the
//!   request status model and the encoding of grants into firewall rules. It
//!   performs no I/O, reads no clock (time is always a parameter) and
//!   imports no cloud SDK or HTTP crate.
//! - [`ports`] are the narrow capabilities handlers need (firewall, policy
//!   store, request store, queue), one trait each.
//! - [`aws`] implements them with the AWS SDK (EC2, DynamoDB, SQS); the same
//!   code runs against AWS and against moto through `AWS_ENDPOINT_URL`.

pub mod api;
pub mod audit;
pub mod aws;
pub mod azure;
pub mod cloud;
pub mod config;
pub mod console;
pub mod domain;
pub mod expiry;
pub mod lambda;
pub mod notify;
pub mod policy_fit;
pub mod ports;
pub mod records;
pub mod slack;
pub mod stack;
pub mod telemetry;

pub use domain::*;
