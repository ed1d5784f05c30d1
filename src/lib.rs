pub mod models;
pub mod pb {
    tonic::include_proto!("stt");
}
