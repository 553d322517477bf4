//! Docker's remote NetworkDriver and IpamDriver protocols (libnetwork's
//! `drivers/remote` and `ipams/remote`), mapped onto the CNM core one step
//! per request. Field names are dockerd's; errors are HTTP 500 with
//! `{"Err": …}`, which both of dockerd's proxies understand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cnm::{CnmError, Core, Network, Pool, PortMapping, RouteVia};

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

fn ok(body: Value) -> Reply {
    Reply { status: 200, body }
}

fn err(status: u16, message: impl Into<String>) -> Reply {
    Reply {
        status,
        body: json!({ "Err": message.into() }),
    }
}

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("malformed request body for {method}: {message}")]
    Body { method: String, message: String },
    #[error("{0}")]
    Cnm(#[from] CnmError),
    #[error("{0}")]
    Invalid(String),
}

type ApiResult = Result<Value, ApiError>;

fn body<T: DeserializeOwned + Default>(method: &str, raw: &[u8]) -> Result<T, ApiError> {
    // dockerd sends no body at all for argument-less calls.
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(raw).map_err(|e| ApiError::Body {
        method: method.into(),
        message: e.to_string(),
    })
}

fn cidr(what: &str, s: &str) -> Result<IpNet, ApiError> {
    s.parse().map_err(|_| {
        ApiError::Invalid(format!(
            "{what} {s:?} is not an address with a prefix length"
        ))
    })
}

