//! Flannel's data model: the network configuration at `<prefix>/config`,
//! the leases at `<prefix>/subnets/<ip>-<len>`, in flannel's own JSON, so
//! that `etcdctl` habits and leases written by hand carry over. Values
//! from the cluster store are hostile until parsed here: anything that
//! does not parse or lies outside the network is refused with a reason.

use std::net::Ipv4Addr;

use netshim_guest_sdk::{Error, Ipv4Net};
use serde::{Deserialize, Serialize};

pub const CONFIG_KEY: &str = "config";
pub const SUBNETS: &str = "subnets/";
/// flannel's `subnetTTL`.
pub const DEFAULT_TTL: u32 = 24 * 3600;
/// Subnets walked at most when looking for a free one.
const MAX_WALK: u32 = 1 << 16;

/// Which data path carries traffic between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    #[serde(rename = "vxlan")]
    Vxlan,
    #[serde(rename = "host-gw")]
    HostGw,
    #[serde(rename = "udp")]
    Udp,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Backend, Error> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            "udp" => Ok(Backend::Udp),
            other => Err(Error::Invalid(format!(
                "unknown flannel backend {other:?}; use vxlan, host-gw or udp"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::Udp => "udp",
        }
    }

    /// What leases of this backend say in `BackendType`: flannel's udp
    /// backend leaves it empty.
    pub fn lease_type(self) -> &'static str {
        match self {
            Backend::Udp => "",
            other => other.as_str(),
        }
    }

    /// Bytes of encapsulation per packet (flannel: VXLAN 50, host-gw 0,
    /// udp 28: an IP and a UDP header).
    pub fn overhead(self) -> u32 {
        match self {
            Backend::Vxlan => 50,
            Backend::HostGw => 0,
            Backend::Udp => 28,
        }
    }
}

/// `<prefix>/config` as flannel writes it (unknown fields ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    network: Option<String>,
    subnet_len: Option<u8>,
    subnet_min: Option<String>,
    subnet_max: Option<String>,
    backend: Option<RawBackend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawBackend {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "VNI")]
    vni: Option<u32>,
    port: Option<u16>,
    direct_routing: Option<bool>,
}

/// What a node needs of the cluster's configuration, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub backend: Backend,
    pub vni: u32,
    pub port: Option<u16>,
    pub direct_routing: bool,
    /// Seconds a lease lives unless renewed.
    pub ttl: u32,
    /// The node's identity in the cluster (flannel's `--public-ip`).
    pub public_ip: Ipv4Addr,
}

/// The example in the error for a missing configuration.
pub fn config_example(root: &str) -> String {
    format!(
        "etcdctl put {root}/{CONFIG_KEY} '{{\"Network\": \"10.244.0.0/16\", \"Backend\": {{\"Type\": \"vxlan\"}}}}'"
    )
}

use netshim_guest_sdk::options::get as opt;

/// The options a flannel network accepts (`-o key=value`).
pub const OPTIONS: [&str; 7] = [
    "bridge",
    "network",
    "backend",
    "subnet-len",
    "lease-ttl",
    "public-ip",
    "etcd-prefix",
];

