//! `sysctl` imports: a fixed list of per-link keys on owned links, and the
//! node's IPv4 forwarding switch (on only).

use wasmtime::component::Resource;

use super::{HostError, HostResult, HostState, LinkHandle};
use crate::bindings::netshim::plugin::sysctl::{Host, LinkKey};
use crate::journal::Undo;
use crate::kernel::NsId;

fn path(key: LinkKey, link: &str) -> String {
    match key {
        LinkKey::Forwarding => format!("net/ipv4/conf/{link}/forwarding"),
        LinkKey::ProxyArp => format!("net/ipv4/conf/{link}/proxy_arp"),
        LinkKey::ProxyDelay => format!("net/ipv4/neigh/{link}/proxy_delay"),
        LinkKey::RouteLocalnet => format!("net/ipv4/conf/{link}/route_localnet"),
        LinkKey::RpFilter => format!("net/ipv4/conf/{link}/rp_filter"),
        LinkKey::SendRedirects => format!("net/ipv4/conf/{link}/send_redirects"),
        LinkKey::DisableIpv6 => format!("net/ipv6/conf/{link}/disable_ipv6"),
        LinkKey::AcceptRa => format!("net/ipv6/conf/{link}/accept_ra"),
    }
}

fn parse(path: &str, text: &str) -> HostResult<u32> {
    text.trim().parse().map_err(|_| {
        HostError::Guest(crate::bindings::netshim::plugin::types::Error::Failed(
            format!("sysctl {path} holds {text:?}, not a number"),
        ))
    })
}

impl Host for HostState {
    fn set_link(&mut self, l: Resource<LinkHandle>, key: LinkKey, value: u32) -> HostResult<()> {
        let h = self.owned_link(&l, "sysctl set")?;
        if key == LinkKey::RouteLocalnet && value != 0 {
            // With it, a DNAT to 127.0.0.1 would reach the node's
            // loopback-only services from the network.
            return Err(HostError::denied(format!(
                "sysctl route_localnet on {:?} denied: it would expose the node's loopback-only services to the network",
                h.name
            )));
        }
        let p = path(key, &h.name);
        let old = self.kernel.sysctl_get(h.link.ns, &p)?;
        self.kernel.sysctl_set(h.link.ns, &p, &value.to_string())?;
        self.journal.record(Undo::Sysctl {
            ns: h.link.ns,
            path: p,
            value: old.trim().to_string(),
        });
        Ok(())
    }

    fn get_link(&mut self, l: Resource<LinkHandle>, key: LinkKey) -> HostResult<u32> {
        let h = self.link(&l)?;
        let p = path(key, &h.name);
        let text = self.kernel.sysctl_get(h.link.ns, &p)?;
        parse(&p, &text)
    }

    fn enable_ipv4_forwarding(&mut self) -> HostResult<()> {
        self.network("enable-ipv4-forwarding")?;
        // Shared with every other network and the operator: never undone.
        self.kernel
            .sysctl_set(NsId::NODE, "net/ipv4/ip_forward", "1")?;
        Ok(())
    }
}
