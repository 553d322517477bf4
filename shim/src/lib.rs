//! netshim: the CNM core, the guest runtime and the front-ends.

pub mod agent;
pub mod bird;
pub mod cli;
pub mod cnm;
pub mod docker;
pub mod guests;
pub mod metrics;
pub mod oci;
pub mod runtime;
pub mod sandbox;
pub mod scaffold;
pub mod topology;
pub mod udp_datapath;
