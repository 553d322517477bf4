//! The etcd backend of the store against a real etcd (Debian's
//! etcd-server) in a namespace of its own on a fabric, used from two node
//! namespaces: values cross between nodes, a write another node made in
//! between fails a session's commit and applies nothing of it, of two
//! creates of one key exactly one wins, a TTL ends the key, an
//! uncommitted session leaves nothing, and a store whose etcd stopped
//! names it and works again once etcd is back.

use std::time::{Duration, Instant};

use netshim_host_api::store::{Change, Condition, EtcdStore, Store, StoreError};
use netshim_tests::cluster::{inside, inside_path, Etcd, Fabric};
use netshim_tests::{can_run, Ns};

struct Cluster {
    _fabric: Fabric,
    etcd: Etcd,
    nodes: Vec<Ns>,
}

fn cluster(tag: &str) -> Cluster {
    let fabric = Fabric::new(tag);
    let etcd = Etcd::start(&fabric, tag);
    let nodes: Vec<Ns> = (0..2)
        .map(|i| {
            let ns = Ns::new(&format!("{tag}-n{i}"));
            fabric.plug(&ns, 11 + i as u8);
            ns
        })
        .collect();
    Cluster {
        _fabric: fabric,
        etcd,
        nodes,
    }
}

/// A store for node `i`, opened (and so connected) inside its namespace.
fn store(c: &Cluster, i: usize, prefix: &str) -> EtcdStore {
    let url = c.etcd.url.clone();
    let prefix = prefix.to_string();
    inside(&c.nodes[i], move || {
        EtcdStore::connect(&url, &prefix, None).expect("connect to etcd")
    })
}

