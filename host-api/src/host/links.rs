//! `link` imports (and 0.2's `bridge`): creation always in the node
//! namespace (a veth peer may be born inside the granted sandbox), changes
//! only on owned links.

use std::net::IpAddr;

use wasmtime::component::Resource;

use super::{
    from_prefix, ns_label, to_prefix, HostError, HostResult, HostState, LinkHandle, SandboxHandle,
};
use crate::bindings::netshim::plugin::link::{
    BridgeSpec, Host, HostLink, HostSandbox, IpipSpec, LinkState, TunSpec, VethSpec, VxlanSpec,
};
use crate::bindings::netshim::plugin::types::{IpPrefix, MacAddress};
use crate::bindings::v0_2::netshim::plugin0_2_0::bridge;
use crate::host::convert::to_ip;
use crate::journal::Undo;
use crate::kernel::{LinkChange, LinkInfo, LinkKind, Mac, NewLink, NsId};

/// The kernel's rules for interface names, checked before asking it so the
/// guest gets a message that says which name and why.
fn check_name(name: &str) -> HostResult<()> {
    match crate::kernel::ifname_problem(name) {
        None => Ok(()),
        Some(why) => Err(HostError::invalid(format!(
            "link name {:?} {why}",
            crate::guard::limits::truncate(name, 32)
        ))),
    }
}

fn check_mtu(mtu: Option<u32>) -> HostResult<()> {
    match mtu {
        Some(m) if !(68..=65535).contains(&m) => {
            Err(HostError::invalid(format!("MTU {m} is outside 68..65535")))
        }
        _ => Ok(()),
    }
}

fn mac(m: MacAddress) -> Mac {
    [m.0, m.1, m.2, m.3, m.4, m.5]
}

fn to_wit_mac(m: Mac) -> MacAddress {
    (m[0], m[1], m[2], m[3], m[4], m[5])
}

impl HostState {
    fn push_link(&mut self, info: &LinkInfo, owned: bool) -> HostResult<Resource<LinkHandle>> {
        Ok(self.table.push(LinkHandle {
            link: info.link_ref(),
            name: info.name.clone(),
            owned,
        })?)
    }

    /// Creates a link in the node namespace, marked as this network's, and
    /// journals its deletion.
    fn create(
        &mut self,
        what: &str,
        name: &str,
        mtu: Option<u32>,
        mac_addr: Option<MacAddress>,
        kind: LinkKind,
    ) -> HostResult<Vec<LinkInfo>> {
        let alias = self.mark(what)?;
        check_name(name)?;
        check_mtu(mtu)?;
        if self.created.len() >= crate::guard::limits::LINKS_PER_CALL {
            return Err(HostError::denied(format!(
                "{what} {name:?}: one call may create at most {} links (quota)",
                crate::guard::limits::LINKS_PER_CALL
            )));
        }
        let spec = NewLink {
            ns: NsId::NODE,
            name: name.to_string(),
            mtu,
            mac: mac_addr.map(mac),
            alias: Some(alias),
            up: false,
            kind,
        };
        let links = self.kernel.create_link(&spec)?;
        self.created.extend(links.iter().map(LinkInfo::link_ref));
        if let Some(first) = links.first() {
            self.journal.record(Undo::DeleteLink {
                link: first.link_ref(),
                name: first.name.clone(),
            });
        }
        for l in links.iter().filter(|l| l.ns == NsId::NODE) {
            self.admit_link(l.index)?;
        }
        Ok(links)
    }

    /// A link handle that a tunnel may use as its underlay: the granted
    /// underlay or a link this network owns.
    fn underlay_index(&self, r: Option<&Resource<LinkHandle>>) -> HostResult<Option<u32>> {
        let Some(r) = r else { return Ok(None) };
        let h = self.link(r)?;
        if h.link.ns != NsId::NODE {
            return Err(HostError::invalid(format!(
                "link {:?} is inside a sandbox and cannot carry a tunnel",
                h.name
            )));
        }
        Ok(Some(h.link.index))
    }

