//! The real `sandbox-operator run` binary for the operator tests, against the local control
//! plane, with the test daemon's token file.

use std::process::{Child, Command, Stdio};

use kube::Api;
use kube::core::NamespaceResourceScope;

use super::common::Daemon;
use super::control_plane;

/// What every operator test starts with: its own namespace, a daemon, the operator watching
/// that namespace, and the API of the kind under test there.
pub struct Env<K> {
    pub daemon: Daemon,
    pub operator: Operator,
    pub api: Api<K>,
    pub ns: String,
}

/// The environment of test `test`.
pub async fn env<K>(test: &str) -> Env<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    let client = control_plane::client().await;
    let ns = control_plane::namespace(test);
    let daemon = Daemon::start();
    let operator = Operator::start(&ns, &daemon);
    Env {
        api: Api::namespaced(client, &ns),
        daemon,
        operator,
        ns,
    }
}

/// `sandbox-operator run` as a child process, killed on drop.
pub struct Operator {
    pub child: Child,
}

impl Operator {
    pub fn start(namespace: &str, daemon: &Daemon) -> Operator {
        let child = Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(control_plane::kubeconfig())
            .args(["--namespace", namespace])
            .arg("--daemon-token-file")
            .arg(daemon.dir.path().join("token"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,sandbox_operator=info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sandbox-operator");
        Operator { child }
    }

    /// SIGKILL: a crash, no cleanup.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.crash();
    }
}
