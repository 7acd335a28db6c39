//! `sandbox-operator`: the Kubernetes operator. `crd` prints (or writes) the CustomResourceDefinitions;
//! `run` will start the reconcilers (separate work).

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
    },
    /// Run the operator (not implemented yet).
    Run,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd { out_dir } => match crd(out_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("sandbox-operator crd: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run => {
            eprintln!("sandbox-operator run: not yet implemented");
            ExitCode::from(2)
        }
        Command::Version => {
            println!("sandbox-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn crd(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
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