#[test]
fn sessions_are_transactions_across_nodes() {
    if !can_run() {
        return;
    }
    let c = cluster("etcdkv");
    let (a, b) = (
        store(&c, 0, "/netshim-test/"),
        store(&c, 1, "/netshim-test/"),
    );

    // Node 0 writes, node 1 reads.
    let a2 = a.clone();
    inside(&c.nodes[0], move || {
        let mut s = a2.session().unwrap();
        s.put("cnm", "networks/x", b"one", Condition::Absent, None)
            .unwrap();
        s.put("cnm", "networks/y", b"two", Condition::None, None)
            .unwrap();
        s.put(
            "driver/bridge",
            "lease/10.0.0.2",
            b"c1",
            Condition::None,
            None,
        )
        .unwrap();
        // Read-your-writes before the commit.
        assert_eq!(s.get("cnm", "networks/x").unwrap().unwrap().value, b"one");
        assert_eq!(s.list("cnm", "networks/").unwrap().len(), 2);
        s.commit().unwrap();
    });
    let b2 = b.clone();
    inside(&c.nodes[1], move || {
        let mut s = b2.session().unwrap();
        let got = s.list("cnm", "networks/").unwrap();
        let keys: Vec<&str> = got.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["networks/x", "networks/y"]);
        assert_eq!(s.list("driver/bridge", "").unwrap().len(), 1);
        // An uncommitted session leaves nothing.
        s.put("cnm", "networks/z", b"never", Condition::None, None)
            .unwrap();
        drop(s);
        let mut s = b2.session().unwrap();
        assert!(s.get("cnm", "networks/z").unwrap().is_none());
    });

    // Node 0 reads x; node 1 changes x and commits; node 0's commit of a
    // write based on what it read fails, and applies none of its writes.
    let (a3, b3) = (a.clone(), b.clone());
    let n1 = c.nodes[1].path.clone();
    inside(&c.nodes[0], move || {
        let mut s = a3.session().unwrap();
        let x = s.get("cnm", "networks/x").unwrap().unwrap();
        inside_path(n1, move || {
            let mut s = b3.session().unwrap();
            s.put("cnm", "networks/x", b"changed", Condition::None, None)
                .unwrap();
            s.commit().unwrap();
        });
        s.put(
            "cnm",
            "networks/x",
            b"stale",
            Condition::Revision(x.revision),
            None,
        )
        .unwrap();
        s.put("cnm", "networks/w", b"side", Condition::None, None)
            .unwrap();
        let e = s.commit().unwrap_err();
        assert!(matches!(e, StoreError::Raced(_)), "{e}");
        let mut s = a3.session().unwrap();
        assert_eq!(
            s.get("cnm", "networks/x").unwrap().unwrap().value,
            b"changed"
        );
        assert!(
            s.get("cnm", "networks/w").unwrap().is_none(),
            "a failed commit applied a write"
        );
    });

    // A key deleted from a range this session listed, and a key changed
    // before this session's checkpoint, both fail its final commit.
    let (a7, b7) = (a.clone(), b.clone());
    let n1 = c.nodes[1].path.clone();
    inside(&c.nodes[0], move || {
        let mut s = a7.session().unwrap();
        assert_eq!(s.list("cnm", "networks/").unwrap().len(), 2);
        let b8 = b7.clone();
        inside_path(n1.clone(), move || {
            let mut s = b8.session().unwrap();
            s.delete("cnm", "networks/y", Condition::None).unwrap();
            s.commit().unwrap();
        });
        s.put("cnm", "decided", b"on two networks", Condition::None, None)
            .unwrap();
        assert!(matches!(s.commit(), Err(StoreError::Raced(_))));

        let mut s = a7.session().unwrap();
        let x = s.get("cnm", "networks/x").unwrap().unwrap();
        s.put("cnm", "intent", b"1", Condition::None, None).unwrap();
        s.checkpoint().unwrap();
        inside_path(n1, move || {
            let mut s = b7.session().unwrap();
            s.put("cnm", "networks/x", b"again", Condition::None, None)
                .unwrap();
            s.commit().unwrap();
        });
        s.put("cnm", "endpoint", x.value.as_slice(), Condition::None, None)
            .unwrap();
        assert!(
            matches!(s.commit(), Err(StoreError::Raced(_))),
            "a read from before the checkpoint was not checked at the commit"
        );
        // The checkpointed write stands; the final one did not happen.
        let mut s = a7.session().unwrap();
        assert!(s.get("cnm", "intent").unwrap().is_some());
        assert!(s.get("cnm", "endpoint").unwrap().is_none());
        assert!(s.get("cnm", "decided").unwrap().is_none());
    });

    // Two nodes create the same key at once: exactly one wins.
    let wins: usize = (0..2)
        .map(|i| {
            let st = if i == 0 { a.clone() } else { b.clone() };
            let path = c.nodes[i].path.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let mut s = st.session().unwrap();
                if s.put(
                    "cnm",
                    "subnets/10.244.1.0-24",
                    format!("node{i}").as_bytes(),
                    Condition::Absent,
                    None,
                )
                .is_err()
                {
                    return 0;
                }
                usize::from(s.commit().is_ok())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(wins, 1);
}

#[test]
fn a_ttl_ends_the_key_and_a_stopped_etcd_is_named_then_recovered() {
    if !can_run() {
        return;
    }
    let mut c = cluster("etcdttl");
    let a = store(&c, 0, "/netshim-test/");
    let a2 = a.clone();
    inside(&c.nodes[0], move || {
        let mut s = a2.session().unwrap();
        s.put("cnm", "short", b"1", Condition::None, Some(2))
            .unwrap();
        s.put("cnm", "long", b"1", Condition::None, None).unwrap();
        s.commit().unwrap();
        let t = Instant::now();
        loop {
            let mut s = a2.session().unwrap();
            if s.get("cnm", "short").unwrap().is_none() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the TTL did not end the key"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut s = a2.session().unwrap();
        assert!(s.get("cnm", "long").unwrap().is_some());
    });

    c.etcd.pause();
    let a3 = a.clone();
    let url = c.etcd.url.clone();
    inside(&c.nodes[0], move || {
        let mut s = a3.session().unwrap();
        let e = s.get("cnm", "long").unwrap_err().to_string();
        assert!(
            e.contains(url.trim_start_matches("etcd://")) || e.contains(&url),
            "{e}"
        );
    });
    c.etcd.resume();
    let a4 = a.clone();
    inside(&c.nodes[0], move || {
        // The client reconnects on its own.
        let t = Instant::now();
        loop {
            let mut s = a4.session().unwrap();
            match s.get("cnm", "long") {
                Ok(v) => {
                    assert!(v.is_some());
                    break;
                }
                Err(e) => {
                    assert!(t.elapsed() < Duration::from_secs(15), "no reconnect: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    });
}

/// What a watch reports next, within `secs`.
fn next_change(rx: &std::sync::mpsc::Receiver<Change>, secs: u64) -> Option<Change> {
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

fn key(k: &str) -> Change {
    Change::Key {
        root: "/w".into(),
        key: k.into(),
    }
}

#[test]
fn a_watch_resumes_after_etcd_restarts_and_relists_after_compaction() {
    if !can_run() {
        return;
    }
    let mut c = cluster("etcdw");
    let s = store(&c, 0, "");
    let (tx, rx) = std::sync::mpsc::channel();
    let guard = s.watch("/w", tx);
    assert_eq!(
        next_change(&rx, 5),
        Some(Change::Resync { root: "/w".into() })
    );
    c.etcd.etcdctl(&["put", "/w/a", "1"]);
    assert_eq!(next_change(&rx, 5), Some(key("a")));

    // etcd goes away and comes back: the watch resumes where it was, with
    // no event lost and no resync needed.
    c.etcd.pause();
    c.etcd.resume();
    c.etcd.etcdctl(&["put", "/w/b", "2"]);
    assert_eq!(next_change(&rx, 20), Some(key("b")));
    drop(guard);

    // A watcher resuming from a revision etcd compacted away re-lists.
    let status: serde_json::Value =
        serde_json::from_str(&c.etcd.etcdctl(&["get", "/w/a", "-w", "json"])).unwrap();
    let old = status["header"]["revision"].as_i64().unwrap();
    for i in 0..5 {
        c.etcd.etcdctl(&["put", "/w/x", &i.to_string()]);
    }
    let now: serde_json::Value =
        serde_json::from_str(&c.etcd.etcdctl(&["get", "/w/x", "-w", "json"])).unwrap();
    c.etcd.etcdctl(&[
        "compact",
        &now["header"]["revision"].as_i64().unwrap().to_string(),
    ]);
    let (tx, rx) = std::sync::mpsc::channel();
    let _guard = s.watch_from("/w", Some(old - 2), tx);
    assert_eq!(
        next_change(&rx, 10),
        Some(Change::Resync { root: "/w".into() })
    );
    c.etcd.etcdctl(&["put", "/w/c", "3"]);
    assert_eq!(next_change(&rx, 5), Some(key("c")));
}
