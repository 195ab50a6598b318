//! Integration tests over real TCP: an OpenAI client -> the router -> the mock upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod support;

mod auth;
mod chat;
mod endpoints;
mod errors;
mod hardening;
mod mounts;
mod multipart;
mod policy;
mod resilience;
mod standalone;
mod streaming;
mod translation;
mod usage;
