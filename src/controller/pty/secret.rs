//! The attach token's Secret: owned by the PtySession (garbage-collected with it), written with
//! server-side apply (create or update in one idempotent call), and the only place the token
//! is ever written. Nothing here logs the token or puts it into an error.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{debug, info, warn};

use super::TokenState;
use crate::api::PtySession;
use crate::controller::daemons::{OWNER_NAME_LABEL, OWNER_UID_LABEL};
use crate::controller::error::{Error, Result};
use crate::controller::object::{FIELD_MANAGER, Identity};
use crate::controller::process::Context;
use crate::controller::target;
use crate::wire::CreatePtyResponse;

/// The Secret's `type`, so tools (and people) can tell these Secrets apart.
pub const SECRET_TYPE: &str = "sandboxes.dev/pty-token";
/// The key holding the attach token.
pub const TOKEN_KEY: &str = "token";
/// The key holding the daemon's session id.
pub const SESSION_ID_KEY: &str = "sessionId";
/// The key holding the daemon URL the operator used.
pub const ENDPOINT_KEY: &str = "endpoint";

const SUFFIX: &str = "-pty-token";

/// The Secret's name for PtySession `name`: `<name>-pty-token`, shortened to fit the 253
/// characters of an object name.
pub fn name_for(name: &str) -> String {
    let mut base = name;
    while base.len() + SUFFIX.len() > 253 {
        let mut end = base.len() - 1;
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        base = base[..end].trim_end_matches(['-', '.']);
    }
    format!("{base}{SUFFIX}")
}

/// The Secret for `created` (pure).
pub fn build(
    obj: &PtySession,
    id: &Identity,
    created: &CreatePtyResponse,
    endpoint: &str,
) -> Secret {
    let data = BTreeMap::from([
        (
            TOKEN_KEY.to_owned(),
            ByteString(created.token.clone().into_bytes()),
        ),
        (
            SESSION_ID_KEY.to_owned(),
            ByteString(created.session_id.clone().into_bytes()),
        ),
        (
            ENDPOINT_KEY.to_owned(),
            ByteString(endpoint.as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name_for(&id.name)),
            namespace: Some(id.namespace.clone()),
            labels: Some(BTreeMap::from([
                (OWNER_UID_LABEL.to_owned(), id.uid.clone()),
                (OWNER_NAME_LABEL.to_owned(), id.name.clone()),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: PtySession::api_version(&()).into_owned(),
                kind: PtySession::kind(&()).into_owned(),
                name: obj.name_any(),
                uid: id.uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(data),
        immutable: None,
        string_data: None,
    }
}

/// Stores the token; says where it is now.
pub async fn store(
    ctx: &Context,
    obj: &PtySession,
    id: &Identity,
    created: &CreatePtyResponse,
    endpoint: &str,
) -> Result<TokenState> {
    let secret = build(obj, id, created, endpoint);
    let name = name_for(&id.name);
    let mut patch =
        serde_json::to_value(&secret).map_err(|e| Error::InvalidObject(e.to_string()))?;
    patch["apiVersion"] = "v1".into();
    patch["kind"] = "Secret".into();
    match Api::<Secret>::namespaced(ctx.kube.clone(), &id.namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => {
            info!(
                namespace = id.namespace,
                name = id.name,
                secret = name,
                "attach token stored"
            );
            Ok(TokenState::Stored)
        }
        Err(e) if target::not_served(&e) => {
            // A property of the API server, not of the object (whose TokenStored condition
            // says it): warn once per process.
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                warn!(
                    "the API server serves no core/v1 Secrets: PtySession attach tokens are dropped (see their TokenStored condition)"
                );
            }
            debug!(
                namespace = id.namespace,
                name = id.name,
                "attach token dropped: no Secrets API"
            );
            Ok(TokenState::NotServed)
        }
        // The kube error carries the status message, never the request body.
        Err(e) => Err(e.into()),
    }
}
