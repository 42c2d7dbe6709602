//! Connection tokens: routes with `auth = "jwt"` take a client only with a valid JWT
//! (`[auth]`: one algorithm, HS256 with a shared secret or RS256/ES256 with a public key;
//! `exp` required, `nbf`, optional `aud`/`iss`, a small leeway), verified at the upgrade by
//! the `jsonwebtoken` crate. The token's claims name the topics the client may subscribe
//! to and publish to:
//!
//! ```json
//! {"sub": "user-42", "exp": 1767225600, "subscribe": ["news.*", "chat.room1"], "publish": ["chat.room1"]}
//! ```
//!
//! A pattern is a topic, `*` (every topic), or a prefix ending in `*` (`news.*` matches
//! `news.sports`). No claim: nothing allowed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Auth as AuthConfig, JwtAlgorithm, TokenSource};
use crate::metrics::Auth;

/// The subprotocol a browser offers beside its token (`new WebSocket(url, ["sluice.jwt",
/// token])`); the server selects it, never the token.
pub const PROTOCOL: &str = "sluice.jwt";

/// Most patterns taken from one claim (a longer list is refused as invalid).
const MAX_PATTERNS: usize = 256;

/// Verifies tokens for one gateway (built once from `[auth]`).
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway: u64,
    sources: Vec<TokenSource>,
    query_param: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// What a valid token allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Topic patterns the client may subscribe to.
    pub subscribe: Vec<Box<str>>,
    /// Topic patterns the client may publish to.
    pub publish: Vec<Box<str>>,
    /// Seconds from now (leeway included) until the token expires.
    pub expires_in: Duration,
}

impl Grant {
    /// Whether the client may subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| matches(p, topic))
    }

    /// Whether the client may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| matches(p, topic))
    }
}

fn matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

