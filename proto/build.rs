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
    tonic_prost_build::configure().compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
