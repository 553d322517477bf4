//! The link work drivers repeat: a bridge that is up with its gateway
//! address, a veth pair whose container end is born in the sandbox and
//! whose node end is a port of a bridge, and deletion that treats "already
//! gone" as done.

use crate::host::bridge;
use crate::host::link::{self, BridgeSpec, Link, VethSpec};
use crate::teardown::Teardown;
use crate::{Error, IpPrefix};

/// Create the bridge, give it `address` (the gateway, if any) and bring it
/// up. `multicast_snooping` is set before any port joins it (`None`: the
/// kernel's default, on). On error the host rolls back what the call
/// made, so a half-made bridge does not stay behind.
pub fn bridge_up(
    spec: &BridgeSpec,
    address: Option<IpPrefix>,
    multicast_snooping: Option<bool>,
) -> Result<Link, Error> {
    let br = link::create_bridge(spec)?;
    if let Some(on) = multicast_snooping {
        bridge::set_multicast_snooping(&br, on)?;
    }
    if let Some(a) = address {
        br.add_address(a)?;
    }
    br.set_up(true)?;
    Ok(br)
}

/// Create a veth pair (the peer inside `spec.peer_sandbox` when there is
/// one), make its node end a port of `bridge` and bring it up. Returns the
/// node end; the container end is the host's to configure after `join`.
pub fn veth_on_bridge(spec: &VethSpec<'_>, bridge: &Link) -> Result<Link, Error> {
    let (node_end, _container_end) = link::create_veth(spec)?;
    node_end.set_master(bridge)?;
    node_end.set_up(true)?;
    Ok(node_end)
}

/// Delete the link `name` this network owns, recording failures in `td`
/// under `what` (e.g. "bridge br0"). A link that is not there is done:
/// deleting a sandbox takes its veth pair along.
pub fn delete_owned(name: &str, what: &str, td: &mut Teardown) {
    match link::open_owned(name) {
        Ok(l) => td.gone_ok(format!("deleting {what}"), link::delete(l)),
        Err(Error::NotFound(_)) => {}
        Err(e) => td.failed(format!("opening {what}"), &e),
    }
}
