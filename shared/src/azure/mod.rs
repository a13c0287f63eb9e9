//! The Azure adapter: network security groups over the Azure Resource
//! Manager REST API, with tokens from the Microsoft identity platform.
//!
//! Plain `reqwest` (rustls) rather than the `azure_identity`/`azure_core`
//! crates: jitvm makes a handful of ARM calls and one token call, and those
//! crates bring their own HTTP pipeline, policies and credential chain
//! (CLI, managed identity, ...) that a Lambda function does not use, for a
//! larger binary and a second HTTP stack beside the AWS SDK's.

pub mod arm;
pub mod nsg;
pub mod token;

pub use arm::{COMPUTE_API_VERSION, NETWORK_API_VERSION, RetryPolicy};
pub use nsg::AzureFirewall;
pub use token::{FAILED_FOR, TOKEN_TIMEOUT};