/// Settings from the cluster's configuration (if any) and the network's
/// options, which win. `config`: the raw value at `<root>/config`.
pub fn settings(
    config: Option<&[u8]>,
    options: &[(String, String)],
    root: &str,
    public_ip: Option<Ipv4Addr>,
) -> Result<Settings, Error> {
    netshim_guest_sdk::options::check_known(options, &OPTIONS, "flannel")?;
    let raw: RawConfig = match config {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
            Error::Invalid(format!("{root}/{CONFIG_KEY} is not flannel's network JSON: {e}"))
        })?,
        None if opt(options, "network").is_some() => RawConfig::default(),
        None => {
            return Err(Error::NotFound(format!(
                "no flannel configuration at {root}/{CONFIG_KEY}: write it first, e.g. {}, or give -o network=10.244.0.0/16",
                config_example(root)
            )))
        }
    };
    let network_text = opt(options, "network")
        .map(str::to_string)
        .or(raw.network)
        .ok_or_else(|| Error::Invalid(format!("{root}/{CONFIG_KEY} has no \"Network\"")))?;
    let network: Ipv4Net = network_text
        .parse()
        .map_err(|_| Error::Invalid(format!("Network {network_text:?} is not an IPv4 prefix")))?;
    let network = network.trunc();
    if network.prefix_len() > 28 {
        return Err(Error::Invalid(format!(
            "Network {network} is smaller than a /28"
        )));
    }
    let subnet_len = match opt(options, "subnet-len") {
        Some(v) => v
            .parse::<u8>()
            .map_err(|_| Error::Invalid(format!("option subnet-len: {v:?} is not a number")))?,
        None => raw.subnet_len.unwrap_or(if network.prefix_len() <= 22 {
            24
        } else {
            network.prefix_len() + 2
        }),
    };
    if subnet_len > 30 || subnet_len < network.prefix_len() + 2 {
        return Err(Error::Invalid(format!(
            "SubnetLen {subnet_len} must lie between /{} and /30 for Network {network}",
            network.prefix_len() + 2
        )));
    }
    let step = 1u32 << (32 - subnet_len);
    let first = u32::from(network.network());
    let last = u32::from(network.broadcast()) - (step - 1);
    let bound = |v: Option<String>, default: u32, what: &str| -> Result<Ipv4Addr, Error> {
        let Some(text) = v else {
            return Ok(Ipv4Addr::from(default));
        };
        let a: Ipv4Addr = text
            .parse()
            .map_err(|_| Error::Invalid(format!("{what} {text:?} is not an IPv4 address")))?;
        if !network.contains(&a) || (u32::from(a) - first) % step != 0 {
            return Err(Error::Invalid(format!(
                "{what} {a} is not a /{subnet_len} boundary inside {network}"
            )));
        }
        Ok(a)
    };
    let subnet_min = bound(raw.subnet_min, first + step, "SubnetMin")?;
    let subnet_max = bound(raw.subnet_max, last, "SubnetMax")?;
    if subnet_min > subnet_max {
        return Err(Error::Invalid(format!(
            "SubnetMin {subnet_min} is above SubnetMax {subnet_max}"
        )));
    }
    let raw_backend = raw.backend.unwrap_or_default();
    let backend = match opt(options, "backend") {
        Some(b) => Backend::parse(b)?,
        None => Backend::parse(raw_backend.kind.as_deref().unwrap_or("vxlan"))?,
    };
    let vni = raw_backend.vni.unwrap_or(1);
    if vni == 0 || vni >= 1 << 24 {
        return Err(Error::Invalid(format!(
            "Backend VNI {vni} is not 1 to 16777215"
        )));
    }
    let ttl = match opt(options, "lease-ttl") {
        Some(v) => match v.parse::<u32>() {
            Ok(t) if (5..=7 * 24 * 3600).contains(&t) => t,
            _ => {
                return Err(Error::Invalid(format!(
                    "option lease-ttl: {v:?} is not 5 to 604800 seconds"
                )))
            }
        },
        None => DEFAULT_TTL,
    };
    let public_ip = match opt(options, "public-ip") {
        Some(v) => v.parse().map_err(|_| {
            Error::Invalid(format!("option public-ip: {v:?} is not an IPv4 address"))
        })?,
        None => public_ip.ok_or_else(|| {
            Error::Invalid(
                "this node has no underlay address (no default route): give -o public-ip=ADDRESS"
                    .into(),
            )
        })?,
    };
    Ok(Settings {
        network,
        subnet_len,
        subnet_min,
        subnet_max,
        backend,
        vni,
        port: raw_backend.port.filter(|p| *p != 0).or(match backend {
            Backend::Udp => Some(8285),
            _ => None,
        }),
        direct_routing: raw_backend.direct_routing.unwrap_or(false),
        ttl,
        public_ip,
    })
}

