//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "io/statefun/request-reply.proto",
    "io/statefun/types.proto",
    "io/statefun/kinesis-egress.proto",
    "statefun_aws/internal.proto",
    "statefun_aws/kpl.proto",
    "examples/shoppingcart.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=protos");
    let descriptors = protox::compile(FILES, ["protos"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), prost::Message::encode_to_vec(&descriptors))?;
    prost_build::Config::new()
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        // Addresses key the runtime's per-partition tables.
        .type_attribute(".io.statefun.sdk.reqreply.Address", "#[derive(PartialOrd, Ord)]")
        .include_file("packages.rs")
        .compile_fds(descriptors)?;
    Ok(())
}
