//! The error envelope and the extractors that turn axum's rejections into it.
//!
//! Every error a client can cause is a 4xx with `{"error": {"code", "message"}}` where the
//! message says what to fix. A 5xx body is generic; its cause goes to the log.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::MAX_BODY_BYTES;
use crate::select::Refusal;
use crate::store;

/// The code of a 503 for a database out of reach.
const STORE_UNAVAILABLE: &str = "store_unavailable";

/// When a client refused for a database out of reach should try again: a little over the
/// pool's 3-second wait for a connection, so that a retry can see a database that is back.
const STORE_RETRY_SECONDS: &str = "5";

/// An error answer: status, a stable code and a message saying what to fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// Longest message an answer carries. Messages quote what the client sent (a parameter, a
/// name, a value); a client sending kilobytes of it gets the start back, not all of it
/// (twice, when the deserialiser names it twice).
const MESSAGE_CHARS: usize = 400;

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        let mut message = message.into();
        if let Some((cut, _)) = message.char_indices().nth(MESSAGE_CHARS) {
            message.truncate(cut);
            message.push_str("… (cut)");
        }
        ApiError {
            status,
            code,
            message,
        }
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A server fault: the cause is logged here, the client gets a generic message.
    pub(crate) fn internal(cause: &str) -> ApiError {
        tracing::error!(cause, "request failed inside geobridge");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the log",
        )
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// The error envelope, `{"error": {"code", "message"}}`, as the client gets it.
    pub(crate) fn body(&self) -> impl Serialize + '_ {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let extra = match (self.status, self.code) {
            (StatusCode::UNAUTHORIZED, _) => Some((header::WWW_AUTHENTICATE, "Bearer")),
            (_, STORE_UNAVAILABLE) => Some((header::RETRY_AFTER, STORE_RETRY_SECONDS)),
            _ => None,
        };
        if let Some((name, value)) = extra {
            let value = header::HeaderValue::from_static(value);
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            _ => "unreadable_body",
        };
        let message = match code {
            "body_too_large" => format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            "unsupported_media_type" => "send the body with Content-Type: application/json".into(),
            "unreadable_body" => format!(
                "{}; send the whole body, as many bytes as its Content-Length says or in valid \
                 chunked encoding",
                rejection.body_text()
            ),
            _ => rejection.body_text(),
        };
        ApiError::new(rejection.status(), code, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        let text = rejection.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        let message = format!(
            "query string: {detail}; send each of the route's parameters once and no others \
             (see /openapi.json)"
        );
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        if rejection.status().is_server_error() {
            return ApiError::internal(&rejection.body_text());
        }
        let message = format!(
            "{}; percent-encode the path as UTF-8",
            rejection.body_text()
        );
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", message)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_region",
            refusal.to_string(),
        )
    }
}

impl From<store::Error> for ApiError {
    fn from(error: store::Error) -> ApiError {
        match error {
            store::Error::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            managed @ store::Error::ManagedByConfig { .. } => {
                let message = managed.to_string();
                ApiError::new(StatusCode::CONFLICT, "managed_by_config", message)
            }
            store::Error::Database(cause) if unreachable(&cause) => {
                tracing::error!(%cause, "the database cannot be reached; request refused");
                let message = format!(
                    "the database cannot be reached just now; retry in {STORE_RETRY_SECONDS} \
                     seconds"
                );
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, STORE_UNAVAILABLE, message)
            }
            other => ApiError::internal(&other.to_string()),
        }
    }
}

/// True for errors that say the database server is out of reach (down, restarting, cut
/// off), not that the request or the data was wrong.
/// SQLSTATE classes 08 (connection exception) and 57 (operator intervention: shutting
/// down, starting up, connection terminated) count as out of reach, as do a database or a
/// table that is gone (3D000, 42P01: dropped under a running geobridge, which creates its
/// schema only at start-up; the log names which).
fn unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57") || code == "3D000" || code == "42P01"
        }),
        other => matches!(
            other,
            sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed
        ),
    }
}

/// `Json` whose rejections use the error envelope.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T> FromRequest<S> for JsonBody<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(value))
    }
}

/// `Query` whose rejections use the error envelope.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(QueryParams(value))
    }
}

/// `Path` whose rejections (such as a parameter that is not UTF-8) use the error envelope.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T> FromRequestParts<S> for PathParam<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(PathParam(value))
    }
}
