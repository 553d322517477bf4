//! What one guest call changed, so that a failed call (error result, trap,
//! deadline) can be undone: replayed backwards, past errors, and reported.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::kernel::{Kernel, KernelError, LinkChange, LinkRef, Mac, NsId, Route};
use crate::model::nft::Op as NftOp;
use crate::store::{Condition, Entry, Store};

#[derive(Debug, Clone)]
pub enum Undo {
    DeleteLink {
        link: LinkRef,
        name: String,
    },
    DelAddress {
        link: LinkRef,
        address: IpNet,
    },
    AddAddress {
        link: LinkRef,
        address: IpNet,
    },
    DelRoute {
        ns: NsId,
        route: Route,
    },
    AddRoute {
        ns: NsId,
        route: Route,
    },
    /// Put back the route a `replace` overwrote.
    RestoreRoute {
        ns: NsId,
        route: Route,
    },
    SetLink {
        link: LinkRef,
        change: LinkChange,
    },
    Sysctl {
        ns: NsId,
        path: String,
        value: String,
    },
    DelNeighbour {
        link: LinkRef,
        address: IpAddr,
    },
    DelFdb {
        link: LinkRef,
        mac: Mac,
        destination: Option<IpAddr>,
    },
    Nft {
        ns: NsId,
        table: String,
        ops: Vec<NftOp>,
    },
    /// Restore a store key to what it was (None: it did not exist).
    Kv {
        space: String,
        key: String,
        old: Option<Entry>,
    },
}

#[derive(Debug, Default)]
pub struct Journal {
    entries: Vec<Undo>,
    /// Changes that cannot be undone (a deleted link), named for the report.
    irreversible: Vec<String>,
}

impl Journal {
    pub fn record(&mut self, undo: Undo) {
        self.entries.push(undo);
    }

    pub fn irreversible(&mut self, what: String) {
        self.irreversible.push(what);
    }

    /// Undo everything, newest first. Keeps going past failures and returns
    /// them all; a missing object counts as undone (something else already
    /// removed it, e.g. the sandbox went away with its end of a veth).
    pub fn rollback(self, kernel: &dyn Kernel, store: &mut dyn Store) -> Vec<String> {
        let mut errors: Vec<String> = self
            .irreversible
            .iter()
            .map(|w| format!("cannot undo: {w}"))
            .collect();
        for undo in self.entries.into_iter().rev() {
            let what = format!("{undo:?}");
            let result = match undo {
                Undo::DeleteLink { link, .. } => kernel.delete_link(link),
                Undo::DelAddress { link, address } => kernel.del_address(link, address),
                Undo::AddAddress { link, address } => kernel.add_address(link, address),
                Undo::DelRoute { ns, route } => kernel.del_route(ns, &route),
                Undo::AddRoute { ns, route } => kernel.add_route(ns, &route, false),
                Undo::RestoreRoute { ns, route } => kernel.add_route(ns, &route, true),
                Undo::SetLink { link, change } => kernel.set_link(link, &change),
                Undo::Sysctl { ns, path, value } => kernel.sysctl_set(ns, &path, &value),
                Undo::DelNeighbour { link, address } => kernel.del_neighbour(link, address),
                Undo::DelFdb {
                    link,
                    mac,
                    destination,
                } => kernel.del_fdb(link, mac, destination),
                Undo::Nft { ns, table, ops } => kernel.nft_apply(ns, &table, &ops),
                Undo::Kv { space, key, old } => {
                    let r = match old {
                        Some(e) => store
                            .put(&space, &key, &e.value, Condition::None, None)
                            .map(|_| ()),
                        None => store.delete(&space, &key, Condition::None).map(|_| ()),
                    };
                    r.map_err(|e| KernelError::Other(e.to_string()))
                }
            };
            match result {
                Ok(()) | Err(KernelError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(undo = %what, error = %e, "rollback step failed");
                    errors.push(format!("{what}: {e}"));
                }
            }
        }
        errors
    }
}
