//! The netns driver's own tests (root, Linux): a partition really drops traffic between
//! the chosen sites and only those, one way when asked; healing restores it; a bandwidth
//! cap slows only the chosen peers; a user-space delay (NFQUEUE) adds the round trip asked
//! for, within 20%, and leaves no rule behind; destroying the network leaves no namespace;
//! `heal_leftovers` removes only what carries the prefix.
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
/// Whether traffic flows again: a datagram from `from` reaches `to` within ten tries
/// (3 s). Right after a heal or a link coming up, the first one may be lost while the
/// neighbour entry is resolved again. A cut is judged on one try (`datagram_arrives`).
fn datagram_gets_through(from: PathBuf, to: &UdpSocket) -> bool {
    (0..10).any(|_| datagram_arrives(from.clone(), to))
}

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
    assert!(datagram_gets_through(ns(1), &a), "b -> a still flows");
    network.heal_partition(&[0], &[1], true).unwrap();
    assert!(
        datagram_gets_through(ns(0), &b),
        "healed: a -> b flows again"
    );
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
    assert!(datagram_gets_through(ns(2), &b), "c -> b is untouched");
    network.clear_loss(0).unwrap();
    assert!(datagram_gets_through(ns(0), &b), "loss cleared");
    network.link(1, false).unwrap();
    assert!(
        !datagram_arrives(ns(0), &b),
        "b's link down: nothing reaches it"
    );
    network.link(1, true).unwrap();
    assert!(datagram_gets_through(ns(0), &b), "b's link up again");
}

/// Seconds to send `bytes` over TCP from namespace `from` to a listener in `to`.
fn send_secs(from: PathBuf, to: PathBuf, ip: String, port: u16, bytes: usize) -> f64 {
    use std::io::{Read, Write};
    let listener = inside(to, move || {
        TcpListener::bind(format!("{ip}:{port}")).unwrap()
    });
    let target = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).unwrap();
        sink.len()
    });
    let secs = inside(from, move || {
        let started = std::time::Instant::now();
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(1)).unwrap();
        stream.write_all(&vec![7u8; bytes]).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut done = [0u8; 1];
        let _ = stream.read(&mut done); // the reader closes once it has everything
        started.elapsed().as_secs_f64()
    });
    assert_eq!(reader.join().unwrap(), bytes);
    secs
}

#[test]
fn bandwidth_caps_only_the_chosen_peers_and_clears() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let network = Network::create(&run_id(), &sites()).expect("network");
    let ns = |i: usize| Network::ns_path(&network.site_ns(i));
    let shaping = netns::Shaping {
        delay_ms: 0,
        jitter_ms: 0,
        rate_kbit: 400,
    };
    network.shape(0, &[1], &shaping).unwrap();
    // 100 KB at 400 kbit/s take 2 s; unshaped, milliseconds.
    let bytes = 100_000;
    let capped = send_secs(ns(0), ns(1), network.site_ip(1), 7996, bytes);
    let free = send_secs(ns(0), ns(2), network.site_ip(2), 7995, bytes);
    eprintln!("a -> b capped: {capped:.2} s; a -> c: {free:.3} s");
    assert!(
        capped >= 1.2,
        "a -> b is capped at 400 kbit/s: {capped:.2} s"
    );
    assert!(
        free * 4.0 < capped,
        "a -> c is not capped: {free:.3} s against {capped:.2} s"
    );
    network.clear_shape(0).unwrap();
    let cleared = send_secs(ns(0), ns(1), network.site_ip(1), 7994, bytes);
    assert!(
        cleared * 4.0 < capped,
        "cleared: a -> b at full speed again: {cleared:.3} s"
    );
}

/// The median time of `count` TCP handshakes from namespace `from` to `to:port` (a
/// listener there accepts them): one round trip each.
fn handshake_ms(from: PathBuf, to_ns: PathBuf, to: String, port: u16, count: usize) -> f64 {
    let listener = inside(to_ns, move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    let accepting = std::thread::spawn(move || {
        for _ in 0..count {
            let _ = listener.accept();
        }
    });
    let mut times = inside(from, move || {
        let addr: SocketAddr = format!("{to}:{port}").parse().unwrap();
        (0..count)
            .map(|_| {
                let started = std::time::Instant::now();
                let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
                let took = started.elapsed().as_secs_f64() * 1000.0;
                drop(stream);
                took
            })
            .collect::<Vec<f64>>()
    });
    accepting.join().unwrap();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[count / 2]
}

/// The iptables rules in namespace `ns`.
fn iptables_rules(ns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "iptables-legacy", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn user_space_delay_adds_the_round_trip_asked_for_and_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let network = Network::create(&run_id(), &sites()).expect("network");
    network.delay_in_user_space_from_now();
    let ns = |i: usize| Network::ns_path(&network.site_ns(i));
    let base = handshake_ms(ns(0), ns(1), network.site_ip(1), 7990, 9);
    let shaping = netns::Shaping {
        delay_ms: 40,
        jitter_ms: 5,
        rate_kbit: 0,
    };
    network.shape(0, &[1], &shaping).unwrap();
    let delayed = handshake_ms(ns(0), ns(1), network.site_ip(1), 7991, 15);
    let other = handshake_ms(ns(0), ns(2), network.site_ip(2), 7992, 9);
    eprintln!("a -> b: {base:.2} ms, delayed 40 ms: {delayed:.2} ms; a -> c: {other:.2} ms");
    let added = delayed - base;
    assert!(
        (32.0..=48.0).contains(&added),
        "a 40 ms delay added {added:.1} ms to the round trip (within 20%)"
    );
    assert!(other < 10.0, "a -> c is not delayed: {other:.2} ms");
    assert!(iptables_rules(&network.site_ns(0)).contains("NFQUEUE"));
    network.clear_shape(0).unwrap();
    let cleared = handshake_ms(ns(0), ns(1), network.site_ip(1), 7993, 9);
    assert!(cleared < 10.0, "cleared: {cleared:.2} ms");
    assert!(
        !iptables_rules(&network.site_ns(0)).contains("_DELAY"),
        "the queue rule is gone"
    );
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
