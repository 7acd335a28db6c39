//! From `sandbox-operator attach` flags to a connectable session.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::Config;
use crate::api::PtySession;
use crate::controller::pty::secret::{ENDPOINT_KEY, SESSION_ID_KEY, TOKEN_KEY};

/// Where and how to connect. `Debug` leaves both tokens out.
#[derive(Clone)]
pub struct Target {
    /// The daemon's base URL.
    pub endpoint: String,
    /// The daemon's bearer token, if it wants one.
    pub daemon_token: Option<String>,
    /// The daemon's session id.
    pub session_id: String,
    /// The session's attach token.
    pub pty_token: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// Resolves the flags: straight from them with `--session`, else through the cluster.
pub async fn resolve(config: &Config) -> anyhow::Result<Target> {
    let daemon_token = config
        .daemon_token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    if let Some(session_id) = &config.session {
        // clap guarantees --endpoint and --token-file alongside --session.
        return Ok(Target {
            endpoint: config.endpoint.clone().unwrap_or_default(),
            daemon_token,
            session_id: session_id.clone(),
            pty_token: read_token(config.token_file.as_deref().unwrap_or(Path::new("")))?,
        });
    }
    let name = config
        .name
        .as_deref()
        .ok_or_else(|| anyhow!("name a PtySession (or use --session)"))?;
    let (kube, default_ns) = kube_client(config).await?;
    let namespace = config.namespace.clone().unwrap_or(default_ns);
    resolve_in(&kube, &namespace, name, daemon_token, config).await
}

/// Resolves PtySession `namespace/name` through `kube`: the session and daemon URL from its
/// status, the attach token from its Secret, the daemon token from `spec.sandbox` (flags win).
pub async fn resolve_in(
    kube: &kube::Client,
    namespace: &str,
    name: &str,
    daemon_token: Option<String>,
    config: &Config,
) -> anyhow::Result<Target> {
    let obj = Api::<PtySession>::namespaced(kube.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading PtySession {namespace}/{name}"))?;
    let status = obj.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or("Pending".into());
    if status.is_alive != Some(true) {
        bail!("PtySession {namespace}/{name} is {phase}: there is no live session to attach to");
    }
    let session_id = status
        .session_id
        .clone()
        .ok_or_else(|| anyhow!("PtySession {namespace}/{name} has no session yet"))?;
    let secrets = Api::<Secret>::namespaced(kube.clone(), namespace);
    // The Secret the operator wrote: the attach token, the session it is for, the daemon URL.
    let stored = match &status.token_secret_name {
        Some(secret) => Some((secret.clone(), read_secret(&secrets, secret).await?)),
        None => None,
    };
    if let Some((secret, data)) = &stored {
        // A Secret naming another session is stale: refuse rather than attach elsewhere.
        let secret_session = key(data, secret, SESSION_ID_KEY)?;
        if secret_session != session_id {
            bail!("Secret {namespace}/{secret} is for session {secret_session}, not {session_id}");
        }
    }
    let pty_token = match (&config.token_file, &stored) {
        (Some(file), _) => read_token(file)?,
        (None, Some((secret, data))) => key(data, secret, TOKEN_KEY)?,
        (None, None) => {
            let why = status
                .conditions
                .iter()
                .find(|c| c.type_ == "TokenStored")
                .map(|c| c.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "the operator has not stored it yet".into());
            bail!("PtySession {namespace}/{name}: no attach token: {why}");
        }
    };
    let endpoint = match (&config.endpoint, &stored) {
        (Some(url), _) => url.clone(),
        (None, Some((secret, data))) => key(data, secret, ENDPOINT_KEY)?,
        (None, None) => status
            .target
            .as_ref()
            .and_then(|t| t.endpoint.clone())
            .ok_or_else(|| anyhow!("PtySession {namespace}/{name}: no daemon URL in its status"))?,
    };
    let daemon_token = match (daemon_token, &obj.spec.sandbox.token_secret_ref) {
        (Some(t), _) => Some(t),
        (None, Some(sel)) => Some(key(
            &read_secret(&secrets, &sel.name).await?,
            &sel.name,
            &sel.key,
        )?),
        (None, None) => None,
    };
    Ok(Target {
        endpoint,
        daemon_token,
        session_id,
        pty_token,
    })
}

async fn kube_client(config: &Config) -> anyhow::Result<(kube::Client, String)> {
    let kube_config = crate::controller::run::kube_config(config.kubeconfig.as_deref()).await?;
    let namespace = kube_config.default_namespace.clone();
    Ok((kube::Client::try_from(kube_config)?, namespace))
}

/// A Secret's data.
async fn read_secret(
    secrets: &Api<Secret>,
    name: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, k8s_openapi::ByteString>> {
    let secret = secrets
        .get(name)
        .await
        .with_context(|| format!("reading Secret {name}"))?;
    Ok(secret.data.unwrap_or_default())
}

/// One key of a Secret's data as text (trimmed: token files and Secrets often end in a
/// newline).
fn key(
    data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>,
    secret: &str,
    key: &str,
) -> anyhow::Result<String> {
    let bytes = data
        .get(key)
        .ok_or_else(|| anyhow!("Secret {secret} has no key {key}"))?;
    let text = String::from_utf8(bytes.0.clone())
        .map_err(|_| anyhow!("Secret {secret} key {key} is not UTF-8"))?;
    Ok(text.trim().to_owned())
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}
