//! The admin API: JSON over TLS, `Authorization: Bearer TOKEN`.
//!
//! `GET /healthz` and `GET /metrics` need no token (only `[admin].allow` sources reach
//! this listener at all). Everything under `/api/v1/` does; errors are
//! `{"error": "...", "code": "..."}` with 400 (bad field), 401, 403, 404, 409, 413,
//! 429 (locked out), 501 (not in this version), 500 (store failure).

use super::activity::{self, Activity};
use super::auth::{self, Lockout, Subject};
use crate::audit::{AuditLog, AuthFailed, Event, Lockout as LockoutRecord};
use crate::config::{Account, Role, WindowSettings};
use crate::policy::Policy;
use crate::windows::{Action, Actor, ManagerError, State, Window, WindowManager};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// Everything the API needs; shared by all admin connections.
pub struct AdminState {
    pub policy: Arc<ArcSwap<Policy>>,
    /// What a reload may change: accounts, `[admin].allow`, window settings.
    pub dynamic: Arc<ArcSwap<AdminDynamic>>,
    pub lockout: Arc<Lockout>,
    pub windows: Arc<WindowManager>,
    pub blocks: Arc<crate::blocks::BlockManager>,
    /// For `GET /api/v1/connections`.
    pub connections: Arc<crate::listener::Shared>,
    pub reloader: Arc<crate::reload::Reloader>,
    pub tz: jiff::tz::TimeZone,
    pub log: AuditLog,
    pub log_dir: PathBuf,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The admin settings a reload swaps in whole.
pub struct AdminDynamic {
    pub accounts: Vec<Account>,
    /// Sources that may reach the admin listener at all.
    pub allow: crate::policy::IpSet,
    pub settings: WindowSettings,
}

pub type ApiResponse = Response<Full<Bytes>>;

/// A failed request, answered as `{"error", "code"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::NotFound(_) => ApiError::not_found(e.to_string()),
            ManagerError::Transition(
                t @ (crate::windows::TransitionError::SelfApproval | crate::windows::TransitionError::SelfReview),
            ) => ApiError::new(StatusCode::FORBIDDEN, "self_approval", t.to_string()),
            ManagerError::Transition(t) => ApiError::new(StatusCode::CONFLICT, "wrong_state", t.to_string()),
            ManagerError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            ManagerError::Store(s) => {
                tracing::error!(error = %s, "window store failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store",
                    "the window store failed; see the gateway's log",
                )
            }
        }
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> ApiResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, header::HeaderValue::from_static("max-age=31536000"));
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    resp
}

fn error_response(e: ApiError) -> ApiResponse {
    json(e.status, &serde_json::json!({ "error": e.message, "code": e.code }))
}

fn text(body: String, content_type: &'static str) -> ApiResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

/// Answer one request from `src`.
pub async fn handle<B>(state: Arc<AdminState>, req: Request<B>, src: IpAddr) -> ApiResponse
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text("ok\n".into(), "text/plain; charset=utf-8"),
        (&Method::GET, "/metrics") => metrics(&state).await,
        (_, p) if p.starts_with("/api/") => match api(&state, req, src).await {
            Ok(r) => r,
            Err(e) => error_response(e),
        },
        _ => error_response(ApiError::not_found("no such path")),
    }
}

async fn metrics(state: &AdminState) -> ApiResponse {
    let body = crate::metrics::http::render(&state.metrics);
    text(body, "text/plain; version=0.0.4; charset=utf-8")
}

