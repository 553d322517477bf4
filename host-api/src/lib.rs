//! netshim's host API: the WIT imports a driver guest may call, implemented
//! against the kernel (netlink, nftables) or a recording fake, behind
//! capability checks and a per-call journal that undoes a failed call.

pub mod bindings;
pub mod guard;
pub mod host;
pub mod journal;
pub mod kernel;
pub mod model;
pub mod private;
pub mod store;
