//! Placeholder until the YouTube bench lands.
fn main() {}
