//! Compiles YouTube's `stream_list.proto` (the gRPC live chat stream) into
//! Rust with protox, a protobuf compiler in Rust: no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/stream_list.proto");
    let files = protox::compile(["stream_list.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(files)?;
    Ok(())
}
