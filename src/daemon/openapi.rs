//! The OpenAPI 3.1 document of the daemon API, generated from the route annotations and the
//! `wire` types, so it cannot drift from the code. Committed as `openapi/sandbox-daemon.json`.

use std::sync::LazyLock;

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::routes::{files, processes, pty, system};
use crate::wire;

#[derive(OpenApi)]
#[openapi(
    info(title = "sandbox-daemon API", description = "The in-pod daemon of sandbox-operator: the Tensorlake sandbox daemon API plus additions (idempotency keys, labels, events, wait, bounded output, persistence, PTY session lifecycle)."),
    paths(
        processes::start, processes::run, processes::list, processes::get, processes::kill,
        processes::signal, processes::restart, processes::stdin, processes::stdin_close,
        processes::stdout, processes::stderr, processes::output,
        processes::stdout_follow, processes::stderr_follow, processes::output_follow,
        processes::wait,
        pty::create, pty::list, pty::get, pty::resize, pty::kill, pty::attach,
        files::read, files::write, files::delete, files::list,
        system::health, system::info, system::events, system::openapi,
    ),
    components(schemas(
        wire::DaemonEvent, wire::HelloEvent, wire::OutputLine, wire::RunStarted, wire::RunFinished,
    )),
    modifiers(&BearerAuth),
    security(("bearerAuth" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut text = doc.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
});

/// The document as pretty JSON.
pub fn openapi_document() -> String {
    DOCUMENT.clone()
}
