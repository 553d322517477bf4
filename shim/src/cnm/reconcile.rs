//! Cluster drivers follow the cluster through `reconcile.handle`: the
//! node agent (`netshim daemon`) calls it at start, when a key of the
//! driver's subtree changes, and when the interval the driver asked for
//! is due. Each call is a transaction like any other: its kernel changes
//! and cluster writes land together or not at all.

use std::collections::BTreeMap;

use netshim_host_api::host::bgp::{self, BgpSpeaker};
use netshim_host_api::host::udp_tunnel::{self, UdpTunnel};
use netshim_host_api::store::Store;

use super::driver::{Event, Scope};
use super::{cluster_root, get_json, CnmResult, Core, Network};

/// A network that follows the cluster, and where its keys live.
#[derive(Debug, Clone)]
pub struct ClusterNetwork {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub root: String,
}

impl Core {
    /// The networks of this node whose driver connects across the cluster
    /// (global connectivity scope); none without a cluster store.
    pub fn cluster_networks(&self) -> CnmResult<Vec<ClusterNetwork>> {
        if self.cluster.is_none() {
            return Ok(Vec::new());
        }
        // The network records alone (no endpoint counts): this runs every
        // second in the agent.
        let nets: Vec<Network> = {
            let mut s = self.store.session()?;
            s.list(super::model::SPACE, "networks/")?
                .iter()
                .filter_map(|e| serde_json::from_slice(&e.value).ok())
                .collect()
        };
        let mut out = Vec::new();
        for net in nets {
            let Ok((_, connectivity)) = self.driver_capabilities(&net.driver) else {
                continue;
            };
            if connectivity != Scope::Global {
                continue;
            }
            let Ok(root) = cluster_root::root(&net.driver, &net.options) else {
                continue;
            };
            out.push(ClusterNetwork {
                id: net.id,
                name: net.name,
                driver: net.driver,
                root,
            });
        }
        Ok(out)
    }

    /// The UDP tunnels drivers configured, by network id, for the node
    /// agent's data path.
    pub fn udp_tunnels(&self) -> CnmResult<BTreeMap<String, UdpTunnel>> {
        self.host_records(udp_tunnel::SPACE, "tunnel")
    }

    /// The BGP speakers drivers configured, by network id, for the node
    /// agent's BIRD.
    pub fn bgp_speakers(&self) -> CnmResult<BTreeMap<String, BgpSpeaker>> {
        self.host_records(bgp::SPACE, "BGP speaker")
    }

    /// The records the host keeps per network in `space`, of networks that
    /// still exist; a record that does not parse is skipped.
    fn host_records<T: serde::de::DeserializeOwned>(
        &self,
        space: &str,
        what: &str,
    ) -> CnmResult<BTreeMap<String, T>> {
        let mut s = self.store.session()?;
        let mut out = BTreeMap::new();
        for e in s.list(space, "")? {
            if s.get(super::model::SPACE, &super::model::network_key(&e.key))?
                .is_none()
            {
                continue;
            }
            match serde_json::from_slice::<T>(&e.value) {
                Ok(t) => {
                    out.insert(e.key, t);
                }
                Err(err) => {
                    tracing::warn!(network = e.key, error = %err, "unreadable {what} record")
                }
            }
        }
        Ok(out)
    }

    /// The speakers the agent may run now: recorded under the operator's
    /// current route-reflector flag and on the underlay as it is now. A
    /// record that no longer holds (the flag was taken away, the underlay
    /// renumbered) is not run until the driver states it again.
    pub fn runnable_bgp_speakers(&self) -> CnmResult<BTreeMap<String, BgpSpeaker>> {
        let mut out = self.bgp_speakers()?;
        if out.is_empty() {
            return Ok(out);
        }
        // A failed read is an error, not "no subnets": it must not stop BIRD.
        let subnets = bgp::next_hops(&bgp::underlay_v4(self.kernel().as_ref(), self.underlay())?);
        out.retain(|id, sp| {
            let why = if sp.rr_cluster_id.is_some() && sp.rr_cluster_id != self.route_reflector {
                Some("the node is no longer a route reflector with that cluster id")
            } else if sp.next_hops != subnets {
                Some("the underlay's subnets changed since the driver set it")
            } else {
                None
            };
            if let Some(why) = why {
                tracing::warn!(network = id, "BGP speaker not run: {why}");
            }
            why.is_none()
        });
        Ok(out)
    }

    /// One reconcile of a network; the seconds until the driver wants the
    /// next one. A network removed meanwhile is `Ok(None)`.
    pub fn reconcile(&self, network_id: &str, event: Event) -> CnmResult<Option<u32>> {
        let mut s = self.store.session()?;
        let Some(net) = get_json::<Network>(&mut s, &super::model::network_key(network_id))? else {
            return Ok(None);
        };
        self.transaction_in(Box::new(s), &net.driver.clone(), "reconcile", |c| {
            c.reconcile(&net, &event)
        })
    }
}
