//! Limits shared by two routers through a real `redis-server` (started on a free loopback
//! port, without persistence, stopped by pid): `cargo test --features redis --test redis`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod proxy;
mod server;
mod support;

mod fleet;
mod outage;
mod semantics;