/// Authenticate (with lockout), then route.
async fn api<B>(state: &AdminState, req: Request<B>, src: IpAddr) -> Result<ApiResponse, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let now = jiff::Timestamp::now();
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let dynamic = state.dynamic.load_full();
    let claimed = token.and_then(auth::claimed_name).filter(|n| dynamic.accounts.iter().any(|a| a.name == *n));
    let mut subjects = vec![Subject::Source(src)];
    if let Some(n) = claimed {
        subjects.push(Subject::Account(n.to_string()));
    }
    if let Some(until) = state.lockout.locked(&subjects, now) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked_out",
            format!("too many failed logins; locked until {}", crate::audit::format_ts(until, &state.tz)),
        ));
    }
    let Some(account) = token.and_then(|t| auth::authenticate(&dynamic.accounts, t)) else {
        let newly = state.lockout.fail(&subjects, now);
        let reason = if token.is_none() { "missing-token" } else { "bad-token" };
        state
            .log
            .record(Event::AuthFailed(AuthFailed { identity: claimed.map(str::to_string), src_ip: src, reason }))
            .await;
        for (subject, until) in newly {
            let (identity, locked) = match &subject {
                Subject::Account(a) => (Some(a.clone()), "account"),
                Subject::Source(_) => (claimed.map(str::to_string), "source"),
            };
            tracing::warn!(subject = %subject.describe(), "admin lockout");
            state.metrics.admin_lockouts.inc();
            state
                .log
                .record(Event::Lockout(LockoutRecord {
                    identity,
                    src_ip: src,
                    locked,
                    until: crate::audit::format_ts(until, &state.tz),
                }))
                .await;
        }
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token"));
    };
    state.lockout.succeed(&[Subject::Source(src), Subject::Account(account.name.clone())]);
    let actor = Actor { name: account.name.clone(), src: Some(src) };

    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["windows"]) => list(state, account, &query).await,
        (Method::POST, ["windows"]) => {
            let body = read_json::<CreateWindow, B>(req).await?;
            create(state, &dynamic.settings, account, &actor, body).await
        }
        (Method::GET, ["windows", id]) => show(state, account, &actor, id).await,
        (Method::POST, ["windows", id, verb]) => {
            let action = match *verb {
                "approve" => Action::Approve,
                "deny" => Action::Deny,
                "revoke" => Action::Revoke,
                "review" => Action::Review,
                _ => return Err(ApiError::not_found(format!("no action {verb:?} (approve, deny, revoke, review)"))),
            };
            let body = read_json::<ActBody, B>(req).await?;
            act(state, account, &actor, id, action, body).await
        }
        (Method::POST, ["reload"]) => reload(state, account, &actor).await,
        (Method::GET, ["blocks"]) => Ok(json(StatusCode::OK, &block_views(state).await)),
        (Method::POST, ["blocks"]) => {
            let body = read_json::<AddBlock, B>(req).await?;
            add_block(state, account, &actor, body).await
        }
        (Method::DELETE, ["blocks", cidr]) => remove_block(state, account, &actor, cidr).await,
        (Method::GET, ["connections"]) => Ok(json(StatusCode::OK, &connections(state))),
        (_, ["blocks", ..] | ["connections"] | ["reload"]) => {
            Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method", "method not allowed here"))
        }
        (_, ["windows", ..]) => Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method", "method not allowed here")),
        _ => Err(ApiError::not_found("no such API path")),
    }
}

