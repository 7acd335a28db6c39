//! Kubernetes Events on phase transitions, best effort.
//!
//! Events are for people; the status is the record. An API server without the core API (the
//! local control plane) answers 404: the recorder warns once and stops trying, and no other
//! failure ever fails a reconcile. Notes are built by the caller from status fields only, so a
//! token can never end up in one.

use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

const COMPONENT: &str = "sandbox-operator";

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Publishes core/v1 Events until the API server shows it has none.
pub struct Recorder {
    kube: kube::Client,
    disabled: AtomicBool,
    instance: String,
}

impl Recorder {
    /// A recorder; `instance` tells replicas apart (`reportingInstance`).
    pub fn new(kube: kube::Client, instance: String) -> Self {
        Self {
            kube,
            disabled: AtomicBool::new(false),
            instance,
        }
    }

    /// Publishes one Event about `obj` (CamelCase `reason`).
    pub async fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        if self.disabled.load(Ordering::Relaxed) {
            return;
        }
        let Some(namespace) = obj.namespace() else {
            return;
        };
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", obj.name_any())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: Some(obj.name_any()),
                namespace: Some(namespace.clone()),
                uid: obj.uid(),
                resource_version: obj.resource_version(),
                ..Default::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(note),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_owned()),
            reporting_component: Some(COMPONENT.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            source: Some(EventSource {
                component: Some(COMPONENT.to_owned()),
                host: None,
            }),
            ..Default::default()
        };
        match Api::<Event>::namespaced(self.kube.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
        {
            Ok(_) => {}
            Err(e) if super::target::not_served(&e) => {
                if !self.disabled.swap(true, Ordering::Relaxed) {
                    warn!("the API server serves no core/v1 Events: not publishing Events");
                }
            }
            Err(e) => debug!(error = %e, reason, "publishing an Event failed"),
        }
    }
}
