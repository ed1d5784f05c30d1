//! The gRPC transport: `stt.STTBackend` plus the standard health service and
//! server reflection (so `grpcurl` and `grpc-health-probe` work with no proto
//! file at hand), with the configured message-size caps.

pub mod convert;
pub mod metadata;
pub mod service;

use std::future::Future;

use crate::server::tls::Incoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;

use crate::pb;
use crate::pb::stt_backend_server::SttBackendServer;
pub use service::Backend;

/// gRPC message-size caps.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    pub max_receive: usize,
    pub max_send: usize,
}

/// Marks `stt.STTBackend` (and the server as a whole) SERVING.
pub async fn set_serving(reporter: &HealthReporter) {
    reporter.set_serving::<SttBackendServer<Backend>>().await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
}

/// Marks everything NOT_SERVING (shutdown, unhealthy).
pub async fn set_not_serving(reporter: &HealthReporter) {
    reporter
        .set_not_serving::<SttBackendServer<Backend>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}

/// Serves on `listener` until `shutdown` resolves, then lets in-flight calls
/// finish.
pub async fn serve(
    incoming: Incoming,
    access: crate::server::access::GrpcGuard,
    backend: Backend,
    limits: MessageLimits,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let stt = SttBackendServer::new(backend)
        .max_decoding_message_size(limits.max_receive)
        .max_encoding_message_size(limits.max_send);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    // The allowlist runs before any service, health and reflection included.
    let mut builder = Server::builder().layer(tonic::service::InterceptorLayer::new(move |req| {
        access.check(req)
    }));
    let router = builder.add_service(stt).add_service(health);
    let router = match (reflection_v1, reflection_v1alpha) {
        (Ok(v1), Ok(v1a)) => router.add_service(v1).add_service(v1a),
        (v1, v1a) => {
            // The descriptor set is compiled in; failing here is a build bug,
            // but serving without reflection beats not serving.
            tracing::error!(v1 = ?v1.err(), v1alpha = ?v1a.err(), "gRPC reflection unavailable");
            router
        }
    };
    router
        .serve_with_incoming_shutdown(incoming.into_stream(), shutdown)
        .await
}
