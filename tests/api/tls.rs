//! A TLS round trip with a freshly generated self-signed certificate.

use std::sync::Arc;

use riskid::api::pb::{self, feed_service_client::FeedServiceClient};
use riskid::app::{App, Limits};
use riskid::auth::Role;
use riskid::storage::Store;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

#[tokio::test]
async fn tls_round_trip_with_a_self_signed_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let app = Arc::new(App::new(store.clone(), Limits::default()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem));
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(riskid::server::serve(listener, app, Some(tls), async {
        let _ = rx.await;
    }));

    let client_tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cert_pem)).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(client_tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (key, hash, prefix) = riskid::auth::generate_key();
    store
        .create_key(
            &riskid::storage::NewKey {
                key_hash: &hash,
                prefix: &prefix,
                role: Role::Analyst,
                schools: &Default::default(),
                label: "",
                created_at: 0,
            },
            "operator:test",
        )
        .unwrap();
    let mut c = FeedServiceClient::with_interceptor(channel, riskid::client::Bearer::new(&key));
    let list = c.list_submissions(pb::ListSubmissionsRequest::default()).await.unwrap().into_inner();
    assert!(list.submissions.is_empty());

    // A plaintext client cannot talk to the TLS server.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await;
    if let Ok(ch) = plain {
        let mut c = FeedServiceClient::with_interceptor(ch, riskid::client::Bearer::new(&key));
        assert!(c.list_submissions(pb::ListSubmissionsRequest::default()).await.is_err());
    }
}
