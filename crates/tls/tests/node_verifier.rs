//! A node calling a peer, and a service calling its nodes, accept only a node certificate:
//! real TLS 1.3 handshakes on loopback against servers presenting each kind of
//! certificate, all signed by the cluster CA and valid for the address.

use std::path::Path;
use std::sync::Arc;

use firebreak_tls::pki::{self, Issued, Validity};
use firebreak_tls::{ClientCerts, Identity, KeyFiles, Keys, Role};
use tokio::net::{TcpListener, TcpStream};

fn issue(ca: &Path, cluster: &str, role: Role, stem: &str) -> Arc<Keys> {
    let identity = Identity {
        cluster: cluster.into(),
        role,
    };
    let hosts = ["127.0.0.1".to_string()];
    let Issued { cert, key } = pki::issue(
        ca,
        &identity,
        &hosts,
        Validity::days(1),
        &ca.join("out"),
        stem,
    )
    .unwrap();
    Keys::load(KeyFiles { cert, key }).unwrap()
}

/// Serves one handshake with `server`'s certificate to a node client holding `client`;
/// the client's result, as text.
async fn handshake(ca: &Path, server: Arc<Keys>, client: Arc<Keys>) -> Result<(), String> {
    let config =
        firebreak_tls::node_client_config(&ca.join(pki::CA_CERT), client, "seoul").unwrap();
    handshake_with(ca, server, config).await
}

/// Serves one handshake with `server`'s certificate to a client of `config`.
async fn handshake_with(
    ca: &Path,
    server: Arc<Keys>,
    config: rustls::ClientConfig,
) -> Result<(), String> {
    let served_with =
        firebreak_tls::server_config(server, &ca.join(pki::CA_CERT), ClientCerts::Required)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(served_with));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let result = connector
        .connect(name, tcp)
        .await
        .map(drop)
        .map_err(|e| e.to_string());
    served.abort();
    result
}

#[tokio::test]
async fn a_node_talks_only_to_nodes() {
    let dir = tempfile::TempDir::new().unwrap();
    let ca = dir.path();
    pki::init_ca(ca, "seoul", Validity::days(2)).unwrap();
    let me = issue(ca, "seoul", Role::Node(1), "node-1");

    let peer = issue(ca, "seoul", Role::Node(2), "node-2");
    assert_eq!(handshake(ca, peer, me.clone()).await, Ok(()));

    let service = issue(ca, "seoul", Role::Service("payments".into()), "payments");
    let refused = handshake(ca, service, me.clone()).await.unwrap_err();
    assert!(
        refused.contains("firebreak://seoul/service/payments")
            && refused.contains("not as a node of cluster seoul"),
        "{refused}"
    );

    let operator = issue(ca, "seoul", Role::Operator("kim".into()), "kim");
    assert!(handshake(ca, operator, me).await.is_err());
}

/// The TLS config a `ClientTls` applies, for a raw handshake.
fn config_of(tls: &firebreak_tls::ClientTls) -> rustls::ClientConfig {
    tls.rustls_config().expect("TLS, not plain text").clone()
}

#[tokio::test]
async fn a_service_talks_only_to_nodes() {
    let dir = tempfile::TempDir::new().unwrap();
    let ca = dir.path();
    pki::init_ca(ca, "seoul", Validity::days(2)).unwrap();
    let ca_cert = ca.join(pki::CA_CERT);
    let me = issue(ca, "seoul", Role::Service("messaging".into()), "messaging");
    let as_service = firebreak_tls::ClientTls::for_service(&ca_cert, me.clone()).unwrap();

    let node = issue(ca, "seoul", Role::Node(1), "node-1");
    assert_eq!(
        handshake_with(ca, node, config_of(&as_service)).await,
        Ok(())
    );

    // Another service's certificate on a node's address: what a service trusted before
    // (the CA alone) takes it; a service's own config refuses it.
    let impostor = issue(ca, "seoul", Role::Service("login".into()), "login");
    let ca_alone = firebreak_tls::ClientTls::new(&ca_cert, Some(me.clone())).unwrap();
    assert_eq!(
        handshake_with(ca, impostor.clone(), config_of(&ca_alone)).await,
        Ok(())
    );
    let refused = handshake_with(ca, impostor, config_of(&as_service))
        .await
        .unwrap_err();
    assert!(
        refused.contains("firebreak://seoul/service/login")
            && refused.contains("not as a node of cluster seoul"),
        "{refused}"
    );
}