impl Verifier {
    /// The verifier `[auth]` describes, or what is wrong with it (key files unreadable or
    /// not keys of the algorithm, no secret).
    pub fn new(cfg: &AuthConfig) -> Result<Verifier, String> {
        let read = |f: &str| std::fs::read(f).map_err(|e| format!("cannot read `{f}`: {e}"));
        let (alg, key) = match cfg.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = match (&cfg.secret, &cfg.secret_file) {
                    (Some(s), None) => s.as_bytes().to_vec(),
                    (None, Some(f)) => {
                        let mut s = read(f)?;
                        while s.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                            s.pop();
                        }
                        s
                    }
                    _ => return Err("HS256 needs exactly one of secret and secret_file".into()),
                };
                if secret.len() < 32 {
                    return Err("the HS256 secret must be at least 32 bytes".into());
                }
                let k = DecodingKey::from_secret(&secret)
                    .map_err(|e| format!("the HS256 secret: {e}"))?;
                (Algorithm::HS256, k)
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                let f = cfg
                    .public_key_file
                    .as_deref()
                    .ok_or("RS256 and ES256 need public_key_file (PEM)")?;
                let pem = read(f)?;
                if cfg.algorithm == JwtAlgorithm::RS256 {
                    let k = DecodingKey::from_rsa_pem(&pem)
                        .map_err(|e| format!("`{f}` is not an RSA public key: {e}"))?;
                    (Algorithm::RS256, k)
                } else {
                    let k = DecodingKey::from_ec_pem(&pem)
                        .map_err(|e| format!("`{f}` is not an EC public key: {e}"))?;
                    (Algorithm::ES256, k)
                }
            }
        };
        if cfg.token_from.is_empty() {
            return Err("token_from needs at least one of header, protocol, query".into());
        }
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.leeway_s;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        match &cfg.audience {
            Some(a) => validation.set_audience(&[a]),
            None => validation.validate_aud = false,
        }
        if let Some(i) = &cfg.issuer {
            validation.set_issuer(&[i]);
        }
        Ok(Verifier {
            key,
            validation,
            leeway: cfg.leeway_s,
            sources: cfg.token_from.clone(),
            query_param: cfg.query_param.clone(),
        })
    }

    /// The token of an upgrade request, from the first configured source that has one.
    pub fn token<'a>(&self, req: &ws::handshake::Request<'a>) -> Option<&'a str> {
        self.sources.iter().find_map(|s| match s {
            TokenSource::Header => req
                .authorization
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim),
            TokenSource::Protocol => {
                if req.protocols.contains(&PROTOCOL) {
                    req.protocols.iter().copied().find(|p| *p != PROTOCOL)
                } else {
                    None
                }
            }
            TokenSource::Query => {
                let query = req.path.split_once('?')?.1;
                query.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k == self.query_param).then_some(v)
                })
            }
        })
    }

    /// Checks `token` at the wall-clock time `now`: the grant, or the counted reason.
    pub fn verify(&self, token: Option<&str>, now: SystemTime) -> Result<Grant, Auth> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Auth::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => Auth::Expired,
                ErrorKind::ImmatureSignature => Auth::NotYetValid,
                ErrorKind::InvalidAudience => Auth::WrongAudience,
                ErrorKind::InvalidIssuer => Auth::WrongIssuer,
                _ => Auth::Invalid,
            },
        )?;
        let c = data.claims;
        if c.subscribe.len() > MAX_PATTERNS || c.publish.len() > MAX_PATTERNS {
            return Err(Auth::Invalid);
        }
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let until = c.exp.saturating_add(self.leeway);
        if until <= now_s {
            return Err(Auth::Expired);
        }
        Ok(Grant {
            subscribe: c
                .subscribe
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
            publish: c.publish.into_iter().map(String::into_boxed_str).collect(),
            expires_in: Duration::from_secs(until - now_s),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    pub(crate) const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

    pub(crate) fn now_s() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// An HS256 token with `claims`.
    pub(crate) fn token(claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn verifier(extra: impl FnOnce(&mut AuthConfig)) -> Verifier {
        let mut cfg = AuthConfig {
            secret: Some(SECRET.to_string()),
            leeway_s: 0,
            ..AuthConfig::default()
        };
        extra(&mut cfg);
        Verifier::new(&cfg).unwrap()
    }

    #[test]
    fn auth_valid_token_grants_its_patterns() {
        let v = verifier(|_| {});
        let t = token(&serde_json::json!({
            "exp": now_s() + 60, "subscribe": ["news.*", "chat"], "publish": ["chat"]
        }));
        let g = v.verify(Some(&t), SystemTime::now()).unwrap();
        assert!(g.may_subscribe("news.sports") && g.may_subscribe("chat"));
        assert!(!g.may_subscribe("newsroom") && !g.may_subscribe("chat2"));
        assert!(g.may_publish("chat") && !g.may_publish("news.sports"));
        assert!(g.expires_in <= Duration::from_secs(60) && g.expires_in > Duration::from_secs(50));
        let all = token(&serde_json::json!({"exp": now_s() + 60, "subscribe": ["*"]}));
        let g = v.verify(Some(&all), SystemTime::now()).unwrap();
        assert!(g.may_subscribe("anything") && !g.may_publish("anything"));
    }

    #[test]
    fn auth_bad_tokens_counted_by_reason() {
        let v = verifier(|c| {
            c.audience = Some("gw".into());
            c.issuer = Some("idp".into());
        });
        let ok = serde_json::json!({"exp": now_s() + 60, "aud": "gw", "iss": "idp"});
        let now = SystemTime::now();
        assert!(v.verify(Some(&token(&ok)), now).is_ok());
        let with = |k: &str, val: serde_json::Value| {
            let mut c = ok.clone();
            c[k] = val;
            token(&c)
        };
        assert_eq!(v.verify(None, now), Err(Auth::Missing));
        assert_eq!(v.verify(Some(""), now), Err(Auth::Missing));
        assert_eq!(v.verify(Some("not.a.jwt"), now), Err(Auth::Invalid));
        assert_eq!(
            v.verify(Some(&with("exp", (now_s() - 10).into())), now),
            Err(Auth::Expired)
        );
        assert_eq!(
            v.verify(Some(&with("nbf", (now_s() + 100).into())), now),
            Err(Auth::NotYetValid)
        );
        assert_eq!(
            v.verify(Some(&with("aud", "other".into())), now),
            Err(Auth::WrongAudience)
        );
        assert_eq!(
            v.verify(Some(&with("iss", "other".into())), now),
            Err(Auth::WrongIssuer)
        );
        let no_exp = token(&serde_json::json!({"aud": "gw", "iss": "idp"}));
        assert_eq!(
            v.verify(Some(&no_exp), now),
            Err(Auth::Invalid),
            "exp is required"
        );
        // Signed with another secret, or another algorithm.
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &ok,
            &EncodingKey::from_secret(b"another-secret-another-secret-another").unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(Some(&forged), now), Err(Auth::Invalid));
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &ok,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(Some(&hs384), now), Err(Auth::Invalid));
        // "alg": "none" with no signature.
        let mut parts = token(&ok)
            .split('.')
            .map(str::to_string)
            .collect::<Vec<_>>();
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0".into();
        parts[2] = String::new();
        assert_eq!(v.verify(Some(&parts.join(".")), now), Err(Auth::Invalid));
    }

    #[test]
    fn auth_token_sources_in_configured_order() {
        let v = verifier(|_| {});
        let cfg = ws::handshake::ServerConfig::default();
        let parse = |extra: &str, path: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
        };
        let a = parse("Authorization: Bearer AAA\r\n", "/ws?token=CCC");
        let req = ws::handshake::parse_request(a.as_bytes(), &cfg)
            .unwrap()
            .unwrap();
        assert_eq!(v.token(&req), Some("AAA"));
        let b = parse(
            "Sec-WebSocket-Protocol: sluice.jwt, BBB\r\n",
            "/ws?x=1&token=CCC",
        );
        let req = ws::handshake::parse_request(b.as_bytes(), &cfg)
            .unwrap()
            .unwrap();
        assert_eq!(v.token(&req), Some("BBB"));
        let c = parse("Sec-WebSocket-Protocol: chat, BBB\r\n", "/ws?x=1&token=CCC");
        let req = ws::handshake::parse_request(c.as_bytes(), &cfg)
            .unwrap()
            .unwrap();
        assert_eq!(
            v.token(&req),
            Some("CCC"),
            "no sluice.jwt offered: not a token"
        );
        let only_header = verifier(|c| c.token_from = vec![TokenSource::Header]);
        assert_eq!(only_header.token(&req), None);
    }

    #[test]
    fn auth_config_errors_named() {
        let mut cfg = AuthConfig::default();
        assert!(Verifier::new(&cfg).unwrap_err().contains("secret"));
        cfg.secret = Some("short".into());
        assert!(Verifier::new(&cfg).unwrap_err().contains("32 bytes"));
        cfg.algorithm = JwtAlgorithm::RS256;
        assert!(Verifier::new(&cfg).unwrap_err().contains("public_key_file"));
        cfg.public_key_file = Some("/nonexistent.pem".into());
        assert!(Verifier::new(&cfg).unwrap_err().contains("cannot read"));
    }
}
