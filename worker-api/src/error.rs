//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the HTTP
//! status that clients act on (the `openai` package raises `BadRequestError` for 400,
//! `AuthenticationError` for 401, `RateLimitError` for 429 and retries 429 and 5xx).

use serde::Serialize;

/// A request that cannot be served, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// OpenAI's error type: `invalid_request_error`, `authentication_error`, …
    pub kind: &'static str,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// A machine-readable code, when there is one.
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400: the request is wrong; `param` names the field.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// 400: the body is not the JSON the endpoint takes.
    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 401: no key, or the wrong one.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: 401,
            kind: "authentication_error",
            message: "missing or wrong API key: send `Authorization: Bearer <key>` with the \
                      `api_key` of mate's `[api]` config"
                .into(),
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 404: no such endpoint.
    pub fn not_found(path: &str) -> ApiError {
        ApiError {
            status: 404,
            kind: "invalid_request_error",
            message: format!(
                "no endpoint {path}: mate serves /v1/chat/completions, /v1/completions, \
                 /v1/models, /health and /metrics"
            ),
            param: None,
            code: Some("unknown_url"),
        }
    }

    /// 413: the body is over the cap.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: 413,
            kind: "invalid_request_error",
            message: format!(
                "the request body is over {limit} bytes, the most `[api] max_body_bytes` allows"
            ),
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 429: the queue is full (the server adds `Retry-After`); `why` says how full.
    pub fn queue_full(why: impl Into<String>) -> ApiError {
        ApiError {
            status: 429,
            kind: "rate_limit_error",
            message: why.into(),
            param: None,
            code: Some("queue_full"),
        }
    }

    /// 503: the model does not serve now (loading, restarting, failed); `why` says which.
    pub fn unavailable(why: impl Into<String>) -> ApiError {
        ApiError {
            status: 503,
            kind: "server_error",
            message: why.into(),
            param: None,
            code: Some("model_unavailable"),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        let body = Body {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // A struct of strings always serializes.
        serde_json::to_string(&body).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn errors_have_openais_shape_and_the_status_clients_act_on() {
        let e = ApiError::invalid("n", "n must be 1");
        let body: Value = serde_json::from_str(&e.to_json()).expect("JSON");
        assert_eq!(e.status, 400);
        assert_eq!(body["error"]["message"], "n must be 1");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "n");
        assert!(body["error"]["code"].is_null());
        let statuses: Vec<u16> = [
            ApiError::unauthorized(),
            ApiError::not_found("/v2"),
            ApiError::too_large(1 << 20),
            ApiError::queue_full("8 requests already wait"),
            ApiError::unavailable("loading the model"),
        ]
        .iter()
        .map(|e| e.status)
        .collect();
        assert_eq!(statuses, [401, 404, 413, 429, 503]);
        let body: Value = serde_json::from_str(&ApiError::unauthorized().to_json()).expect("JSON");
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert!(body["error"]["param"].is_null());
    }
}
