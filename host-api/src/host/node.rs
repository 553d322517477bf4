//! `node` imports (WIT 0.2): who and where this node is, and what the
//! call's network may route to. Facts the CNM core put in the grant; the
//! guest reads them, never changes them.

use super::{from_prefix, HostState};
use crate::bindings::netshim::plugin::types::IpPrefix;
use crate::bindings::v0_2::netshim::plugin0_2_0::node::{Host, NodeIdentity};

impl Host for HostState {
    fn identity(&mut self) -> wasmtime::Result<NodeIdentity> {
        let link = self.underlay();
        let name = link
            .and_then(|l| self.kernel.link_by_index(l).ok().flatten())
            .map(|i| i.name);
        let address = link
            .and_then(|l| self.kernel.addresses(l).ok())
            .and_then(|a| a.into_iter().find(|a| a.addr().is_ipv4()));
        Ok(NodeIdentity {
            name: self.grant.node_name.clone(),
            underlay_link: name,
            underlay_address: address.map(from_prefix),
        })
    }

    fn route_grant(&mut self) -> wasmtime::Result<Vec<IpPrefix>> {
        Ok(self
            .grant
            .route_prefixes
            .iter()
            .copied()
            .map(from_prefix)
            .collect())
    }
}
