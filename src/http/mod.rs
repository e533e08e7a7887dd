//! The HTTP surface: thin handlers over the router, the channels and the store, with all state in
//! one [`AppState`]. Routes are listed in [`routes`]; the OpenAPI document is generated from the
//! handlers' annotations.

pub mod auth;
mod channels;
mod console;
mod conversations;
mod error;
mod handlers;
mod kb;
mod nlu;
mod socket_replies;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, Method, StatusCode};
use axum::routing::{get, post, put};
use axum::Extension;
use frontdesk_channels::webchat::WebChat;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

pub use error::{ApiError, BodyLimit};

use crate::config::Config;
use crate::router::Router;
use crate::store::Store;

/// Everything a handler may need.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub router: Arc<Router>,
    pub webchat: Option<Arc<WebChat>>,
    /// Every channel now (the configured ones and those added through the admin API).
    pub channels: Arc<crate::registry::Registry>,
    pub channel_manager: Arc<crate::registry::Manager>,
    pub knowledge: Option<Arc<crate::knowledge::KnowledgeBase>>,
    pub nlu: Option<crate::nlu::Nlu>,
    pub metrics: PrometheusHandle,
    pub desk: Arc<crate::desk::Desk>,
    pub live: Arc<crate::live::Live>,
    pub logins: Arc<auth::LoginLimiter>,
    pub sessions: Arc<crate::sessions::Sessions>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Frontdesk API", description = "Omnichannel customer-support gateway"),
    paths(
        handlers::create_widget_session,
        handlers::chat_socket,
        handlers::webhook_message,
        handlers::list_deliveries,
        handlers::retry_delivery,
        channels::list_channels,
        channels::get_channel,
        channels::create_channel,
        channels::put_channel,
        channels::delete_channel,
        channels::telegram_webhook,
        handlers::healthz,
        handlers::readyz,
        kb::search,
        kb::list,
        kb::get,
        kb::create,
        kb::put,
        kb::delete,
        nlu::parse,
        auth::login,
        auth::logout,
        auth::me,
        conversations::agents,
        conversations::set_status,
        conversations::teams,
        conversations::canned,
        conversations::list,
        conversations::get,
        conversations::take,
        conversations::transfer,
        conversations::resolve,
        conversations::hand_back,
        conversations::reply,
        conversations::note,
        conversations::typing,
        conversations::suggestions,
        console::socket,
    ),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        handlers::SessionRequest,
        handlers::DeliveryList,
        handlers::WebhookAccepted,
        channels::ChannelView,
        channels::ChannelList,
        crate::store::Delivery,
        frontdesk_channels::webchat::WidgetSession,
        frontdesk_channels::webhook::WebhookInbound,
        frontdesk_channels::webhook::WebhookOutbound,
        frontdesk_channels::Author,
        frontdesk_channels::QuickReply,
        crate::knowledge::Article,
        crate::knowledge::Part,
        crate::knowledge::Hit,
        crate::knowledge::Decision,
        crate::knowledge::SearchResult,
        crate::knowledge::PutOutcome,
        kb::ArticleView,
        kb::ArticleList,
        kb::PutResult,
        nlu::ParseRequest,
        conversations::ConversationView,
        conversations::ConversationList,
        conversations::ConversationAnswer,
        conversations::TransferRequest,
        conversations::TextRequest,
        conversations::Posted,
        conversations::NoteAnswer,
        conversations::TypingRequest,
        conversations::Suggestions,
        conversations::AgentList,
        conversations::StatusRequest,
        conversations::TeamList,
        conversations::CannedList,
        auth::LoginRequest,
        auth::LoginAnswer,
        auth::Me,
        crate::agents::Agent,
        crate::agents::Role,
        crate::desk::Summary,
        crate::desk::AgentRef,
        crate::desk::ContactRef,
        crate::desk::LastMessage,
        crate::desk::View,
        crate::desk::Canned,
        crate::desk::Suggestion,
        crate::store::Conversation,
        crate::store::TranscriptMessage,
        crate::store::ConversationEvent,
        crate::nlu::Parse,
        crate::nlu::LabelScore,
        crate::nlu::intent::RankedIntent,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The read buffer of each WebSocket (widget and console). tungstenite zero-fills the whole buffer
/// on every read (128 KiB by default), which cost more CPU than the messages themselves; frames
/// here are small, and a larger frame still grows the buffer to its size.
pub(crate) const SOCKET_READ_BUFFER: usize = 4 * 1024;

/// All routes of the gateway.
pub fn routes(state: AppState) -> axum::Router {
    let limit = state.config.http.max_body_bytes;
    // The widget is embedded on customers' own sites: any origin may open a session. OPTIONS has
    // a route of its own so the browser's preflight reaches the CORS layer (which answers it)
    // instead of the method-not-allowed fallback.
    let widget_sessions = axum::Router::new()
        .route(
            "/api/v1/widget/sessions",
            post(handlers::create_widget_session).options(|| async { StatusCode::NO_CONTENT }),
        )
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::POST])
                .allow_headers([header::CONTENT_TYPE]),
        );
    axum::Router::new()
        .merge(widget_sessions)
        .route("/", get(handlers::demo_page))
        .route("/widget.js", get(handlers::widget_script))
        .route("/ws/chat", get(handlers::chat_socket))
        .route("/api/v1/kb/search", get(kb::search))
        .route("/api/v1/kb/articles", get(kb::list).post(kb::create))
        .route("/api/v1/nlu/parse", post(nlu::parse))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/ws/console", get(console::socket))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/me", get(auth::me))
        .route("/api/v1/agents", get(conversations::agents))
        .route("/api/v1/agents/me/status", put(conversations::set_status))
        .route("/api/v1/teams", get(conversations::teams))
        .route("/api/v1/canned", get(conversations::canned))
        .route("/api/v1/conversations", get(conversations::list))
        .route("/api/v1/conversations/{id}", get(conversations::get))
        .route("/api/v1/conversations/{id}/take", post(conversations::take))
        .route(
            "/api/v1/conversations/{id}/transfer",
            post(conversations::transfer),
        )
        .route(
            "/api/v1/conversations/{id}/resolve",
            post(conversations::resolve),
        )
        .route(
            "/api/v1/conversations/{id}/handback",
            post(conversations::hand_back),
        )
        .route(
            "/api/v1/conversations/{id}/messages",
            post(conversations::reply),
        )
        .route(
            "/api/v1/conversations/{id}/notes",
            post(conversations::note),
        )
        .route(
            "/api/v1/conversations/{id}/typing",
            post(conversations::typing),
        )
        .route(
            "/api/v1/conversations/{id}/suggestions",
            get(conversations::suggestions),
        )
        .route(
            "/api/v1/kb/articles/{id}",
            get(kb::get).put(kb::put).delete(kb::delete),
        )
        .route(
            "/api/v1/channels",
            get(channels::list_channels).post(channels::create_channel),
        )
        .route(
            "/api/v1/channels/{name}",
            get(channels::get_channel)
                .put(channels::put_channel)
                .delete(channels::delete_channel),
        )
        .route(
            "/api/v1/channels/{name}/messages",
            post(handlers::webhook_message),
        )
        .route(
            "/api/v1/telegram/{name}/webhook",
            post(channels::telegram_webhook),
        )
        .route("/api/v1/deliveries", get(handlers::list_deliveries))
        .route(
            "/api/v1/deliveries/{id}/retry",
            post(handlers::retry_delivery),
        )
        .route("/api/v1/openapi.json", get(handlers::openapi))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
