//! `sandbox-operator`: the Kubernetes operator (the reconcilers come with later work).

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("version") | None => {
            println!("sandbox-operator {}", env!("CARGO_PKG_VERSION"));
        }
        Some(other) => {
            eprintln!(
                "sandbox-operator {}: unknown command `{other}` (only `version` exists yet)",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(2);
        }
    }
}
