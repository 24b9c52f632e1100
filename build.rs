//! Compiles the protos with protox (pure Rust), so no system `protoc` is needed, and writes
//! the descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos: Vec<PathBuf> = Vec::new();
    for dir in ["proto/riskid/v1", "proto/inference", "proto/google/rpc"] {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|e| e == "proto") {
                protos.push(p);
            }
        }
    }
    // google/rpc/error_details.proto is compiled only so that reflection serves it (grpcurl
    // then decodes error details); the code uses tonic-types' own copy of those messages.
    protos.sort();
    let fds = protox::compile(&protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("riskid_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Type names let the codec find each message's wire limits (src/api/codec.rs).
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::api::codec::BoundedCodec")
        .compile_fds_with_config(fds, config)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
