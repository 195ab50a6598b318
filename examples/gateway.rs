//! Placeholder: the gateway comes in a later commit.
fn main() {}
