//! placeholder crate docs (rewritten later)
#![forbid(unsafe_code)]

#[cfg(feature = "mock")]
pub mod mock;
