//! Rust bindings of the guest ABI (wit/v0.1.0). Every import is trappable:
//! recoverable failures come back to the guest as `types.error` values, host
//! invariants a guest violates become traps (see [`crate::host::HostError`]).

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