/// Read a bounded JSON body; an empty body is `{}`. Errors name the field.
async fn read_json<T: for<'de> Deserialize<'de>, B>(req: Request<B>) -> Result<T, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body = tokio::time::timeout(Duration::from_secs(30), Limited::new(req.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", "the body did not arrive in time"))?
        .map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("bodies are at most {MAX_BODY} bytes"))
        })?
        .to_bytes();
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::bad(format!("body: {}", e.inner()))
        } else {
            ApiError::bad(format!("{path}: {}", e.inner()))
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWindow {
    pub services: Vec<String>,
    pub sources: Vec<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub duration: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActBody {
    pub note: Option<String>,
}

/// A window as the API shows it; the CLI reads the same shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowView {
    pub id: String,
    pub state: String,
    pub requester: String,
    pub approver: Option<String>,
    pub services: Vec<String>,
    pub sources: Vec<String>,
    pub start: String,
    pub end: String,
    pub reason: String,
    pub self_approved: bool,
    pub pending_review: bool,
    pub requested_at: String,
    pub approved_at: Option<String>,
    pub activated_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_note: Option<String>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<String>,
    pub review_note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
}

impl WindowView {
    pub fn new(w: &Window, tz: &jiff::tz::TimeZone) -> Self {
        let f = |t: jiff::Timestamp| crate::audit::format_ts(t, tz);
        WindowView {
            id: w.id.clone(),
            state: w.state.as_str().into(),
            requester: w.requester.clone(),
            approver: w.approver.clone(),
            services: w.services.clone(),
            sources: w.sources.iter().map(|n| n.to_string()).collect(),
            start: f(w.start),
            end: f(w.end),
            reason: w.reason.clone(),
            self_approved: w.self_approved,
            pending_review: w.pending_review(),
            requested_at: f(w.requested_at),
            approved_at: w.approved_at.map(f),
            activated_at: w.activated_at.map(f),
            ended_at: w.ended_at.map(f),
            end_note: w.end_note.clone(),
            reviewed_by: w.review.as_ref().map(|r| r.by.clone()),
            reviewed_at: w.review.as_ref().map(|r| f(r.at)),
            review_note: w.review.as_ref().map(|r| r.note.clone()),
            activity: None,
        }
    }
}

async fn list(state: &AdminState, account: &Account, query: &str) -> Result<ApiResponse, ApiError> {
    let mut states = Vec::new();
    let mut pending_review = false;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("state", "pending_review")) => pending_review = true,
            Some(("state", v)) => {
                for s in v.split(',') {
                    states.push(State::parse(s).ok_or_else(|| {
                        ApiError::bad(format!("state: {s:?} is not one of requested, approved, active, expired, denied, revoked, pending_review"))
                    })?);
                }
            }
            _ => return Err(ApiError::bad(format!("unknown query parameter {kv:?} (use state=...)"))),
        }
    }
    let windows = state.windows.list(states).await?;
    let views: Vec<WindowView> = windows
        .iter()
        .filter(|w| account.role != Role::Vendor || w.requester == account.name)
        .filter(|w| !pending_review || w.pending_review())
        .map(|w| WindowView::new(w, &state.tz))
        .collect();
    Ok(json(StatusCode::OK, &views))
}

async fn show(state: &AdminState, account: &Account, actor: &Actor, id: &str) -> Result<ApiResponse, ApiError> {
    let w = state
        .windows
        .get(id)
        .await?
        .filter(|w| account.role != Role::Vendor || w.requester == account.name)
        .ok_or_else(|| ApiError::not_found(format!("no window {id}")))?;
    let mut view = WindowView::new(&w, &state.tz);
    // Reading the log through the API is itself an audit event (HL-1.4(8)1).
    if let Some(src_ip) = actor.src {
        let what = format!("window {} activity", w.id);
        state.log.record(Event::LogRead(crate::audit::LogRead { identity: actor.name.clone(), src_ip, what })).await;
    }
    let (dir, tz, wid) = (state.log_dir.clone(), state.tz.clone(), w.id.clone());
    let summary = tokio::task::spawn_blocking(move || activity::summarize(&dir, &wid, w.start, w.end, &tz)).await;
    match summary {
        Ok(Ok(a)) => view.activity = Some(a),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the log for a window summary"),
        Err(e) => tracing::warn!(error = %e, "window summary task failed"),
    }
    Ok(json(StatusCode::OK, &view))
}

