//! `sandbox-daemon`: the in-pod process and terminal daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use sandbox_operator::daemon::{self, Config};

/// The in-pod daemon of sandbox-operator: starts, watches, signals and kills processes (and PTY
/// sessions) over the Tensorlake-compatible HTTP API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on. Defaults to 0.0.0.0:9501, or 127.0.0.1:9501 with
    /// --insecure-no-auth.
    #[arg(long, env = "SANDBOX_DAEMON_LISTEN")]
    listen: Option<SocketAddr>,
    /// File holding the bearer token (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "SANDBOX_DAEMON_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Run without authentication. Only allowed on a loopback address.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Directory for the persisted process table and idempotency keys.
    #[arg(long, env = "SANDBOX_DAEMON_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// File routes resolve paths under this directory.
    #[arg(long, env = "SANDBOX_DAEMON_FILES_ROOT", default_value = "/")]
    files_root: PathBuf,
    /// Retained bytes per output stream and process (first half and last half kept).
    #[arg(long, env = "SANDBOX_DAEMON_OUTPUT_LIMIT_BYTES", default_value_t = 4 << 20)]
    output_limit_bytes: u64,
    /// Largest JSON request body.
    #[arg(long, default_value_t = 1 << 20)]
    max_request_bytes: usize,
    /// Largest file upload.
    #[arg(long, default_value_t = 256 << 20)]
    max_file_bytes: usize,
    /// Ended process records kept before the oldest are forgotten.
    #[arg(long, default_value_t = 100_000)]
    max_records: usize,
    /// Grace between the stop signal and SIGKILL when a request does not say.
    #[arg(long, default_value_t = 5_000)]
    kill_grace_ms: u64,
    /// On SIGTERM, how long children get after their stop signal before SIGKILL.
    #[arg(long, default_value_t = 10_000)]
    shutdown_grace_ms: u64,
    /// Do not create per-process cgroups (no OOM attribution, no memory limits).
    #[arg(long)]
    no_cgroups: bool,
    /// Create per-process cgroups under this directory instead of the daemon's own cgroup.
    #[arg(long, env = "SANDBOX_DAEMON_CGROUP_PARENT")]
    cgroup_parent: Option<PathBuf>,
    /// Live PTY sessions allowed at once (POST /pty answers 429 beyond).
    #[arg(long, env = "SANDBOX_DAEMON_MAX_PTY_SESSIONS", default_value_t = 64)]
    max_pty_sessions: usize,
    /// Grace between SIGHUP and SIGKILL when a PTY session is killed or expires.
    #[arg(long, default_value_t = 2_000)]
    pty_kill_grace_ms: u64,
    /// How long ended PTY sessions stay queryable unless a create request says otherwise.
    #[arg(long, default_value_t = 300)]
    pty_retain_after_exit_secs: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SANDBOX_DAEMON_LOG_JSON")]
    log_json: bool,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

/// Environment variable holding the token itself (an alternative to --token-file).
const TOKEN_ENV: &str = "SANDBOX_DAEMON_TOKEN";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", daemon::openapi_document());
        return Ok(());
    }
    sandbox_operator::logging::init(args.log_json);
    let config = config_from(args)?;
    // Three workers per core (2..8): a start runs posix_spawn on its worker, which blocks that
    // worker until the child has exec'd, so one worker per core leaves cores idle under
    // concurrent starts. 16 clients on 2 cores, against 16 threads spawning with no daemon:
    // 4 workers 0.71x, 6 workers 0.77x, 8 workers 0.74x of that floor.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads((cores * 3).clamp(2, 8))
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(config))
}

fn config_from(args: Args) -> anyhow::Result<Config> {
    let token = match (&args.token_file, std::env::var(TOKEN_ENV).ok()) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            Some(text.trim().to_owned())
        }
        (None, Some(value)) => Some(value.trim().to_owned()),
        (None, None) => None,
    };
    // Children must never inherit the token. Removing it here, once, also spares spawn from
    // filtering it out of every child's environment (which costs std a copy of it all).
    if std::env::var_os(TOKEN_ENV).is_some() {
        // SAFETY: no other thread exists yet (the runtime is built after this), so nothing can
        // read the environment concurrently.
        unsafe { std::env::remove_var(TOKEN_ENV) };
    }
    let token = token.filter(|t| !t.is_empty());
    let listen = match (args.listen, token.is_some()) {
        (Some(addr), _) => addr,
        (None, true) => SocketAddr::from(([0, 0, 0, 0], sandbox_operator::wire::DEFAULT_PORT)),
        (None, false) => SocketAddr::from(([127, 0, 0, 1], sandbox_operator::wire::DEFAULT_PORT)),
    };
    match (&token, args.insecure_no_auth) {
        (Some(_), true) => bail!("--insecure-no-auth contradicts the configured token; drop one"),
        (None, false) => bail!(
            "no token configured: pass --token-file PATH or set {TOKEN_ENV} (or, for local \
             experiments only, --insecure-no-auth, which binds loopback only)"
        ),
        (None, true) if !listen.ip().is_loopback() => {
            bail!("--insecure-no-auth only binds a loopback address, not {listen}")
        }
        _ => {}
    }
    Ok(Config {
        listen,
        token,
        state_dir: args.state_dir,
        files_root: args.files_root,
        output_limit_bytes: args.output_limit_bytes.max(1024),
        max_request_bytes: args.max_request_bytes,
        max_file_bytes: args.max_file_bytes,
        max_records: args.max_records.max(1),
        default_kill_grace_ms: args.kill_grace_ms,
        shutdown_grace_ms: args.shutdown_grace_ms,
        cgroups: !args.no_cgroups,
        cgroup_parent: args.cgroup_parent,
        max_pty_sessions: args.max_pty_sessions,
        pty_kill_grace_ms: args.pty_kill_grace_ms,
        pty_retain_after_exit_secs: args.pty_retain_after_exit_secs,
        ..Config::default()
    })
}
