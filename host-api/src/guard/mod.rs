//! What a guest may do, decided by the host on resolved objects: the size
//! limits and quotas every input is held to, and the scoping of the
//! driver's netfilter rules to its own networks' traffic.

pub mod limits;
pub mod netfilter;
