//! Compiles YouTube's `stream_list.proto` (the ingestor's copy, one file
//! for both) into the fake's gRPC server, with protox: no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/stream_list.proto");
    let files = protox::compile(["stream_list.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_fds(files)?;
    Ok(())
}
