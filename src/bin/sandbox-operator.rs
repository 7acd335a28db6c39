//! `sandbox-operator`: the Kubernetes operator. `crd` prints (or writes) the CustomResourceDefinitions;
//! `run` runs the reconcilers (see `sandbox_operator::controller::run`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sandbox_operator::api;

#[derive(Parser)]
#[command(
    name = "sandbox-operator",
    version,
    about = "Kubernetes-native processes and terminals for sandboxes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as one multi-document YAML stream.
    Crd {
        /// Write one file per CRD (`<group>_<plural>.yaml`) into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Print the Markdown field reference (`docs/crd-reference.md`) instead of the YAML.
        #[arg(long, conflicts_with = "out_dir")]
        reference: bool,
    },
    /// Run the operator: reconcile SandboxProcess and PtySession objects until SIGTERM.
    Run {
        #[command(flatten)]
        config: sandbox_operator::controller::Config,
        /// Log as JSON lines instead of text.
        #[arg(long, env = "SANDBOX_OPERATOR_LOG_JSON")]
        log_json: bool,
    },
    /// Attach this terminal to a PtySession (Ctrl-] detaches; the session keeps running).
    Attach {
        #[command(flatten)]
        config: sandbox_operator::attach::Config,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd { out_dir, reference } => match crd(out_dir, reference) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("sandbox-operator crd: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, log_json } => {
            sandbox_operator::logging::init(log_json);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("sandbox-operator run: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(sandbox_operator::controller::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("sandbox-operator run: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Attach { config } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("sandbox-operator attach: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(sandbox_operator::attach::run(config));
            // The stdin thread may still sit in a blocking read: do not wait for it.
            runtime.shutdown_background();
            match result {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(err) => {
                    eprintln!("sandbox-operator attach: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Version => {
            println!("sandbox-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn crd(out_dir: Option<PathBuf>, reference: bool) -> anyhow::Result<()> {
    if reference {
        print!("{}", api::reference::reference_markdown());
        return Ok(());
    }
    let Some(dir) = out_dir else {
        print!("{}", api::crds_yaml()?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in api::crds() {
        let path = dir.join(api::crd_file_name(&crd));
        std::fs::write(&path, api::crd_yaml(&crd)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
