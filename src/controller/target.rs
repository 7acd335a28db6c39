//! Resolving `spec.sandbox` to a daemon URL and bearer token.
//!
//! `endpoint` targets need nothing from the cluster, so they work against an API server without
//! the core API (the local control plane); `podName`, `serviceName` DNS and `tokenSecretRef`
//! need Pods or Secrets, and fail with a [`Error::Target`] that says so.

use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;

use super::error::{Error, Result};
use crate::api::SandboxTarget;

/// A resolved daemon. `Debug` leaves the token out so it can never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The base URL.
    pub endpoint: String,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// For `podName` targets: the Pod and its UID (the incarnation the status is bound to).
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("pod_name", &self.pod_name)
            .field("pod_uid", &self.pod_uid)
            .finish()
    }
}

/// The URL of a target that needs no API lookup, or `None` for `podName` targets.
pub fn static_endpoint(namespace: &str, target: &SandboxTarget) -> Option<String> {
    if let Some(url) = &target.endpoint {
        return Some(url.trim_end_matches('/').to_owned());
    }
    target
        .service_name
        .as_ref()
        .map(|svc| format!("http://{svc}.{namespace}.svc:{}", target.port))
}

/// Resolves `target` for an object in `namespace`.
pub async fn resolve(
    kube: &kube::Client,
    namespace: &str,
    target: &SandboxTarget,
    token_file: Option<&Path>,
) -> Result<Resolved> {
    let token = token(kube, namespace, target, token_file).await?;
    if let Some(endpoint) = static_endpoint(namespace, target) {
        return Ok(Resolved {
            endpoint,
            token,
            pod_name: None,
            pod_uid: None,
        });
    }
    let name = target
        .pod_name
        .as_deref()
        .ok_or_else(|| Error::Target("spec.sandbox names no target".into()))?;
    let pod = Api::<Pod>::namespaced(kube.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| core_api_error("Pod", namespace, name, e))?;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| Error::Target(format!("Pod {namespace}/{name} has no IP yet")))?;
    // IPv6 addresses need brackets in a URL.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    Ok(Resolved {
        endpoint: format!("http://{host}:{}", target.port),
        token,
        pod_name: Some(name.to_owned()),
        pod_uid: pod.metadata.uid,
    })
}

/// The token: the named Secret key, else the operator's token file, else none.
async fn token(
    kube: &kube::Client,
    namespace: &str,
    target: &SandboxTarget,
    token_file: Option<&Path>,
) -> Result<Option<String>> {
    if let Some(sel) = &target.token_secret_ref {
        let secret = Api::<Secret>::namespaced(kube.clone(), namespace)
            .get(&sel.name)
            .await
            .map_err(|e| core_api_error("Secret", namespace, &sel.name, e))?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&sel.key))
            .ok_or_else(|| {
                Error::Target(format!(
                    "Secret {namespace}/{} has no key {}",
                    sel.name, sel.key
                ))
            })?;
        let text = String::from_utf8(bytes.0.clone()).map_err(|_| {
            Error::Target(format!(
                "Secret {namespace}/{} key {} is not UTF-8",
                sel.name, sel.key
            ))
        })?;
        return Ok(Some(text.trim().to_owned()));
    }
    match token_file {
        // Read on every resolve (a few bytes) so a rotated file is picked up without a restart.
        Some(path) => std::fs::read_to_string(path)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|e| Error::TokenFile(format!("{}: {e}", path.display()))),
        None => Ok(None),
    }
}

/// Whether an API error says the resource type is not served at all (rather than "no such
/// object"): a 404 that is not a `NotFound` Status, or a body that is no Status at all (the
/// apiextensions-apiserver answers `/api/...` with a JSON list of its paths, which decodes as
/// an empty Status with code 0).
pub fn not_served(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 0 || (s.code == 404 && s.reason != "NotFound"))
}

/// A missing object and a missing API are both Target errors, worded apart.
fn core_api_error(kind: &str, namespace: &str, name: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound" => {
            Error::Target(format!("{kind} {namespace}/{name} not found"))
        }
        e if not_served(e) => Error::Target(format!(
            "cannot read {kind} {namespace}/{name}: the API server does not serve the core API \
             (use an endpoint target and --daemon-token-file)"
        )),
        _ => Error::Kube(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_used_as_is_and_service_gets_cluster_dns() {
        let t = SandboxTarget::endpoint("http://127.0.0.1:9501/");
        assert_eq!(
            static_endpoint("ns", &t).as_deref(),
            Some("http://127.0.0.1:9501")
        );
        let t = SandboxTarget::service("box");
        assert_eq!(
            static_endpoint("ns", &t).as_deref(),
            Some("http://box.ns.svc:9501")
        );
        assert_eq!(static_endpoint("ns", &SandboxTarget::pod("p")), None);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let r = Resolved {
            endpoint: "http://x".into(),
            token: Some("s3cret".into()),
            pod_name: None,
            pod_uid: None,
        };
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
