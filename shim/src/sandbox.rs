//! The sandbox configurator: puts an endpoint's interface into its final
//! shape inside the container's namespace (name, address, up, routes,
//! default gateway) from the driver's join-info, the way dockerd does.

use crate::cnm::{Join, RouteVia};
use ipnet::IpNet;
use netshim_host_api::kernel::{
    Kernel, KernelError, LinkChange, LinkInfo, LinkRef, NsId, Route, RouteScope, LINK_GROUP,
};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox: interface {0:?} named by the driver does not exist in the sandbox")]
    Missing(String),
    #[error("sandbox: interface {0:?} already exists in the sandbox and is not netshim's; pick another --ifname")]
    Taken(String),
    #[error("sandbox: the driver named interface {0:?}, which its network did not create")]
    NotOurs(String),
    #[error("sandbox: the driver left the interface in the node namespace; this front-end needs it created in the sandbox")]
    NotInSandbox,
    #[error("sandbox: the driver's static route to {0} is outside the network's prefixes [{1}] (and not a connected host route)")]
    RouteOutsideGrant(IpNet, String),
    #[error("sandbox: {what}: {source}")]
    Kernel { what: String, source: KernelError },
}

fn k(what: impl Into<String>) -> impl FnOnce(KernelError) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Kernel { what, source }
}

/// After a crash mid-attach the container may hold a half-made interface of
/// this network: remove it so the attach can start clean. Anything else by
/// that name is the user's and is left alone.
pub fn clear_stale(
    kernel: &dyn Kernel,
    ns: NsId,
    ifname: &str,
    mark: &str,
) -> Result<(), SandboxError> {
    match kernel
        .link_by_name(ns, ifname)
        .map_err(k(format!("looking up {ifname}")))?
    {
        None => Ok(()),
        Some(l) if half_made_by(&l, mark) => {
            tracing::info!(
                ifname,
                "removing a half-made interface left by an interrupted attach"
            );
            kernel
                .delete_link(l.link_ref())
                .map_err(k(format!("removing stale {ifname}")))
        }
        Some(_) => Err(SandboxError::Taken(ifname.into())),
    }
}

/// Remove an interface netshim was making when it was interrupted: one
/// with this network's mark, or with no mark yet but born in netshim's
/// device group. Absent is fine; anything else by that name is left alone.
pub fn remove(kernel: &dyn Kernel, ns: NsId, ifname: &str, mark: &str) -> Result<(), SandboxError> {
    match kernel
        .link_by_name(ns, ifname)
        .map_err(k(format!("looking up {ifname}")))?
    {
        None => Ok(()),
        Some(l) if !half_made_by(&l, mark) => Ok(()),
        Some(l) => match kernel.delete_link(l.link_ref()) {
            Ok(()) | Err(KernelError::NotFound(_)) => Ok(()),
            Err(e) => Err(SandboxError::Kernel {
                what: format!("removing {ifname}"),
                source: e,
            }),
        },
    }
}

/// A link this network made, or one netshim was making (unmarked, in
/// netshim's device group: the process died before writing the mark).
fn half_made_by(link: &LinkInfo, mark: &str) -> bool {
    match link.alias.as_deref() {
        Some(a) => a == mark,
        None => link.group == LINK_GROUP,
    }
}

/// An endpoint with no IPv6 address gets no IPv6 on its interface, as
/// Docker does for IPv4-only networks (since 26.1): no link-local address,
/// no duplicate address detection, no router solicitations. Set before
/// the interface is up, so none of it ever starts. Besides being what
/// Docker users expect, it is what keeps an attach at a thousand sandboxes
/// near its cost at ten: each sandbox's IPv6 timers take the kernel's global
/// rtnl lock, which every attach needs (README, Performance).
fn ipv6_off(kernel: &dyn Kernel, link: LinkRef, ifname: &str) -> Result<(), SandboxError> {
    kernel
        .set_link(link, &LinkChange::Ipv6LinkLocal(false))
        .map_err(k(format!(
            "turning IPv6 off on {ifname} (an IPv4-only endpoint)"
        )))
}

/// The driver's static routes stay inside what the network may route:
/// its prefixes, or a connected host route (Calico's 169.254.1.1).
pub fn check_static_routes(join: &Join, grant: &[IpNet]) -> Result<(), SandboxError> {
    for r in &join.static_routes {
        let dst = r.destination;
        let host_route = dst.prefix_len() == dst.max_prefix_len() && r.via == RouteVia::Connected;
        if !host_route && !grant.iter().any(|g| g.contains(&dst)) {
            let list = grant
                .iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SandboxError::RouteOutsideGrant(dst, list));
        }
    }
    Ok(())
}

pub fn configure(
    kernel: &dyn Kernel,
    ns: NsId,
    mark: &str,
    join: &Join,
    ifname: &str,
    address: Option<IpNet>,
) -> Result<(), SandboxError> {
    if !join.in_sandbox {
        return Err(SandboxError::NotInSandbox);
    }
    let link = kernel
        .link_by_name(ns, &join.src_name)
        .map_err(k(format!("looking up {}", join.src_name)))?
        .ok_or_else(|| SandboxError::Missing(join.src_name.clone()))?;
    // The driver names the interface; only one its network made is taken.
    if link.alias.as_deref() != Some(mark) {
        return Err(SandboxError::NotOurs(join.src_name.clone()));
    }
    let link_ref = link.link_ref();
    if link.name != ifname {
        kernel
            .set_link(link_ref, &LinkChange::Name(ifname.into()))
            .map_err(k(format!("renaming {} to {ifname}", link.name)))?;
    }
    if let Some(a) = address {
        kernel
            .add_address(link_ref, a)
            .map_err(k(format!("adding {a} to {ifname}")))?;
    }
    if address.is_none_or(|a| a.addr().is_ipv4()) {
        ipv6_off(kernel, link_ref, ifname)?;
    }
    if let Some(lo) = kernel.link_by_name(ns, "lo").map_err(k("looking up lo"))? {
        if !lo.up {
            kernel
                .set_link(lo.link_ref(), &LinkChange::Up(true))
                .map_err(k("bringing lo up"))?;
        }
    }
    kernel
        .set_link(link_ref, &LinkChange::Up(true))
        .map_err(k(format!("bringing {ifname} up")))?;
    // Static routes first: a gateway outside the subnet (Calico's
    // 169.254.1.1) is reachable only through one of them.
    for r in &join.static_routes {
        let dst = r.destination;
        let mut route = Route::new(dst);
        route.oif = Some(link_ref.index);
        match r.via {
            RouteVia::Connected => route.scope = RouteScope::Link,
            RouteVia::NextHop(hop) => route.gateway = hop,
        }
        kernel
            .add_route(ns, &route, false)
            .map_err(k(format!("adding route {dst}")))?;
    }
    if let Some(gw) = join.gateway {
        let mut route = Route::new(if gw.is_ipv4() {
            "0.0.0.0/0".parse().unwrap()
        } else {
            "::/0".parse().unwrap()
        });
        route.gateway = Some(gw);
        route.oif = Some(link_ref.index);
        // One default route per sandbox: the first network with a gateway
        // provides it (Docker's gateway endpoint); later ones add none.
        match kernel.add_route(ns, &route, false) {
            Ok(()) => {}
            Err(KernelError::Exists(_)) => {
                tracing::debug!(ifname, "the sandbox has a default route already")
            }
            Err(e) => {
                return Err(SandboxError::Kernel {
                    what: format!("adding default route via {gw}"),
                    source: e,
                })
            }
        }
    }
    Ok(())
}
