//! Rust bindings of the guest ABI, one per WIT version. Every import is
//! trappable: recoverable failures come back to the guest as `types.error`
//! values, host invariants a guest violates become traps (see
//! [`crate::host::HostError`]).
//!
//! The 0.1 world's bindings sit at the root of this module. 0.2 imports
//! 0.1's interfaces at @0.1.0 except `netfilter`, so its bindings reuse the
//! 0.1 modules for those and generate only its own (`netfilter`, `node`,
//! `cluster`, `bridge`, `udp-tunnel`, `bgp`); the host implements each
//! interface once.

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0",
    world: "plugin",
    imports: { default: trappable },
    trappable_error_type: {
        "netshim:plugin/types.error" => crate::host::HostError,
    },
    with: {
        "netshim:plugin/link.link": crate::host::LinkHandle,
        "netshim:plugin/link.sandbox": crate::host::SandboxHandle,
    },
});

pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "netshim:plugin/plugin@0.2.0",
        imports: { default: trappable },
        trappable_error_type: {
            "netshim:plugin/types@0.1.0.error" => crate::host::HostError,
        },
        with: {
            "netshim:plugin/types@0.1.0": super::netshim::plugin::types,
            "netshim:plugin/link@0.1.0": super::netshim::plugin::link,
            "netshim:plugin/route@0.1.0": super::netshim::plugin::route,
            "netshim:plugin/sysctl@0.1.0": super::netshim::plugin::sysctl,
            "netshim:plugin/store@0.1.0": super::netshim::plugin::store,
            "netshim:plugin/log@0.1.0": super::netshim::plugin::log,
        },
    });
}
