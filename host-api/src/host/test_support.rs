//! What the host's unit tests build on: a host call on the recording fake
//! with a store in a directory removed afterwards, and links made before
//! the call.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::Resource;

use super::{ownership_mark, Grant, HostState, LinkHandle};
use crate::kernel::fake::FakeKernel;
use crate::kernel::{Kernel, LinkInfo, LinkKind, NewLink, NsId};
use crate::store::LocalStore;

/// A directory under the system's temporary one, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("netshim-host-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host call `call` under `grant`, its store session in `dir`.
pub fn host(kernel: Arc<FakeKernel>, dir: &Scratch, grant: Grant, call: &str) -> HostState {
    let store = LocalStore::open(&dir.0).unwrap();
    HostState::new(kernel, Box::new(store.session().unwrap()), grant, call)
}

/// A link in the node namespace made before the call, with `network`'s
/// mark (none when `None`).
pub fn link(kernel: &FakeKernel, name: &str, kind: LinkKind, network: Option<&str>) -> LinkInfo {
    kernel
        .create_link(&NewLink {
            ns: NsId::NODE,
            name: name.into(),
            mtu: None,
            mac: None,
            alias: network.map(ownership_mark),
            up: true,
            kind,
        })
        .unwrap()
        .remove(0)
}

/// `l` as a handle of the call.
pub fn handle(host: &mut HostState, l: &LinkInfo, owned: bool) -> Resource<LinkHandle> {
    host.table
        .push(LinkHandle {
            link: l.link_ref(),
            name: l.name.clone(),
            owned,
        })
        .unwrap()
}
