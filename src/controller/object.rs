//! What every reconciler does with its object, whatever its kind: read its identity, stamp
//! times the way the API server stores them, and write its status with server-side apply only
//! when it changed.

use std::fmt::Debug;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::debug;

use super::error::{Error, Result};
use crate::api::Time;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sandbox-operator";

/// An object's identity; the schema and the API server guarantee all three.
pub struct Identity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The identity of `obj`.
pub fn identity<K: Resource>(obj: &K) -> Result<Identity> {
    Ok(Identity {
        namespace: obj
            .namespace()
            .ok_or_else(|| Error::InvalidObject("no namespace".into()))?,
        name: obj.name_any(),
        uid: obj
            .uid()
            .ok_or_else(|| Error::InvalidObject("no uid".into()))?,
    })
}

/// Milliseconds since the epoch as a Time, cut to whole seconds: that is what a metav1.Time
/// serializes to, and a finer value would never compare equal to what the server returns.
pub fn ms_time(ms: i64) -> Option<Time> {
    Timestamp::from_second(ms.div_euclid(1000)).ok().map(Time)
}

/// Now, in whole seconds (see [`ms_time`]).
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Server-side apply of the status subresource, only when it differs from the current one.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    desired: &S,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    debug!(name, kind = %K::kind(&()), "status written");
    Ok(())
}