async fn act(
    state: &AdminState,
    account: &Account,
    actor: &Actor,
    id: &str,
    action: Action,
    body: ActBody,
) -> Result<ApiResponse, ApiError> {
    if account.role != Role::Admin {
        return Err(ApiError::forbidden(format!("only admins may {} windows", action.as_str())));
    }
    let note = body.note.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if action == Action::Review && note.is_none() {
        return Err(ApiError::bad("note: a review says what was checked"));
    }
    if note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::bad("note: at most 2000 characters"));
    }
    let w = state.windows.act(id, action, actor, note).await?;
    Ok(json(StatusCode::OK, &WindowView::new(&w, &state.tz)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBlock {
    /// An address or CIDR.
    pub cidr: String,
    pub reason: String,
    /// How long, e.g. "2h"; or `until`; neither: until removed.
    pub duration: Option<String>,
    pub until: Option<String>,
}

/// A block as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockView {
    pub cidr: String,
    pub reason: String,
    pub by: String,
    pub created: String,
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_connections: Option<u64>,
}

async fn block_views(state: &AdminState) -> Vec<BlockView> {
    state.blocks.list().await.iter().map(|b| block_view(state, b, None)).collect()
}

fn block_view(state: &AdminState, b: &crate::blocks::Block, cut: Option<u64>) -> BlockView {
    BlockView {
        cidr: b.net.to_string(),
        reason: b.reason.clone(),
        by: b.by.clone(),
        created: crate::audit::format_ts(b.created, &state.tz),
        expires: b.expires.map(|t| crate::audit::format_ts(t, &state.tz)),
        cut_connections: cut,
    }
}

/// `POST /api/v1/blocks`: admins only; refused at once, live connections cut.
async fn add_block(
    state: &AdminState,
    account: &Account,
    actor: &Actor,
    req: AddBlock,
) -> Result<ApiResponse, ApiError> {
    if account.role != Role::Admin {
        return Err(ApiError::forbidden("only admins may block sources"));
    }
    let net = crate::config::parse_cidr(req.cidr.trim()).map_err(|e| ApiError::bad(format!("cidr: {e}")))?;
    let net = match net {
        // An IPv4-mapped network blocks the IPv4 network it maps.
        ipnet::IpNet::V6(n) if n.prefix_len() >= 96 && n.network().to_ipv4_mapped().is_some() => {
            let v4 = n.network().to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
                .map(ipnet::IpNet::V4)
                .map_err(|e| ApiError::bad(format!("cidr: {e}")))?
        }
        n => n,
    };
    if net.prefix_len() == 0 {
        return Err(ApiError::bad("cidr: /0 would block everyone; block narrower networks"));
    }
    if let Some(src) = actor.src.filter(|s| net.contains(&crate::policy::normalize(*s))) {
        return Err(ApiError::bad(format!(
            "cidr: {net} contains your own address {src}: you would lock yourself out of the admin API"
        )));
    }
    let reason = req.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::bad("reason: say why (1 to 500 characters)"));
    }
    let now = jiff::Timestamp::now();
    let expires = match (&req.duration, &req.until) {
        (Some(_), Some(_)) => return Err(ApiError::bad("duration: give duration or until, not both")),
        (None, None) => None,
        (Some(d), None) => {
            let d = crate::config::parse_duration(d).map_err(|e| ApiError::bad(format!("duration: {e}")))?;
            let d = jiff::SignedDuration::try_from(d).map_err(|_| ApiError::bad("duration: too long"))?;
            Some(now.checked_add(d).map_err(|_| ApiError::bad("duration: too long"))?)
        }
        (None, Some(u)) => {
            let t = parse_time(u, &state.tz).ok_or_else(|| ApiError::bad(format!("until: {u:?} is not a time")))?;
            if t <= now {
                return Err(ApiError::bad("until: is in the past"));
            }
            Some(t)
        }
    };
    let block = crate::blocks::Block { net, reason, by: account.name.clone(), created: now, expires };
    let cut = state.blocks.add(block.clone(), actor).await.map_err(|e| {
        tracing::error!(error = %e, "block store failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", "the block store failed; see the gateway's log")
    })?;
    Ok(json(StatusCode::CREATED, &block_view(state, &block, Some(cut))))
}

