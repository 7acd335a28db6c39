//! Types shared by both kinds: where the daemon is, environment variables, Secret references,
//! and the conditions list.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The port `sandbox-daemon` listens on unless told otherwise.
pub const DEFAULT_DAEMON_PORT: i32 = 9501;

fn default_daemon_port() -> i32 {
    DEFAULT_DAEMON_PORT
}

/// Where the sandbox daemon is: exactly one of `podName`, `serviceName` or `endpoint`.
///
/// Validated by the API server, so the operator never has to guess which one wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.podName) ? 1 : 0) + (has(self.serviceName) ? 1 : 0) + (has(self.endpoint) ? 1 : 0) == 1"
).message("exactly one of podName, serviceName or endpoint must be set"))]
pub struct SandboxTarget {
    /// A Pod in the object's namespace whose sandbox-daemon is reached at the Pod IP and `port`.
    /// Status is bound to that Pod's UID: a replaced Pod makes the object `Lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub pod_name: Option<String>,

    /// A Service in the object's namespace in front of the sandbox-daemon, reached at `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub service_name: Option<String>,

    /// The daemon's base URL, absolute http:// or https:// (for example
    /// `http://127.0.0.1:9501`); `port` is ignored. For daemons outside the cluster and for
    /// local development.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(
        "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''"
    ).message("endpoint must be an absolute http:// or https:// URL, e.g. http://127.0.0.1:9501"))]
    pub endpoint: Option<String>,

    /// The daemon's port for `podName` and `serviceName` targets.
    #[serde(default = "default_daemon_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The Secret key holding the daemon's bearer token. Without it the operator uses its own
    /// token file (or no token, for a daemon that needs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
}

impl SandboxTarget {
    /// A target addressed by URL, with the default port (ignored for endpoints).
    pub fn endpoint(url: impl Into<String>) -> Self {
        Self {
            endpoint: Some(url.into()),
            ..Self::none()
        }
    }

    /// A target addressed by the name of a Pod in the object's namespace.
    pub fn pod(name: impl Into<String>) -> Self {
        Self {
            pod_name: Some(name.into()),
            ..Self::none()
        }
    }

    /// A target addressed by the name of a Service in the object's namespace.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            service_name: Some(name.into()),
            ..Self::none()
        }
    }

    /// No target kind yet (invalid on its own; the constructors fill in one).
    fn none() -> Self {
        Self {
            pod_name: None,
            service_name: None,
            endpoint: None,
            port: DEFAULT_DAEMON_PORT,
            token_secret_ref: None,
        }
    }
}

/// A key of a Secret in the object's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// One environment variable for the process: exactly one of `value` or `valueFrom`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)")
    .message("exactly one of value or valueFrom must be set"))]
pub struct EnvVar {
    /// The variable's name; unique within the list.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^=]+$"))]
    pub name: String,
    /// The literal value (may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub value: Option<String>,
    /// Where the value comes from instead of a literal; read when the process starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

impl EnvVar {
    /// A variable with a literal value.
    pub fn value(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    /// A variable whose value is a key of a Secret.
    pub fn secret(name: impl Into<String>, secret: SecretKeySelector) -> Self {
        Self {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: secret,
            }),
        }
    }
}

/// The source of an environment variable's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in the object's namespace.
    pub secret_key_ref: SecretKeySelector,
}

/// The resolved daemon an object is bound to, so a replaced Pod or a restarted daemon is
/// noticed instead of reporting a stale process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTarget {
    /// The Pod the daemon runs in (empty for `serviceName` and `endpoint` targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The UID of that Pod incarnation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "podUID")]
    pub pod_uid: Option<String>,
    /// The base URL the operator talks to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The daemon's boot id; a different one means the daemon restarted and lost its processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// The schema of a `conditions` field: a list-map keyed by `type`, so server-side apply merges
/// conditions written by different field managers instead of replacing the whole list.
///
/// A schema function (rather than `#[x_kube(merge_strategy)]`) keeps the status structs plain
/// `JsonSchema` derives.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = Vec::<Condition>::json_schema(generator);
    let object = schema.ensure_object();
    object.insert("x-kubernetes-list-type".into(), "map".into());
    object.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}