    fn change(
        &mut self,
        r: &Resource<LinkHandle>,
        what: &str,
        change: LinkChange,
    ) -> HostResult<()> {
        let h = self.owned_link(r, what)?;
        if self.created.contains(&h.link) {
            // Undone by deleting the link: nothing to remember.
            self.kernel.set_link(h.link, &change)?;
            return Ok(());
        }
        let before = self
            .kernel
            .link_by_index(h.link)?
            .ok_or_else(|| HostError::not_found(format!("link {:?} no longer exists", h.name)))?;
        let undo = match &change {
            LinkChange::Up(_) => LinkChange::Up(before.up),
            LinkChange::Mtu(_) => LinkChange::Mtu(before.mtu),
            LinkChange::Mac(_) => match before.mac {
                Some(m) => LinkChange::Mac(m),
                None => {
                    return Err(HostError::invalid(format!(
                        "link {:?} has no MAC address to change",
                        h.name
                    )))
                }
            },
            LinkChange::Master(_) => LinkChange::Master(before.master),
            LinkChange::Hairpin(on) => LinkChange::Hairpin(!on),
            // The kernel's default when it did not say.
            LinkChange::MulticastSnooping(_) => {
                LinkChange::MulticastSnooping(before.multicast_snooping.unwrap_or(true))
            }
            LinkChange::Ipv6LinkLocal(on) => LinkChange::Ipv6LinkLocal(!on),
            LinkChange::Name(_) => LinkChange::Name(before.name.clone()),
            LinkChange::Alias(_) => LinkChange::Alias(before.alias.clone()),
        };
        self.kernel.set_link(h.link, &change)?;
        self.journal.record(Undo::SetLink {
            link: h.link,
            change: undo,
        });
        Ok(())
    }
}

