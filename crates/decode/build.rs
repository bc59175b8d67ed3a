//! Generates the protobuf types from `proto/` with a pure-Rust compiler, so that building
//! needs no `protoc` on the machine.
fn main() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let files = ["salespulse/v1/events.proto", "salespulse/v1/metrics.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    let fds = protox::compile(files, [root]).expect("proto files compile");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("protobuf code generation");
}