/// `DELETE /api/v1/blocks/{cidr}` (the `/` of the CIDR written as `%2F`).
async fn remove_block(
    state: &AdminState,
    account: &Account,
    actor: &Actor,
    cidr: &str,
) -> Result<ApiResponse, ApiError> {
    if account.role != Role::Admin {
        return Err(ApiError::forbidden("only admins may remove blocks"));
    }
    let text = cidr.replace("%2F", "/").replace("%2f", "/");
    let net = crate::config::parse_cidr(&text).map_err(|e| ApiError::bad(format!("cidr: {e}")))?;
    let removed = state.blocks.remove(net, actor).await.map_err(|e| {
        tracing::error!(error = %e, "block store failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", "the block store failed; see the gateway's log")
    })?;
    if !removed {
        return Err(ApiError::not_found(format!("no block for {net}")));
    }
    Ok(json(StatusCode::OK, &serde_json::json!({ "removed": net.to_string() })))
}

/// `GET /api/v1/connections`: the allowed connections open now.
fn connections(state: &AdminState) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = state
        .connections
        .live_connections()
        .iter()
        .map(|c| {
            serde_json::json!({
                "conn": c.conn,
                "listener": c.listener,
                "service": c.service,
                "src_ip": c.src,
                "src_port": c.src_port,
                "sni": c.sni,
                "start": crate::audit::format_ts(c.start(), &state.tz),
                "bytes_in": c.counts.read.load(std::sync::atomic::Ordering::Relaxed),
                "bytes_out": c.counts.written.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
        .collect();
    out.sort_by_key(|v| v["conn"].as_u64());
    out
}

/// `POST /api/v1/reload`: admins only. 200 with what changed, or 422 with every
/// problem in the file (the running config stays in force).
async fn reload(state: &AdminState, account: &Account, actor: &Actor) -> Result<ApiResponse, ApiError> {
    if account.role != Role::Admin {
        return Err(ApiError::forbidden("only admins may reload the config"));
    }
    // In a task of its own: a client that hangs up must not cancel a reload halfway.
    let (reloader, actor) = (state.reloader.clone(), actor.clone());
    let done = tokio::spawn(async move { reloader.reload(crate::reload::Trigger::Api, &actor).await }).await.map_err(
        |_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "reload", "the reload task failed; see the log"),
    )?;
    match done {
        Ok(done) => Ok(json(StatusCode::OK, &done)),
        Err(errors) => Ok(json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "error": format!("the new config was not applied: {}", errors.join("; ")),
                "code": "config_invalid",
                "errors": errors,
            }),
        )),
    }
}

/// A time as RFC 3339; without an offset it is in the gateway's time zone.
pub fn parse_time(s: &str, tz: &jiff::tz::TimeZone) -> Option<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    let dt: jiff::civil::DateTime = s.parse().ok()?;
    dt.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
}

async fn create(
    state: &AdminState,
    settings: &WindowSettings,
    account: &Account,
    actor: &Actor,
    req: CreateWindow,
) -> Result<ApiResponse, ApiError> {
    if account.role == Role::Viewer {
        return Err(ApiError::forbidden("viewers cannot request windows"));
    }
    let policy = state.policy.load_full();
    let w = build_window(state, settings, &policy, account, req, jiff::Timestamp::now())?;
    let w = state.windows.create(w, actor).await?;
    Ok(json(StatusCode::CREATED, &WindowView::new(&w, &state.tz)))
}