fn nonempty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RequestPool {
    address_space: String,
    pool: String,
    sub_pool: String,
    options: BTreeMap<String, String>,
    #[serde(rename = "V6")]
    v6: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PoolRef {
    #[serde(rename = "PoolID")]
    pool_id: String,
    address: String,
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamData {
    pool: String,
    gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data")]
    ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data")]
    ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct EndpointRef {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    interface: Option<Interface>,
    sandbox_key: String,
    options: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Interface {
    address: String,
    #[serde(rename = "AddressIPv6")]
    address_ipv6: String,
    mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBinding {
    proto: u8,
    port: u16,
    #[serde(rename = "HostIP")]
    host_ip: String,
    host_port: u16,
    host_port_end: u16,
}

fn need(method: &str, what: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() {
        return Err(ApiError::Body {
            method: method.into(),
            message: format!("{what} is missing"),
        });
    }
    Ok(())
}

/// Every method of the plugin API netshim answers.
pub const METHODS: &[&str] = &[
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "IpamDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.DiscoverNew",
    "NetworkDriver.DiscoverDelete",
    "NetworkDriver.AllocateNetwork",
    "NetworkDriver.FreeNetwork",
];

/// The method a request path names, if netshim answers it.
pub fn known_method(path: &str) -> Option<&'static str> {
    let m = path.trim_start_matches('/');
    METHODS.iter().copied().find(|k| *k == m)
}

/// Answer one request for the plugin serving `driver`.
pub fn handle(core: &Core, driver: &str, path: &str, raw: &[u8]) -> Reply {
    let method = path.trim_start_matches('/');
    let result = match method {
        "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
        "NetworkDriver.GetCapabilities" => core
            .driver_capabilities(driver)
            .map(|(scope, connectivity)| {
                json!({ "Scope": scope.as_str(), "ConnectivityScope": connectivity.as_str() })
            })
            .map_err(ApiError::from),
        "IpamDriver.GetCapabilities" => {
            Ok(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
        }
        "IpamDriver.GetDefaultAddressSpaces" => Ok(
            json!({ "LocalDefaultAddressSpace": "local", "GlobalDefaultAddressSpace": "global" }),
        ),
        "IpamDriver.RequestPool" => request_pool(core, driver, method, raw),
        "IpamDriver.ReleasePool" => release_pool(core, driver, method, raw),
        "IpamDriver.RequestAddress" => request_address(core, driver, method, raw),
        "IpamDriver.ReleaseAddress" => release_address(core, driver, method, raw),
        "NetworkDriver.CreateNetwork" => create_network(core, driver, method, raw),
        "NetworkDriver.DeleteNetwork" => delete_network(core, method, raw),
        "NetworkDriver.CreateEndpoint" => create_endpoint(core, method, raw),
        "NetworkDriver.DeleteEndpoint" => endpoint(method, raw).and_then(|r| {
            Ok(core
                .endpoint_delete(&r.network_id, &r.endpoint_id)
                .map(|_| json!({}))?)
        }),
        "NetworkDriver.EndpointOperInfo" => endpoint(method, raw).and_then(|r| {
            let info = core.endpoint_oper_info(&r.network_id, &r.endpoint_id)?;
            let value: serde_json::Map<String, serde_json::Value> =
                info.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
            Ok(json!({ "Value": value }))
        }),
        "NetworkDriver.Join" => join(core, method, raw),
        "NetworkDriver.Leave" => endpoint(method, raw).and_then(|r| {
            Ok(core
                .endpoint_leave(&r.network_id, &r.endpoint_id)
                .map(|_| json!({}))?)
        }),
        "NetworkDriver.ProgramExternalConnectivity" => program(core, method, raw),
        "NetworkDriver.RevokeExternalConnectivity" => endpoint(method, raw).and_then(|r| {
            Ok(core
                .endpoint_ports(&r.network_id, &r.endpoint_id, Vec::new())
                .map(|_| json!({}))?)
        }),
        "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.AllocateNetwork"
        | "NetworkDriver.FreeNetwork" => Ok(json!({})),
        _ => return err(404, format!("netshim does not implement {method}")),
    };
    match result {
        Ok(v) => ok(v),
        Err(e) => {
            tracing::warn!(method, error = %e, "docker request failed");
            err(500, e.to_string())
        }
    }
}

fn endpoint(method: &str, raw: &[u8]) -> Result<EndpointRef, ApiError> {
    let r: EndpointRef = body(method, raw)?;
    need(method, "NetworkID", &r.network_id)?;
    need(method, "EndpointID", &r.endpoint_id)?;
    Ok(r)
}

/// What a gateway-less network's gateway is to Docker.
const NO_GATEWAY: &str = "0.0.0.0/0";

fn request_pool(core: &Core, driver: &str, method: &str, raw: &[u8]) -> ApiResult {
    let r: RequestPool = body(method, raw)?;
    if r.pool.is_empty() && !r.sub_pool.is_empty() {
        return Err(ApiError::Invalid(
            "a sub-pool (--ip-range) needs a pool (--subnet)".into(),
        ));
    }
    let pool = nonempty(&r.pool).map(|p| cidr("Pool", p)).transpose()?;
    let sub = nonempty(&r.sub_pool)
        .map(|p| cidr("SubPool", p))
        .transpose()?;
    let _ = &r.address_space;
    let g = core.ipam_request_pool(driver, pool, sub, r.options.into_iter().collect(), r.v6)?;
    Ok(json!({ "PoolID": g.id, "Pool": g.pool.to_string(), "Data": {} }))
}

fn release_pool(core: &Core, driver: &str, method: &str, raw: &[u8]) -> ApiResult {
    let r: PoolRef = body(method, raw)?;
    need(method, "PoolID", &r.pool_id)?;
    core.ipam_release_pool(driver, &r.pool_id)?;
    Ok(json!({}))
}

fn request_address(core: &Core, driver: &str, method: &str, raw: &[u8]) -> ApiResult {
    let r: PoolRef = body(method, raw)?;
    need(method, "PoolID", &r.pool_id)?;
    let address: Option<IpAddr> = nonempty(&r.address)
        .map(|a| {
            a.parse()
                .map_err(|_| ApiError::Invalid(format!("Address {a:?} is not an IP address")))
        })
        .transpose()?;
    let options = r.options.unwrap_or_default();
    let gateway = options
        .get("RequestAddressType")
        .is_some_and(|t| t == "com.docker.network.gateway");
    let a = core.ipam_request_address(
        driver,
        &r.pool_id,
        address,
        gateway,
        options.into_iter().collect(),
    )?;
    // No gateway (a driver that routes without one in the pool): Docker
    // gets 0.0.0.0/0, the "no gateway" Calico's own IPAM plugin gave it,
    // and passes it back in CreateNetwork and ReleaseAddress.
    let a = a.map_or_else(|| NO_GATEWAY.to_string(), |a| a.to_string());
    Ok(json!({ "Address": a, "Data": {} }))
}

fn release_address(core: &Core, driver: &str, method: &str, raw: &[u8]) -> ApiResult {
    let r: PoolRef = body(method, raw)?;
    need(method, "PoolID", &r.pool_id)?;
    let a: IpAddr = r
        .address
        .parse()
        .map_err(|_| ApiError::Invalid(format!("Address {:?} is not an IP address", r.address)))?;
    if a.is_unspecified() {
        // The "no gateway" of a gateway-less network: nothing was reserved.
        return Ok(json!({}));
    }
    core.ipam_release_address(driver, &r.pool_id, a)?;
    Ok(json!({}))
}

fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

fn create_network(core: &Core, driver: &str, method: &str, raw: &[u8]) -> ApiResult {
    let r: CreateNetwork = body(method, raw)?;
    need(method, "NetworkID", &r.network_id)?;
    if r.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::Invalid(
            "netshim's bridge driver does not do IPv6 yet; create the network without --ipv6"
                .into(),
        ));
    }
    let mut ipv4 = Vec::new();
    for d in &r.ipv4_data {
        let subnet = cidr("IPv4Data.Pool", &d.pool)?;
        let gateway = nonempty(&d.gateway)
            .filter(|g| *g != NO_GATEWAY)
            .map(|g| cidr("IPv4Data.Gateway", g))
            .transpose()?;
        ipv4.push(Pool {
            id: subnet.to_string(),
            subnet,
            gateway,
        });
    }
    // -o key=value arrive under com.docker.network.generic.
    let mut options = Vec::new();
    if let Some(Value::Object(generic)) = r.options.get("com.docker.network.generic") {
        for (k, v) in generic {
            options.push((
                k.clone(),
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string()),
            ));
        }
    }
    let short: String = r.network_id.chars().take(12).collect();
    let net = Network {
        id: r.network_id.clone(),
        name: format!("docker-{short}"),
        driver: driver.into(),
        internal: flag(r.options.get("com.docker.network.internal")),
        options,
        ipv4,
        created: crate::cnm::now_seconds(),
    };
    core.network_register(net)?;
    Ok(json!({}))
}

fn delete_network(core: &Core, method: &str, raw: &[u8]) -> ApiResult {
    let r: CreateNetwork = body(method, raw)?;
    need(method, "NetworkID", &r.network_id)?;
    core.network_unregister(&r.network_id)?;
    Ok(json!({}))
}

fn create_endpoint(core: &Core, method: &str, raw: &[u8]) -> ApiResult {
    let r = endpoint(method, raw)?;
    let iface = r.interface.unwrap_or_default();
    if !iface.address_ipv6.is_empty() {
        return Err(ApiError::Invalid(
            "netshim's bridge driver does not do IPv6 yet".into(),
        ));
    }
    let ipv4 = nonempty(&iface.address)
        .map(|a| cidr("Interface.Address", a))
        .transpose()?;
    let mac = core.endpoint_create(
        &r.network_id,
        &r.endpoint_id,
        ipv4,
        nonempty(&iface.mac_address),
    )?;
    // Only fields the request left empty may be filled (dockerd checks).
    Ok(match mac {
        Some(m) if iface.mac_address.is_empty() => json!({ "Interface": { "MacAddress": m } }),
        _ => json!({}),
    })
}

fn join(core: &Core, method: &str, raw: &[u8]) -> ApiResult {
    let r = endpoint(method, raw)?;
    let info = core.endpoint_join(&r.network_id, &r.endpoint_id, &r.sandbox_key)?;
    // RouteType: 0 is a next hop, 1 is connected (libnetwork's types).
    let routes: Vec<serde_json::Value> = info
        .static_routes
        .iter()
        .map(|r| match r.via {
            RouteVia::Connected => {
                json!({ "Destination": r.destination.to_string(), "RouteType": 1 })
            }
            RouteVia::NextHop(hop) => json!({
                "Destination": r.destination.to_string(),
                "RouteType": 0,
                "NextHop": hop.map(|h| h.to_string()).unwrap_or_default(),
            }),
        })
        .collect();
    let mut reply = json!({
        "InterfaceName": { "SrcName": info.src_name, "DstPrefix": info.dst_prefix },
        "StaticRoutes": routes,
        "DisableGatewayService": info.disable_gateway_service,
    });
    if let Some(gw) = info.gateway {
        reply["Gateway"] = json!(gw.to_string());
    }
    Ok(reply)
}

fn program(core: &Core, method: &str, raw: &[u8]) -> ApiResult {
    let r = endpoint(method, raw)?;
    let mut ports = Vec::new();
    if let Some(list) = r.options.get("com.docker.network.portmap") {
        let bindings: Vec<PortBinding> =
            serde_json::from_value(list.clone()).map_err(|e| ApiError::Body {
                method: method.into(),
                message: format!("com.docker.network.portmap: {e}"),
            })?;
        for b in bindings {
            let protocol = match b.proto {
                6 => "tcp",
                17 => "udp",
                132 => "sctp",
                p => {
                    return Err(ApiError::Invalid(format!(
                        "port mapping protocol {p} is not tcp, udp or sctp"
                    )))
                }
            };
            if b.host_port == 0 {
                return Err(ApiError::Invalid(format!("publishing container port {}/{protocol} on a random host port is not supported; give one (-p HOST:{})", b.port, b.port)));
            }
            if b.host_port_end != 0 && b.host_port_end != b.host_port {
                return Err(ApiError::Invalid(format!(
                    "host port ranges ({}-{}) are not supported",
                    b.host_port, b.host_port_end
                )));
            }
            let host_ip = nonempty(&b.host_ip)
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .filter(|ip| !ip.is_unspecified());
            ports.push(PortMapping {
                protocol: protocol.into(),
                host_ip,
                host_port: b.host_port,
                container_port: b.port,
            });
        }
    }
    if !ports.is_empty() {
        core.endpoint_ports(&r.network_id, &r.endpoint_id, ports)?;
    }
    Ok(json!({}))
}
