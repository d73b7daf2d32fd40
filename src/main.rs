//! The `baton` executable; the flow is [`baton::main`], top-down in `lib.rs`.

fn main() -> std::process::ExitCode {
    baton::main()
}
