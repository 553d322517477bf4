//! The IP pool (Calico's `IPPool` resource, kept at
//! `resources/v3/projectcalico.org/ippools/<name>` under `/calico`): the
//! CIDR blocks are carved from, the block size, encapsulation and
//! `natOutgoing`. The first node to create the network writes it from its
//! options; every other node reads it, so the cluster agrees.

use ipnet::Ipv4Net;
use netshim_guest_sdk::Error;
use serde::{Deserialize, Serialize};

pub const DEFAULT_POOL: &str = "192.168.0.0/16";
pub const DEFAULT_NAME: &str = "default-ipv4-ippool";

/// When traffic between nodes is encapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Never,
    Always,
    CrossSubnet,
}

impl Mode {
    fn parse(option: &str, v: &str) -> Result<Mode, Error> {
        match v {
            "Never" | "never" => Ok(Mode::Never),
            "Always" | "always" => Ok(Mode::Always),
            "CrossSubnet" | "cross-subnet" => Ok(Mode::CrossSubnet),
            _ => Err(Error::Invalid(format!(
                "option {option}: {v:?}; use Never, Always or CrossSubnet"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    pub cidr: Ipv4Net,
    pub block_size: u8,
    pub vxlan_mode: Mode,
    pub ipip_mode: Mode,
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
}

/// The resource as Calico's v3 API writes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IpPool {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PoolSpec,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
}

pub fn key(name: &str) -> String {
    format!("resources/v3/projectcalico.org/ippools/{name}")
}

use netshim_guest_sdk::options::get as opt;

/// The options a calico network accepts (`-o key=value`).
pub const OPTIONS: [&str; 7] = [
    "pool",
    "block-size",
    "vxlan-mode",
    "ipip-mode",
    "nat-outgoing",
    "max-blocks-per-host",
    "etcd-prefix",
];

/// The pool the options describe (`cidr`: `--subnet`, if given).
pub fn from_options(
    options: &[(String, String)],
    cidr: Option<Ipv4Net>,
) -> Result<PoolSpec, Error> {
    netshim_guest_sdk::options::check_known(options, &OPTIONS, "calico")?;
    let cidr = match (cidr, opt(options, "pool")) {
        (Some(c), _) => c,
        (None, Some(p)) => p
            .parse()
            .map_err(|_| Error::Invalid(format!("option pool: {p:?} is not an IPv4 CIDR")))?,
        (None, None) => DEFAULT_POOL.parse().expect("literal"),
    };
    let block_size = match opt(options, "block-size") {
        Some(v) => v
            .parse::<u8>()
            .map_err(|_| Error::Invalid(format!("option block-size: {v:?} is not a number")))?,
        None => 26,
    };
    let spec = PoolSpec {
        cidr: cidr.trunc(),
        block_size,
        vxlan_mode: opt(options, "vxlan-mode")
            .map_or(Ok(Mode::Always), |v| Mode::parse("vxlan-mode", v))?,
        ipip_mode: opt(options, "ipip-mode")
            .map_or(Ok(Mode::Never), |v| Mode::parse("ipip-mode", v))?,
        nat_outgoing: match opt(options, "nat-outgoing") {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(Error::Invalid(format!(
                    "option nat-outgoing: {v:?}; use true or false"
                )))
            }
        },
        disabled: false,
    };
    check(&spec)?;
    Ok(spec)
}

/// Calico's rules for a pool (and what this host can do).
pub fn check(p: &PoolSpec) -> Result<(), Error> {
    if !(20..=32).contains(&p.block_size) || p.block_size < p.cidr.prefix_len() {
        return Err(Error::Invalid(format!(
            "block size /{} must be /20 to /32 and inside the pool {}",
            p.block_size, p.cidr
        )));
    }
    let link_local: Ipv4Net = "169.254.0.0/16".parse().expect("literal");
    if netshim_guest_sdk::addr::overlaps(&p.cidr, &link_local) {
        return Err(Error::Invalid(format!(
            "pool {} overlaps 169.254.0.0/16",
            p.cidr
        )));
    }
    if p.vxlan_mode != Mode::Never && p.ipip_mode != Mode::Never {
        return Err(Error::Invalid(
            "vxlan-mode and ipip-mode cannot both be on".into(),
        ));
    }
    if p.ipip_mode != Mode::Never {
        return Err(Error::Unsupported(
            "ipip-mode: IPIP encapsulation is not available from this driver yet (and this machine's kernel has no ipip module); use vxlan-mode Always or CrossSubnet, or Never for routes by BGP".into(),
        ));
    }
    Ok(())
}

pub fn resource(spec: &PoolSpec) -> IpPool {
    IpPool {
        api_version: "projectcalico.org/v3".into(),
        kind: "IPPool".into(),
        metadata: Metadata {
            name: DEFAULT_NAME.into(),
        },
        spec: spec.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_calicos() {
        let p = from_options(&[], None).unwrap();
        assert_eq!(p.cidr.to_string(), "192.168.0.0/16");
        assert_eq!(
            (p.block_size, p.vxlan_mode, p.nat_outgoing),
            (26, Mode::Always, true)
        );
        let json = serde_json::to_string(&resource(&p)).unwrap();
        assert!(
            json.contains(r#""blockSize":26"#) && json.contains(r#""vxlanMode":"Always""#),
            "{json}"
        );
    }

    #[test]
    fn what_cannot_be_is_refused_with_a_reason() {
        for (opts, why) in [
            (o(&[("block-size", "19")]), "block size"),
            (o(&[("pool", "169.254.0.0/16")]), "169.254"),
            (
                o(&[("ipip-mode", "Always"), ("vxlan-mode", "Never")]),
                "IPIP",
            ),
            (o(&[("ipip-mode", "Always")]), "both"),
            (o(&[("colour", "x")]), "unknown option"),
            (o(&[("nat-outgoing", "maybe")]), "nat-outgoing"),
        ] {
            let e = format!("{:?}", from_options(&opts, None).unwrap_err());
            assert!(e.contains(why), "{why}: {e}");
        }
        // Encapsulation Never is BGP mode, and allowed.
        assert!(from_options(&o(&[("vxlan-mode", "Never")]), None).is_ok());
    }
}
