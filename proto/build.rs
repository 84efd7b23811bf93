//! Compiles the protos with protox, so building Drover needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "drover/v1/drover.proto",
        "drover/v1/apps.proto",
        "drover/v1/releases.proto",
        "drover/v1/notifications.proto",
        "drover/v1/identity.proto",
    ];
    let fds = protox::compile(files, ["."])?;
    // Small first buffers for every stream (see `src/codec.rs`).
    tonic_prost_build::configure().codec_path("crate::codec::SmallBuffers").compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
