//! Health and reflection work without a key, as probes and grpcurl expect.

use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::*;

#[tokio::test]
async fn health_reports_serving_without_a_key() {
    let app = spawn_app().await;
    let mut h = HealthClient::new(app.channel().await);
    let overall = h.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);
    let feed = h.check(HealthCheckRequest { service: "riskid.v1.FeedService".into() }).await.unwrap().into_inner();
    assert_eq!(feed.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut c = ServerReflectionClient::new(app.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = c.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("unexpected reply") };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"riskid.v1.FeedService".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
}