impl Settings {
    /// Every subnet leases may take, in order (bounded).
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let step = 1u32 << (32 - self.subnet_len);
        let min = u32::from(self.subnet_min);
        let count = ((u32::from(self.subnet_max) - min) / step + 1).min(MAX_WALK);
        (0..count)
            .filter_map(move |i| Ipv4Net::new(Ipv4Addr::from(min + i * step), self.subnet_len).ok())
    }

    /// Whether a lease's subnet is one this configuration hands out.
    pub fn fits(&self, subnet: &Ipv4Net) -> bool {
        subnet.prefix_len() == self.subnet_len
            && self.network.contains(subnet)
            && subnet.network() >= self.subnet_min
            && subnet.network() <= self.subnet_max
    }

    /// Seconds before expiry at which a lease is renewed (flannel: an
    /// hour of a day).
    pub fn renew_margin(&self) -> u32 {
        (self.ttl / 2).min(3600)
    }
}

/// `subnets/10.244.1.0-24` ↔ 10.244.1.0/24.
pub fn subnet_key(subnet: &Ipv4Net) -> String {
    format!("{SUBNETS}{}-{}", subnet.network(), subnet.prefix_len())
}

pub fn parse_subnet_key(key: &str) -> Option<Ipv4Net> {
    let rest = key.strip_prefix(SUBNETS)?;
    // A dual-stack key is `<v4>-<len>&<v6>-<len>`: the IPv4 part counts.
    let v4 = rest.split('&').next()?;
    let (ip, len) = v4.split_once('-')?;
    let net = Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net == net.trunc()).then_some(net)
}

/// flannel's `LeaseAttrs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: String,
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<String>,
    /// The udp backend leaves it out.
    #[serde(
        rename = "BackendType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_type: String,
    #[serde(rename = "BackendData", default)]
    pub backend_data: Option<BackendData>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendData {
    #[serde(rename = "VNI", default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(rename = "VtepMAC", default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
}

/// A remote node as its lease describes it, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub vtep_mac: Option<[u8; 6]>,
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

pub fn show_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A lease read from the store: the peer it describes, or why it is
/// ignored.
pub fn parse_lease(settings: &Settings, key: &str, value: &[u8]) -> Result<Peer, String> {
    let subnet = parse_subnet_key(key).ok_or_else(|| format!("{key}: not a subnet key"))?;
    // Only a subnet this configuration hands out: a lease for part of
    // another node's subnet (a longer prefix) must not take its traffic.
    if !settings.fits(&subnet) {
        return Err(format!(
            "{key}: not a /{} of Network {} between {} and {}",
            settings.subnet_len, settings.network, settings.subnet_min, settings.subnet_max
        ));
    }
    let attrs: LeaseAttrs = serde_json::from_slice(value)
        .map_err(|e| format!("{key}: not flannel's lease JSON: {e}"))?;
    let public_ip: Ipv4Addr = attrs.public_ip.parse().map_err(|_| {
        format!(
            "{key}: PublicIP {:?} is not an IPv4 address",
            attrs.public_ip
        )
    })?;
    if attrs.backend_type != settings.backend.lease_type() {
        return Err(format!(
            "{key}: backend {:?}, this network uses {}",
            attrs.backend_type,
            settings.backend.as_str()
        ));
    }
    let vtep_mac = match settings.backend {
        Backend::Vxlan => {
            let text = attrs
                .backend_data
                .as_ref()
                .and_then(|d| d.vtep_mac.as_deref())
                .ok_or_else(|| format!("{key}: a vxlan lease without BackendData.VtepMAC"))?;
            Some(parse_mac(text).ok_or_else(|| format!("{key}: VtepMAC {text:?} is not a MAC"))?)
        }
        Backend::HostGw | Backend::Udp => None,
    };
    Ok(Peer {
        subnet,
        public_ip,
        vtep_mac,
    })
}

