//! The OCI runtime hook front-end: `createRuntime` attaches the container
//! to the networks its annotations ask for, `poststop` detaches it. It reads
//! the state JSON on stdin and the bundle's config.json, needs no daemon and
//! no environment, and is idempotent: running it again, or after it was
//! killed halfway, converges on the same state.

pub mod install;
pub mod spec;

use oci_spec::runtime::ContainerState;

pub use spec::read_state;

use crate::cnm::{Attach, CnmError, Core, CreateNetwork, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Cnm(#[from] CnmError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// createRuntime (and the deprecated prestart): attach.
    Create,
    /// poststop: detach.
    Poststop,
}

impl Stage {
    /// The stage named, or else the one the container's status tells.
    pub fn parse(name: Option<&str>, status: Option<ContainerState>) -> Result<Stage, OciError> {
        let name = match (name, status) {
            (Some(name), _) => name,
            (None, Some(ContainerState::Creating | ContainerState::Created)) => "createRuntime",
            (None, Some(ContainerState::Stopped)) => "poststop",
            (None, Some(other)) => {
                return Err(OciError::Input(format!(
                    "no hook stage given and the container status {:?} does not tell; run `netshim oci-hook createRuntime` or `netshim oci-hook poststop`",
                    other.to_string()
                )))
            }
            (None, None) => {
                return Err(OciError::Input(
                    "no hook stage given and the OCI state has no status to tell it; run `netshim oci-hook createRuntime` or `netshim oci-hook poststop`".into(),
                ))
            }
        };
        match name {
            "createRuntime" | "prestart" => Ok(Stage::Create),
            "poststop" => Ok(Stage::Poststop),
            other => Err(OciError::Input(format!("unsupported hook stage {other:?}: netshim runs as createRuntime (or prestart) and poststop"))),
        }
    }
}

/// What the hook did, for the log.
pub enum Outcome {
    Attached(Vec<Endpoint>),
    Detached(Vec<Endpoint>),
}

pub fn run(core: &Core, stage_name: Option<&str>, state: spec::State) -> Result<Outcome, OciError> {
    match Stage::parse(stage_name, state.status)? {
        Stage::Poststop => {
            Ok(Outcome::Detached(core.teardown_despite_damage(|| {
                core.detach_container(state.id())
            })?))
        }
        Stage::Create => create(core, &state).map(Outcome::Attached),
    }
}

fn create(core: &Core, state: &spec::State) -> Result<Vec<Endpoint>, OciError> {
    let config = spec::Bundle::load(&state.bundle())?;
    let request = spec::request(&config.annotations(state))?;
    let netns = match config.netns(state) {
        Ok(n) => n,
        // A hooks.d file may apply netshim to every container: one that
        // asked for nothing and uses the host's network is left alone.
        Err(_) if request.default && config.shares_host_network() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if request.default {
        ensure_default_network(core)?;
    }
    let names = spec::ifnames(&request.ifname, request.networks.len());
    let mut attached = Vec::new();
    for (i, network) in request.networks.iter().enumerate() {
        let req = Attach {
            ip: request.ips.get(network).copied(),
            ifname: names[i].clone(),
            container: Some(state.id().to_string()),
            ports: if i == 0 {
                request.ports.clone()
            } else {
                Vec::new()
            },
            ..Attach::new(network.clone(), netns.clone())
        };
        match core.attach(req) {
            Ok(ep) => attached.push(ep),
            Err(e) => {
                // Leave nothing: the runtime aborts the container on our error.
                if let Err(undo) = core.detach_container(state.id()) {
                    tracing::error!(error = %undo, "undoing the networks attached before the failure");
                }
                return Err(OciError::Input(format!(
                    "container {}: network {network}: {e}",
                    state.id()
                )));
            }
        }
    }
    Ok(attached)
}

/// The default network exists from the first container that needs it, like
/// Docker's `bridge` or Podman's `podman`: a bridge on a free private subnet.
fn ensure_default_network(core: &Core) -> Result<(), OciError> {
    let req = CreateNetwork {
        name: spec::DEFAULT_NETWORK.into(),
        driver: "bridge".into(),
        subnet: None,
        gateway: None,
        internal: false,
        options: Vec::new(),
    };
    match core.network_create(req) {
        Ok(_) | Err(CnmError::Exists(_)) => Ok(()),
        Err(e) => Err(OciError::Input(format!(
            "creating the default network {:?}: {e}",
            spec::DEFAULT_NETWORK
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_stage_does_not_depend_on_the_status() {
        use ContainerState::*;
        assert_eq!(Stage::parse(None, Some(Creating)).unwrap(), Stage::Create);
        assert_eq!(Stage::parse(None, Some(Created)).unwrap(), Stage::Create);
        assert_eq!(Stage::parse(None, Some(Stopped)).unwrap(), Stage::Poststop);
        assert!(Stage::parse(None, Some(Running)).is_err());
        assert!(Stage::parse(None, None).is_err());
        assert_eq!(
            Stage::parse(Some("poststop"), Some(Running)).unwrap(),
            Stage::Poststop
        );
        assert_eq!(Stage::parse(Some("prestart"), None).unwrap(), Stage::Create);
        assert!(Stage::parse(Some("poststart"), Some(Running)).is_err());
    }
}
