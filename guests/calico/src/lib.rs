//! netshim Calico driver — in progress (issue 10). What is here is the
//! IPAM model Calico keeps in its datastore, as plain data with its rules
//! tested natively: [`block`] (an allocation block with Calico's JSON and
//! ordinal bookkeeping) and [`keys`] (Calico's etcd key layout). The driver
//! itself (endpoints, routes, BGP) is not written yet, and this crate is not
//! built into netshim.

pub mod block;
pub mod keys;
