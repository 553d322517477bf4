//! What every netshim network driver needs, so that a driver crate reads
//! like the behaviour it implements.
//!
//! The SDK owns the bindings of the `netshim:plugin@0.2.0` world: a driver
//! depends on this crate alone (no wit-bindgen, no copy of the WIT),
//! implements the three export traits and writes
//! `netshim_guest_sdk::export!(MyDriver);`.
//!
//! - [`host`]: the interfaces a driver may call (link, route, sysctl, cluster,
//!   netfilter, node, store, log, types); [`guest`]: the ones it implements.
//! - [`addr`]: IPv4 prefixes ([`ipnet::Ipv4Net`]) to and from WIT addresses.
//! - [`names`]: interface names, veth names and MACs derived from ids.
//! - [`options`]: a network's `-o` options, read and checked.
//! - [`ipam`]: a complete IPv4 IPAM kept in the driver's store.
//! - [`store_cas`]: the compare-and-swap loop every store update needs.
//! - [`links`]: a bridge with its address, a veth pair born in a sandbox,
//!   best-effort deletion.
//! - [`rules`]: builders of 0.2 netfilter ops.
//! - [`teardown`]: keep going past errors, report all of them.
//! - [`log`]: lines in the host's log.

/// The generated bindings, as wit-bindgen lays them out (two versions of
/// one package, so module names carry the version). [`host`] and [`guest`]
/// are shorter paths to the same items.
pub mod wit {
    wit_bindgen::generate!({
        path: "wit",
        world: "netshim:plugin/plugin@0.2.0",
        // The 0.1 interfaces 0.2 uses live in its deps/: generate them too.
        generate_all,
        // `export!` is called from the driver's crate, which has no
        // bindings of its own: the macro finds them here.
        pub_export_macro: true,
        default_bindings_module: "netshim_guest_sdk::wit",
    });
}

/// What a driver may call. Every value that comes back is checked by the
/// host; every value a driver passes is checked again by the host.
pub mod host {
    pub use crate::wit::netshim::plugin0_1_0::{link, log, route, store, sysctl, types};
    pub use crate::wit::netshim::plugin0_2_0::{bgp, bridge, cluster, netfilter, node, udp_tunnel};
}

/// What a driver implements: `driver::Guest`, `ipam::Guest` and
/// `reconcile::Guest`, then [`export!`].
pub mod guest {
    pub use crate::wit::exports::netshim::plugin0_1_0::{driver, ipam, reconcile};
}

pub use host::types::{Error, IpAddress, IpPrefix, MacAddress};
pub use ipnet::Ipv4Net;
/// `export!(MyDriver)`: makes `MyDriver`'s implementations of the
/// [`guest`] traits the component's exports.
pub use wit::export;

pub mod addr;
pub mod ipam;
pub mod links;
pub mod log;
pub mod names;
pub mod options;
pub mod rules;
pub mod store_cas;
pub mod teardown;