impl HostSandbox for HostState {
    fn path(&mut self, self_: Resource<SandboxHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&self_)?.path.clone())
    }

    fn drop(&mut self, rep: Resource<SandboxHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl HostLink for HostState {
    fn state(&mut self, self_: Resource<LinkHandle>) -> HostResult<LinkState> {
        let h = self.link(&self_)?;
        let info = self.kernel.link_by_index(h.link)?.ok_or_else(|| {
            HostError::not_found(format!(
                "link {:?} ({} namespace) no longer exists",
                h.name,
                ns_label(h.link.ns)
            ))
        })?;
        Ok(LinkState {
            name: info.name,
            index: info.index,
            mtu: info.mtu,
            mac: info.mac.map(to_wit_mac),
            up: info.up,
            kind: info.kind,
            owned: h.owned,
        })
    }

    fn set_up(&mut self, self_: Resource<LinkHandle>, up: bool) -> HostResult<()> {
        self.change(&self_, "set-up", LinkChange::Up(up))
    }

    fn set_mtu(&mut self, self_: Resource<LinkHandle>, mtu: u32) -> HostResult<()> {
        check_mtu(Some(mtu))?;
        self.change(&self_, "set-mtu", LinkChange::Mtu(mtu))
    }

    fn set_mac(&mut self, self_: Resource<LinkHandle>, m: MacAddress) -> HostResult<()> {
        self.change(&self_, "set-mac", LinkChange::Mac(mac(m)))
    }

    fn set_master(
        &mut self,
        self_: Resource<LinkHandle>,
        bridge: Resource<LinkHandle>,
    ) -> HostResult<()> {
        let b = self.owned_link(&bridge, "set-master (as the bridge)")?;
        let h = self.link(&self_)?;
        if b.link.ns != h.link.ns {
            return Err(HostError::invalid(format!(
                "link {:?} and bridge {:?} are in different namespaces",
                h.name, b.name
            )));
        }
        if self.created.contains(&h.link) {
            // A new bridge port gets no IPv6 link-local address: it is a
            // port, its bridge holds the addresses. Each address would be
            // one more IPv6 route walked on every link event of the node
            // (README, Performance).
            self.kernel
                .set_link(h.link, &LinkChange::Ipv6LinkLocal(false))?;
        }
        self.change(&self_, "set-master", LinkChange::Master(Some(b.link.index)))
    }

    fn set_hairpin(&mut self, self_: Resource<LinkHandle>, on: bool) -> HostResult<()> {
        self.change(&self_, "set-hairpin", LinkChange::Hairpin(on))
    }

    fn add_address(&mut self, self_: Resource<LinkHandle>, address: IpPrefix) -> HostResult<()> {
        let h = self.owned_link(&self_, "add-address")?;
        let a = to_prefix(&address)?;
        self.kernel.add_address(h.link, a)?;
        self.journal.record(Undo::DelAddress {
            link: h.link,
            address: a,
        });
        Ok(())
    }

    fn del_address(&mut self, self_: Resource<LinkHandle>, address: IpPrefix) -> HostResult<()> {
        let h = self.owned_link(&self_, "del-address")?;
        let a = to_prefix(&address)?;
        self.kernel.del_address(h.link, a)?;
        self.journal.record(Undo::AddAddress {
            link: h.link,
            address: a,
        });
        Ok(())
    }

    fn addresses(&mut self, self_: Resource<LinkHandle>) -> HostResult<Vec<IpPrefix>> {
        let h = self.link(&self_)?;
        Ok(self
            .kernel
            .addresses(h.link)?
            .into_iter()
            .map(from_prefix)
            .collect())
    }

    fn drop(&mut self, rep: Resource<LinkHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl Host for HostState {
    fn create_bridge(&mut self, spec: BridgeSpec) -> HostResult<Resource<LinkHandle>> {
        let links = self.create(
            "create-bridge",
            &spec.name,
            spec.mtu,
            spec.mac,
            LinkKind::Bridge,
        )?;
        self.push_link(&links[0], true)
    }

    fn create_veth(
        &mut self,
        spec: VethSpec,
    ) -> HostResult<(Resource<LinkHandle>, Resource<LinkHandle>)> {
        check_name(&spec.peer_name)?;
        let peer_ns = match &spec.peer_sandbox {
            Some(sb) => self.sandbox(sb)?.ns,
            None => NsId::NODE,
        };
        let alias = self.mark("create-veth")?;
        let kind = LinkKind::Veth {
            peer_name: spec.peer_name.clone(),
            peer_ns,
            peer_mac: spec.peer_mac.map(mac),
            peer_alias: Some(alias),
        };
        let links = self.create("create-veth", &spec.name, spec.mtu, spec.mac, kind)?;
        let (node_end, peer) = match links.as_slice() {
            [a, b] => (a.clone(), b.clone()),
            _ => {
                return Err(HostError::Trap(wasmtime::Error::msg(
                    "kernel backend returned no veth peer",
                )))
            }
        };
        Ok((
            self.push_link(&node_end, true)?,
            self.push_link(&peer, true)?,
        ))
    }

    fn create_vxlan(&mut self, spec: VxlanSpec) -> HostResult<Resource<LinkHandle>> {
        let underlay = self.underlay_index(spec.underlay.as_ref())?;
        if spec.vni >= 1 << 24 {
            return Err(HostError::invalid(format!(
                "VXLAN id {} does not fit in 24 bits",
                spec.vni
            )));
        }
        if let Some(port) = spec.port {
            if port < 1024 {
                return Err(HostError::denied(format!(
                    "VXLAN {:?}: UDP port {port} is a privileged port the node's own services may use; use 4789, 8472 (the default) or another port from 1024 up",
                    spec.name
                )));
            }
        }
        let local = spec.local.as_ref().map(to_ip);
        if let Some(local) = local {
            // The source address must be the node's underlay address: any
            // other would let the tunnel speak for another host or network.
            let on_underlay = match self.grant.underlay {
                Some(u) => self.kernel.addresses(u)?.iter().any(|a| a.addr() == local),
                None => false,
            };
            if !on_underlay {
                return Err(HostError::denied(format!(
                    "VXLAN {:?}: local address {local} is not an address of the node's underlay link",
                    spec.name
                )));
            }
        }
        let kind = LinkKind::Vxlan {
            vni: spec.vni,
            local,
            port: spec.port,
            underlay,
            learning: spec.learning,
        };
        let links = self.create("create-vxlan", &spec.name, spec.mtu, spec.mac, kind)?;
        self.push_link(&links[0], true)
    }

    fn create_tun(&mut self, spec: TunSpec) -> HostResult<Resource<LinkHandle>> {
        let links = self.create(
            "create-tun",
            &spec.name,
            spec.mtu,
            None,
            LinkKind::Tun { tap: spec.tap },
        )?;
        self.push_link(&links[0], true)
    }

    fn create_ipip(&mut self, spec: IpipSpec) -> HostResult<Resource<LinkHandle>> {
        let underlay = self.underlay_index(spec.underlay.as_ref())?;
        let local: Option<IpAddr> = spec.local.as_ref().map(to_ip);
        let links = self.create(
            "create-ipip",
            &spec.name,
            spec.mtu,
            None,
            LinkKind::Ipip { local, underlay },
        )?;
        self.push_link(&links[0], true)
    }

    fn delete(&mut self, l: Resource<LinkHandle>) -> HostResult<()> {
        let h = self.owned_link(&l, "delete")?;
        // Out of the dispatch sets first: the kernel frees the set elements
        // after an RCU grace period, which then passes during the link's
        // own (slow) deletion instead of when a short-lived process closes
        // its nftables socket.
        let node = h.link.ns == NsId::NODE;
        if node {
            self.forget_link(h.link.index);
        }
        if let Err(e) = self.kernel.delete_link(h.link) {
            if node && !matches!(e, crate::kernel::KernelError::NotFound(_)) {
                // Still there: back in the scope of the driver's rules.
                let _ = self.admit_link(h.link.index);
            }
            return Err(e.into());
        }
        self.journal
            .irreversible(format!("link {:?} deleted", h.name));
        self.table.delete(l)?;
        Ok(())
    }

    fn open_owned(&mut self, name: String) -> HostResult<Resource<LinkHandle>> {
        let mark = self.mark("open-owned")?;
        check_name(&name)?;
        let info = self
            .kernel
            .link_by_name(NsId::NODE, &name)?
            .ok_or_else(|| {
                HostError::not_found(format!(
                    "link {name:?} does not exist in the node namespace"
                ))
            })?;
        if info.alias.as_deref() != Some(mark.as_str()) {
            let net = self.grant.network_id.as_deref().unwrap_or("-");
            return Err(HostError::denied(format!(
                "link {name:?} is not owned by network {net}: it was not created by this network"
            )));
        }
        self.push_link(&info, true)
    }

    fn open_in_sandbox(
        &mut self,
        sb: Resource<SandboxHandle>,
        name: String,
    ) -> HostResult<Resource<LinkHandle>> {
        self.network("open-in-sandbox")?;
        let s = self.sandbox(&sb)?;
        check_name(&name)?;
        let info = self.kernel.link_by_name(s.ns, &name)?.ok_or_else(|| {
            HostError::not_found(format!(
                "link {name:?} does not exist in sandbox {}",
                s.path
            ))
        })?;
        // Inside the lent sandbox, too, only what this network made is its own.
        let owned = info.alias.as_deref() == Some(self.mark("open-in-sandbox")?.as_str());
        self.push_link(&info, owned)
    }

    fn underlay(&mut self) -> wasmtime::Result<Option<Resource<LinkHandle>>> {
        let Some(link) = self.grant.underlay else {
            return Ok(None);
        };
        let name = match self.kernel.link_by_index(link) {
            Ok(Some(info)) => info.name,
            _ => return Ok(None),
        };
        Ok(Some(self.table.push(LinkHandle {
            link,
            name,
            owned: false,
        })?))
    }
}

impl bridge::Host for HostState {
    fn set_multicast_snooping(&mut self, bridge: Resource<LinkHandle>, on: bool) -> HostResult<()> {
        // A link of another kind is refused by the kernel, as a port's
        // hairpin mode is on a link that is no port.
        self.change(
            &bridge,
            "set-multicast-snooping",
            LinkChange::MulticastSnooping(on),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bindings::netshim::plugin::types::Error as WitError;
    use crate::host::test_support::{self, Scratch};
    use crate::host::Grant;
    use crate::kernel::fake::FakeKernel;
    use crate::kernel::Kernel;
    use bridge::Host as _;

    struct Case {
        kernel: Arc<FakeKernel>,
        host: HostState,
        _dir: Scratch,
    }

    fn case(tag: &str) -> Case {
        let kernel = Arc::new(FakeKernel::new());
        let dir = Scratch::new(&format!("links-{tag}"));
        let grant = Grant {
            driver: "bridge".into(),
            network_id: Some("n1".into()),
            ..Grant::default()
        };
        let host = test_support::host(kernel.clone(), &dir, grant, "create-network");
        Case {
            kernel,
            host,
            _dir: dir,
        }
    }

    /// Ends the call as failed: its journal is replayed on the kernel.
    fn roll_back(c: Case) -> Arc<FakeKernel> {
        let done = c.host.finish();
        let mut store = done.store;
        c.kernel.clear_calls();
        done.journal.rollback(c.kernel.as_ref(), store.as_mut());
        c.kernel
    }

    /// A link that exists before the call, as a handle of the call.
    fn existing(c: &mut Case, name: &str, kind: LinkKind, owned: bool) -> Resource<LinkHandle> {
        let l = test_support::link(&c.kernel, name, kind, Some("n1"));
        test_support::handle(&mut c.host, &l, owned)
    }

    fn borrow(r: &Resource<LinkHandle>) -> Resource<LinkHandle> {
        Resource::new_borrow(r.rep())
    }

    #[test]
    fn multicast_snooping_of_a_new_bridge_goes_with_the_bridge() {
        let mut c = case("snoop-new");
        let br = c
            .host
            .create_bridge(BridgeSpec {
                name: "br-a".into(),
                mtu: None,
                mac: None,
            })
            .unwrap();
        c.host.set_multicast_snooping(borrow(&br), false).unwrap();
        assert!(
            c.kernel
                .calls()
                .iter()
                .any(|l| l == "set_link br-a MulticastSnooping(false)"),
            "{:?}",
            c.kernel.calls()
        );
        // Undone by deleting the bridge; nothing else to replay.
        let kernel = roll_back(c);
        assert!(
            !kernel.link_names(NsId::NODE).contains(&"br-a".to_string()),
            "{:?}",
            kernel.link_names(NsId::NODE)
        );
        assert!(
            !kernel
                .calls()
                .iter()
                .any(|l| l.contains("MulticastSnooping")),
            "{:?}",
            kernel.calls()
        );
    }

    #[test]
    fn multicast_snooping_of_an_older_bridge_gets_its_setting_back() {
        for before in [true, false] {
            let mut c = case("snoop-old");
            let br = existing(&mut c, "br-b", LinkKind::Bridge, true);
            let at = c.host.table.get(&br).unwrap().link;
            c.kernel
                .set_link(at, &LinkChange::MulticastSnooping(before))
                .unwrap();
            c.host.set_multicast_snooping(borrow(&br), false).unwrap();
            let kernel = roll_back(c);
            assert_eq!(
                kernel.calls(),
                vec![format!("set_link br-b MulticastSnooping({before})")]
            );
            assert_eq!(
                kernel
                    .link_by_index(at)
                    .unwrap()
                    .unwrap()
                    .multicast_snooping,
                Some(before)
            );
        }
    }

    #[test]
    fn multicast_snooping_only_on_an_owned_bridge() {
        let mut c = case("snoop-bad");
        let other = existing(&mut c, "docker0", LinkKind::Bridge, false);
        let tun = existing(&mut c, "tun0", LinkKind::Tun { tap: false }, true);
        c.kernel.clear_calls();
        match c.host.set_multicast_snooping(borrow(&other), false) {
            Err(HostError::Guest(WitError::Denied(m))) => assert!(m.contains("docker0"), "{m}"),
            r => panic!("a bridge the network does not own: {r:?}"),
        }
        match c.host.set_multicast_snooping(borrow(&tun), false) {
            Err(HostError::Guest(WitError::Invalid(m))) => {
                assert!(m.contains("not a bridge"), "{m}")
            }
            r => panic!("a TUN device: {r:?}"),
        }
        assert!(c.kernel.calls().is_empty(), "{:?}", c.kernel.calls());
    }
}
