//! Compiles `proto/` with protox (pure Rust, no system `protoc`), generates prost types with
//! tonic services, and proto3-JSON serde impls with pbjson. The descriptor set is kept for gRPC
//! reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(
        [
            "troupe/v1alpha1/resource_service.proto",
            "troupe/v1alpha1/release_service.proto",
            "troupe/v1alpha1/agent_service.proto",
            "troupe/v1alpha1/auth_service.proto",
            "troupe/v1alpha1/build_service.proto",
            "troupe/v1alpha1/server_service.proto",
        ],
        ["../proto"],
    )?;
    let descriptor = fds.encode_to_vec();
    std::fs::write(out.join("troupe_descriptor.bin"), &descriptor)?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::SmallBuffers")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor)?
        .build(&[".troupe"])?;

    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
