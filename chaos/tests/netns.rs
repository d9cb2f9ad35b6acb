//! The netns driver's own tests (root, Linux): a partition really drops traffic between
//! the chosen sites and only those, one way when asked; healing restores it; destroying
//! the network leaves no namespace; `heal_leftovers` removes only what carries the prefix.
//!
//! Without root they are skipped with a message, except under CI (CI=true), where root is
//! expected and its absence fails them.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use firebreak_chaos::netns::{self, Network};

/// The tests share the host's namespace list; one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root; the netns tests need it"
        );
        eprintln!("skipped: the netns driver tests need root");
    }
    root
}

fn run_id() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Runs `f` on a thread inside the namespace at `path`: sockets it makes live there.
fn inside<T: Send + 'static>(path: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        netns::enter(&path).expect("join the namespace");
        f()
    })
    .join()
    .expect("thread")
}

fn sites() -> Vec<String> {
    ["a", "b", "c"].map(String::from).to_vec()
}

/// Whether a TCP connection from namespace `from` to `to:port` succeeds.
fn connects(from: PathBuf, to: String, port: u16) -> bool {
    inside(from, move || {
        let addr: SocketAddr = format!("{to}:{port}").parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
    })
}

/// Whether a UDP datagram from namespace `from` reaches the socket bound in `to`.
fn datagram_arrives(from: PathBuf, to: &UdpSocket) -> bool {
    let target = to.local_addr().unwrap();
    inside(from, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.send_to(b"ping", target).is_ok()
    });
    to.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buffer = [0u8; 16];
    to.recv_from(&mut buffer).is_ok()
}

#[test]
fn a_partition_drops_only_the_chosen_traffic_and_healing_restores_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let network = Network::create(&run_id(), &sites()).expect("network");
    let ns = |i: usize| Network::ns_path(&network.site_ns(i));
    let clients = Network::ns_path(&network.clients_ns());
    // A listener in every site.
    let port = 7999;
    let _listeners: Vec<TcpListener> = (0..3)
        .map(|i| {
            let ip = network.site_ip(i);
            inside(ns(i), move || {
                TcpListener::bind(format!("{ip}:{port}")).unwrap()
            })
        })
        .collect();
    let matrix = |network: &Network| -> Vec<(usize, usize, bool)> {
        let mut out = Vec::new();
        for from in 0..3 {
            for to in 0..3 {
                if from != to {
                    out.push((from, to, connects(ns(from), network.site_ip(to), port)));
                }
            }
        }
        out
    };
    assert!(
        matrix(&network).iter().all(|(_, _, ok)| *ok),
        "all sites reach each other before"
    );

    network.partition(&[0], &[1], false).unwrap();
    for (from, to, ok) in matrix(&network) {
        let cut = (from, to) == (0, 1) || (from, to) == (1, 0);
        assert_eq!(ok, !cut, "{from} -> {to} during the a|b partition");
    }
    assert!(
        connects(clients.clone(), network.site_ip(0), port),
        "clients still reach the cut-off site"
    );

    network.heal_partition(&[0], &[1], false).unwrap();
    assert!(
        matrix(&network).iter().all(|(_, _, ok)| *ok),
        "healed: all sites reach each other"
    );
}

#[test]
fn a_one_way_partition_drops_one_direction_only() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let network = Network::create(&run_id(), &sites()).expect("network");
    let ns = |i: usize| Network::ns_path(&network.site_ns(i));
    let bind = |i: usize| {
        let ip = network.site_ip(i);
        inside(ns(i), move || {
            UdpSocket::bind(format!("{ip}:7998")).unwrap()
        })
    };
    let (a, b) = (bind(0), bind(1));
    network.partition(&[0], &[1], true).unwrap();
    assert!(!datagram_arrives(ns(0), &b), "a -> b is cut");
    assert!(datagram_arrives(ns(1), &a), "b -> a still flows");
    network.heal_partition(&[0], &[1], true).unwrap();
    assert!(datagram_arrives(ns(0), &b), "healed: a -> b flows again");
}

#[test]
fn loss_and_link_down_drop_traffic_and_clear() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let network = Network::create(&run_id(), &sites()).expect("network");
    let ns = |i: usize| Network::ns_path(&network.site_ns(i));
    let ip = network.site_ip(1);
    let b = inside(ns(1), move || {
        UdpSocket::bind(format!("{ip}:7997")).unwrap()
    });
    network.loss(0, &[1], 100).unwrap();
    assert!(!datagram_arrives(ns(0), &b), "100% loss a -> b drops");
    assert!(datagram_arrives(ns(2), &b), "c -> b is untouched");
    network.clear_loss(0).unwrap();
    assert!(datagram_arrives(ns(0), &b), "loss cleared");
    network.link(1, false).unwrap();
    assert!(
        !datagram_arrives(ns(0), &b),
        "b's link down: nothing reaches it"
    );
    network.link(1, true).unwrap();
    assert!(datagram_arrives(ns(0), &b), "b's link up again");
}

#[test]
fn destroying_the_network_leaves_nothing_and_heal_touches_only_prefixed_namespaces() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let id = run_id();
    let mut network = Network::create(&id, &sites()).expect("network");
    let ours = |names: &[String]| names.iter().filter(|n| n.contains(&id)).count();
    assert_eq!(
        ours(&netns::leftovers().unwrap()),
        5,
        "3 sites, clients, router"
    );
    network.destroy();
    assert_eq!(
        ours(&netns::leftovers().unwrap()),
        0,
        "destroy removes every namespace"
    );

    // A crashed run's namespace is healed; a namespace without the prefix is not touched.
    let crashed = format!("{}{id}-crashed", netns::PREFIX);
    let foreign = format!("other-{id}");
    for name in [&crashed, &foreign] {
        assert!(std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap()
            .success());
    }
    let healed = netns::heal_leftovers().unwrap();
    assert!(healed.contains(&crashed), "{healed:?}");
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout).to_string();
    assert!(!left.contains(&crashed), "healed: {left}");
    assert!(
        left.contains(&foreign),
        "heal must not touch {foreign}: {left}"
    );
    std::process::Command::new("ip")
        .args(["netns", "del", &foreign])
        .status()
        .unwrap();
}
