//! Response body of [`Auth`](super::Auth): holds the key's concurrency permit until it ends.

/// The inner service's body (or a refusal), holding the key's permit `P` (a concurrency slot)
/// until it is done with: a stream counts until its last byte. See the [module docs](super).
pub type ResponseBody<B, P> = crate::body::Guarded<B, P>;
