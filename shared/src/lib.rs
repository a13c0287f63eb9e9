//! jitvm-core: the one crate every jitvm function shares.
//!
//! [`domain`] is pure: policies, access requests and their validation, the
//! request status model and the encoding of grants into firewall rules. It
//! performs no I/O, reads no clock (time is always a parameter) and imports
//! no cloud SDK or HTTP crate, so every rule of the product can be tested in
//! isolation and the same code runs in Lambda, in the local host and in tests.

pub mod domain;

pub use domain::*;
