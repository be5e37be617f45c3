//! The `[api]` table: the OpenAI-compatible front door.

use std::net::{IpAddr, SocketAddr};

use mate_protocol::{ApiOptions, Sampling};
use serde::Deserialize;

use super::ConfigError;

/// Where the API listens unless the config says otherwise: loopback, port 6283 ("MATE" on a
/// phone keypad), clear of Ollama's 11434, llama-server's 8080, LM Studio's 1234 and
/// KoboldCpp's 5001.
pub const DEFAULT_API_ADDRESS: &str = "127.0.0.1:6283";

/// The environment variable that sets the address (it beats the config file, as
/// `OLLAMA_HOST` does for Ollama).
pub const API_ADDRESS_ENV: &str = "MATE_API_ADDRESS";

/// The environment variable that sets the API key (it beats the config file, so the key need
/// not be written there).
pub const API_KEY_ENV: &str = "MATE_API_KEY";

/// What the `[api]` table may say.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub enabled: Option<bool>,
    pub address: Option<String>,
    pub api_key: Option<String>,
    pub max_body_bytes: Option<u32>,
    pub cors_origins: Option<Vec<String>>,
    /// Whether API replies drive the avatar as chat turns do.
    pub avatar: Option<bool>,
    pub max_connections: Option<u32>,
    pub request_timeout_ms: Option<u32>,
}

/// The `[api]` table, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    pub enabled: bool,
    /// What the worker is sent (the supervisor fills in the model's name and `[chat]`'s
    /// sampling).
    pub options: ApiOptions,
    pub avatar: bool,
}

pub(super) fn api(c: ApiConfig) -> Result<ApiSettings, ConfigError> {
    let address = std::env::var(API_ADDRESS_ENV)
        .ok()
        .filter(|a| !a.is_empty())
        .or(c.address)
        .unwrap_or_else(|| DEFAULT_API_ADDRESS.into());
    let api_key = std::env::var(API_KEY_ENV)
        .ok()
        .or(c.api_key)
        .filter(|k| !k.is_empty());
    let enabled = c.enabled.unwrap_or(true);
    if enabled {
        check_address(&address, api_key.is_some())?;
    }
    if let Some(key) = &api_key {
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::Invalid(
                "[api] api_key must not hold spaces or control characters (clients send it in \
                 an HTTP header)"
                    .into(),
            ));
        }
    }
    Ok(ApiSettings {
        enabled,
        options: ApiOptions {
            address,
            api_key,
            max_body_bytes: c.max_body_bytes.unwrap_or(4 << 20).clamp(1024, 256 << 20),
            cors_origins: c.cors_origins.unwrap_or_default(),
            model: String::new(),
            max_connections: c.max_connections.unwrap_or(256).clamp(1, 65_536),
            request_timeout_ms: c.request_timeout_ms.unwrap_or(30_000).clamp(100, 3_600_000),
            // Filled in when the worker is sent its options, as the model's name.
            sampling: Sampling::default(),
        },
        avatar: c.avatar.unwrap_or(true),
    })
}

/// An address is `ip:port` (or `localhost:port`); one other machines can reach needs a key.
fn check_address(address: &str, has_key: bool) -> Result<(), ConfigError> {
    // `None`: localhost, which is loopback.
    let ip = ip_and_port("[api]", address, DEFAULT_API_ADDRESS)?;
    if !ip.is_none_or(|ip| ip.is_loopback()) && !has_key {
        let what = match ip {
            Some(ip) if ip.is_unspecified() => "every network interface",
            _ => "a network interface other machines can reach",
        };
        return Err(ConfigError::Invalid(format!(
            "[api] address = {address:?} listens on {what}, and no api_key is set: anyone who \
             can reach this machine could use the model. Set `[api] api_key` (or {API_KEY_ENV}) \
             and give clients that key, or listen on \"{DEFAULT_API_ADDRESS}\""
        )));
    }
    Ok(())
}

/// Checks that `address` of `table` is `ip:port` or `localhost:port`; its IP (`None` for
/// localhost).
pub(super) fn ip_and_port(
    table: &str,
    address: &str,
    example: &str,
) -> Result<Option<IpAddr>, ConfigError> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(Some(a.ip()));
    }
    match address.rsplit_once(':') {
        Some(("localhost", port)) if port.parse::<u16>().is_ok() => Ok(None),
        _ => Err(ConfigError::Invalid(format!(
            "{table} address = {address:?} is not an IP address and port, as in \"{example}\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<ApiSettings, ConfigError> {
        let file = super::super::parse(text, std::path::Path::new("c.toml")).expect("parse");
        api(file.api)
    }

    #[test]
    fn the_api_serves_loopback_by_default_on_its_own_port() {
        if std::env::var_os(API_ADDRESS_ENV).is_some() {
            return; // The environment sets every config's address.
        }
        let s = resolve("").expect("defaults");
        assert!(s.enabled && s.avatar);
        assert_eq!(s.options.address, "127.0.0.1:6283");
        assert!(s.options.cors_origins.is_empty());
        let s = resolve("[api]\nenabled = false\navatar = false\naddress = \"[::1]:9000\"\n")
            .expect("set");
        assert!(!s.enabled && !s.avatar);
        assert_eq!(s.options.address, "[::1]:9000");
    }

    #[test]
    fn a_reachable_address_without_a_key_is_refused_with_why() {
        if std::env::var_os(API_KEY_ENV).is_some() || std::env::var_os(API_ADDRESS_ENV).is_some() {
            return; // The environment overrides every config.
        }
        for address in ["0.0.0.0:6283", "192.168.1.5:6283", "[::]:6283"] {
            let err = resolve(&format!("[api]\naddress = \"{address}\"\n")).expect_err(address);
            let text = err.to_string();
            assert!(text.contains("api_key"), "{text}");
            assert!(text.contains("anyone who can reach"), "{text}");
        }
        let s = resolve("[api]\naddress = \"0.0.0.0:6283\"\napi_key = \"s3cret\"\n")
            .expect("with a key");
        assert_eq!(s.options.api_key.as_deref(), Some("s3cret"));
        // Loopback by name is fine; a disabled API is not checked.
        resolve("[api]\naddress = \"localhost:7000\"\n").expect("localhost");
        resolve("[api]\nenabled = false\naddress = \"0.0.0.0:1\"\n").expect("disabled");
        for bad in ["6283", "example:80", "127.0.0.1"] {
            let err = resolve(&format!("[api]\naddress = \"{bad}\"\n")).expect_err(bad);
            assert!(err.to_string().contains("IP address and port"), "{err}");
        }
    }
}