/// Check a request against the rules and make the window.
fn build_window(
    state: &AdminState,
    settings: &WindowSettings,
    policy: &Policy,
    account: &Account,
    req: CreateWindow,
    now: jiff::Timestamp,
) -> Result<Window, ApiError> {
    if req.services.is_empty() {
        return Err(ApiError::bad("services: name at least one service"));
    }
    let mut services: Vec<String> = Vec::new();
    let mut longest = Duration::MAX;
    for (i, name) in req.services.iter().enumerate() {
        let Some(svc) = policy.services.iter().find(|s| s.name == *name) else {
            return Err(ApiError::bad(format!("services[{i}]: unknown service {name:?}")));
        };
        let Some(max) = svc.window_max else {
            return Err(ApiError::bad(format!(
                "services[{i}]: service {name:?} cannot be opened by a window (no window_max)"
            )));
        };
        if account.role == Role::Vendor && !account.services.contains(name) {
            return Err(ApiError::forbidden(format!(
                "services[{i}]: vendor account {} may not request {name:?}",
                account.name
            )));
        }
        longest = longest.min(max);
        if !services.contains(name) {
            services.push(name.clone());
        }
    }
    if req.sources.is_empty() || req.sources.len() > 64 {
        return Err(ApiError::bad("sources: give 1 to 64 CIDRs"));
    }
    let mut sources = Vec::new();
    for (i, s) in req.sources.iter().enumerate() {
        let net = crate::config::parse_cidr(s).map_err(|e| ApiError::bad(format!("sources[{i}]: {e}")))?;
        // An IPv4-mapped network counts as the IPv4 network it maps.
        let (prefix, limit, family) = match net {
            ipnet::IpNet::V4(n) => (n.prefix_len(), settings.max_prefix_v4, "IPv4"),
            ipnet::IpNet::V6(n) if n.prefix_len() >= 96 && n.network().to_ipv4_mapped().is_some() => {
                (n.prefix_len() - 96, settings.max_prefix_v4, "IPv4")
            }
            ipnet::IpNet::V6(n) => (n.prefix_len(), settings.max_prefix_v6, "IPv6"),
        };
        if prefix < limit {
            return Err(ApiError::bad(format!(
                "sources[{i}]: {net} is wider than /{limit}, the widest {family} source a window may open"
            )));
        }
        sources.push(net);
    }
    let start = match &req.start {
        None => now,
        Some(s) => parse_time(s, &state.tz).ok_or_else(|| {
            ApiError::bad(format!("start: {s:?} is not a time (RFC 3339, e.g. \"2026-11-21T14:00:00+08:00\", or local \"2026-11-21T14:00\")"))
        })?,
    };
    if start < now - jiff::SignedDuration::from_secs(60) {
        return Err(ApiError::bad("start: is in the past"));
    }
    let end = match (&req.end, &req.duration) {
        (Some(_), Some(_)) => return Err(ApiError::bad("end: give end or duration, not both")),
        (None, None) => return Err(ApiError::bad("end: give end or duration")),
        (Some(e), None) => {
            parse_time(e, &state.tz).ok_or_else(|| ApiError::bad(format!("end: {e:?} is not a time")))?
        }
        (None, Some(d)) => {
            let d = crate::config::parse_duration(d).map_err(|e| ApiError::bad(format!("duration: {e}")))?;
            let d = jiff::SignedDuration::try_from(d).map_err(|_| ApiError::bad("duration: too long"))?;
            start.checked_add(d).map_err(|_| ApiError::bad("duration: too long"))?
        }
    };
    if end <= start {
        return Err(ApiError::bad("end: must be after start"));
    }
    let length = Duration::try_from(end.duration_since(start)).unwrap_or(Duration::MAX);
    if length > longest {
        return Err(ApiError::bad(format!(
            "end: the window is {}, longer than the {} its services allow (window_max)",
            human(length),
            human(longest)
        )));
    }
    let reason = req.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(ApiError::bad("reason: say what work needs the access (1 to 2000 characters)"));
    }
    Ok(Window {
        id: new_id().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "random", e))?,
        state: State::Requested,
        requester: account.name.clone(),
        approver: None,
        services,
        sources,
        start,
        end,
        reason,
        self_approved: false,
        requested_at: now,
        approved_at: None,
        activated_at: None,
        ended_at: None,
        end_note: None,
        review: None,
    })
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (h, 0, 0) => format!("{h}h"),
        (0, m, 0) => format!("{m}m"),
        (h, m, _) if h > 0 => format!("{h}h{m}m"),
        (_, m, sec) => format!("{m}m{sec}s"),
    }
}

/// `w-` and 10 random hex digits: short enough to type, unique across gateways.
fn new_id() -> Result<String, String> {
    let mut b = [0u8; 5];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "the system random source failed".to_string())?;
    Ok(format!("w-{}", auth::hex(&b)))
}