/// The lease value this node writes.
pub fn lease_value(settings: &Settings, vtep_mac: Option<[u8; 6]>) -> Vec<u8> {
    let attrs = LeaseAttrs {
        public_ip: settings.public_ip.to_string(),
        public_ipv6: None,
        backend_type: settings.backend.lease_type().to_string(),
        backend_data: vtep_mac.map(|m| BackendData {
            vni: Some(settings.vni),
            vtep_mac: Some(show_mac(m)),
        }),
    };
    serde_json::to_vec(&attrs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ip() -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(192, 0, 2, 11))
    }

    #[test]
    fn flannel_defaults() {
        let s = settings(
            Some(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#),
            &[],
            "/r",
            ip(),
        )
        .unwrap();
        assert_eq!(s.subnet_len, 24);
        assert_eq!(s.subnet_min, Ipv4Addr::new(10, 5, 1, 0));
        assert_eq!(s.subnet_max, Ipv4Addr::new(10, 5, 255, 0));
        assert_eq!(
            (s.backend, s.vni, s.port, s.ttl),
            (Backend::Vxlan, 1, None, DEFAULT_TTL)
        );
        assert_eq!(s.subnets().count(), 255);
        let s = settings(Some(br#"{"Network":"10.5.0.0/24"}"#), &[], "/r", ip()).unwrap();
        assert_eq!(s.subnet_len, 26);
    }

    #[test]
    fn options_win_and_bad_values_say_why() {
        let s = settings(
            Some(br#"{"Network":"10.5.0.0/16"}"#),
            &opts(&[
                ("backend", "host-gw"),
                ("network", "10.9.0.0/16"),
                ("lease-ttl", "30"),
            ]),
            "/r",
            ip(),
        )
        .unwrap();
        assert_eq!(
            (s.backend, s.network.to_string(), s.ttl),
            (Backend::HostGw, "10.9.0.0/16".into(), 30)
        );
        let e = settings(None, &[], "/coreos.com/network", ip()).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("etcdctl put /coreos.com/network/config")),
            "{e:?}"
        );
        for (cfg, what) in [
            (
                &br#"{"Network":"10.5.0.0/16","SubnetLen":31}"#[..],
                "SubnetLen",
            ),
            (
                br#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.7"}"#,
                "SubnetMin",
            ),
            (br#"{"Network":"10.5.0.0/30"}"#, "/28"),
            (br#"{"Network":"x"}"#, "Network"),
            (
                br#"{"Network":"10.5.0.0/16","Backend":{"Type":"ipsec"}}"#,
                "ipsec",
            ),
            (br#"not json"#, "JSON"),
        ] {
            let e = settings(Some(cfg), &[], "/r", ip()).unwrap_err();
            assert!(format!("{e:?}").contains(what), "{what}: {e:?}");
        }
        assert!(settings(
            Some(br#"{"Network":"10.5.0.0/16"}"#),
            &opts(&[("colour", "x")]),
            "/r",
            ip()
        )
        .is_err());
    }

    #[test]
    fn leases_in_flannel_format() {
        let s = settings(Some(br#"{"Network":"10.5.0.0/16"}"#), &[], "/r", ip()).unwrap();
        let v = lease_value(&s, Some([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]));
        assert_eq!(
            String::from_utf8(v.clone()).unwrap(),
            r#"{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        );
        let p = parse_lease(&s, "subnets/10.5.34.0-24", &v).unwrap();
        assert_eq!(p.subnet.to_string(), "10.5.34.0/24");
        // The reference's own example value, written by flannel itself.
        let theirs = br#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;
        assert_eq!(
            parse_lease(&s, "subnets/10.5.2.0-24", theirs)
                .unwrap()
                .public_ip,
            Ipv4Addr::new(192, 168, 64, 3)
        );
        for (key, value) in [
            ("subnets/10.6.1.0-24", &v[..]),
            ("subnets/10.5.1.1-24", &v[..]),
            (
                "subnets/10.5.1.0-24",
                br#"{"PublicIP":"x","BackendType":"vxlan"}"#,
            ),
            (
                "subnets/10.5.1.0-24",
                br#"{"PublicIP":"192.0.2.1","BackendType":"vxlan"}"#,
            ),
            (
                "subnets/10.5.1.0-24",
                br#"{"PublicIP":"192.0.2.1","BackendType":"host-gw"}"#,
            ),
        ] {
            assert!(parse_lease(&s, key, value).is_err(), "{key}");
        }
        assert_eq!(
            parse_subnet_key("subnets/10.5.34.0-24&fc00::-64")
                .unwrap()
                .to_string(),
            "10.5.34.0/24"
        );
    }
}
