//! Handshake routing: the HTTP upgrade request of a new connection is parsed, routed by
//! path (or refused: 404, 403 for an origin not allowed, 400), and the connection becomes
//! a WebSocket on its route.

use bytes::Bytes;
use tcp::Instant;
use ws::{CloseCode, Connection, Role};

use super::forwarded::{forwarded_client, ProxyStep};
use super::proxy::Upstream;
use super::session::Phase;
use super::worker::Worker;
use super::ConnId;
use crate::app::Tx;
use crate::config::{parse_upstream, RouteKind};
use crate::metrics::{Auth, Handshake};

/// What a handshake produced.
enum Upgrade {
    Incomplete,
    Open {
        route: usize,
        ws: Box<Connection>,
        response: Vec<u8>,
        rest: Vec<u8>,
        bits: Option<u8>,
        /// The client named by a trusted proxy's `X-Forwarded-For`.
        client: Option<std::net::IpAddr>,
        /// On an `auth = "jwt"` route: what the token allows.
        grant: Option<super::auth::Grant>,
    },
    Refuse(Vec<u8>, Handshake, Option<Auth>),
}

/// 401 for a missing or bad connection token (RFC 6750 3).
fn http_unauthorized() -> Vec<u8> {
    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"sluice\", error=\"invalid_token\"\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n"
        .to_vec()
}

/// A minimal HTTP error response that closes the connection.
pub(super) fn http_refusal(status: u16, reason: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

impl Worker {
    /// Parses the upgrade request collected so far; answers (101 or a refusal) on the
    /// output queue, and feeds what followed the request to the new WebSocket.
    pub(super) fn upgrade<T: Tx>(&mut self, id: ConnId, tx: &mut T, now: Instant) {
        match self.take_proxy_header(id, now) {
            ProxyStep::Done => {}
            ProxyStep::Wait | ProxyStep::Refused => return,
        }
        let outcome = {
            let Some(Some(s)) = self.sessions.get(id) else {
                return;
            };
            let Phase::Handshake(head) = &s.phase else {
                return;
            };
            match ws::handshake::parse_request(head, &self.base_server) {
                Ok(None) => Upgrade::Incomplete,
                Err(e) => Upgrade::Refuse(e.response(), Handshake::BadRequest, None),
                Ok(Some(req)) => {
                    let allowed = &self.config.limits.allowed_origins;
                    let fallback = (self.any_path && !self.routes.is_empty()).then_some(0);
                    match self.config.route(req.path).map(|(i, _)| i).or(fallback) {
                        None => Upgrade::Refuse(
                            http_refusal(404, "Not Found"),
                            Handshake::NotFound,
                            None,
                        ),
                        // RFC 6455 4.2.2 item 4 / 10.2: the server may refuse an origin
                        // it does not accept with an HTTP error (403).
                        Some(_)
                            if !allowed.is_empty()
                                && !req.origin.is_some_and(|o| allowed.iter().any(|a| a == o)) =>
                        {
                            Upgrade::Refuse(http_refusal(403, "Forbidden"), Handshake::Origin, None)
                        }
                        Some(i) => {
                            let grant = match (&self.routes[i].cfg.auth, &self.verifier) {
                                (crate::config::RouteAuth::Jwt, Some(v)) => {
                                    Some(v.verify(v.token(&req), std::time::SystemTime::now()))
                                }
                                // Cannot happen with a validated config: refuse, never open.
                                (crate::config::RouteAuth::Jwt, None) => Some(Err(Auth::Invalid)),
                                (crate::config::RouteAuth::None, _) => None,
                            };
                            let listen = &self.config.listen;
                            let client = if listen.trusted(s.peer.ip()) {
                                forwarded_client(&req.forwarded_for, listen)
                            } else {
                                None
                            };
                            let acc = req.accept(&self.routes[i].server);
                            match grant {
                                Some(Err(why)) => Upgrade::Refuse(
                                    http_unauthorized(),
                                    Handshake::Unauthorized,
                                    Some(why),
                                ),
                                grant => Upgrade::Open {
                                    route: i,
                                    ws: Box::new(Connection::new(
                                        Role::Server,
                                        self.ws_config,
                                        acc.deflate,
                                        0,
                                    )),
                                    response: acc.response,
                                    rest: head.get(req.head_len..).unwrap_or_default().to_vec(),
                                    bits: acc.deflate.map(|p| p.server_max_window_bits),
                                    client,
                                    grant: grant.and_then(Result::ok),
                                },
                            }
                        }
                    }
                }
            }
        };
        if let Upgrade::Open {
            client: Some(ip), ..
        } = &outcome
        {
            if !self.adopt_client(id, std::net::SocketAddr::new(*ip, 0), now) {
                return;
            }
        }
        let deadline = self.close_deadline(now);
        let draining = self.draining;
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        match outcome {
            Upgrade::Incomplete => {}
            Upgrade::Refuse(resp, why, auth) => {
                s.out.push(Bytes::from(resp));
                s.phase = Phase::Refused;
                s.close_deadline = Some(deadline);
                self.stats.handshake(why);
                if let Some(a) = auth {
                    self.stats.auth(a);
                }
            }
            Upgrade::Open {
                route,
                ws,
                response,
                mut rest,
                bits,
                client: _,
                grant,
            } => {
                if let Some(g) = grant {
                    s.auth_deadline = Some(now + g.expires_in);
                    s.grant = Some(Box::new(g));
                    self.stats.auth(Auth::Ok);
                }
                s.out.push(Bytes::from(response));
                s.phase = Phase::Open(ws);
                s.route = Some(route);
                s.deflate_bits = bits;
                self.stats.handshake(Handshake::Ok);
                let rt = &self.routes[route].cfg;
                if rt.kind == RouteKind::Proxy && !draining {
                    if let Some(target) =
                        rt.upstream.as_deref().and_then(|u| parse_upstream(u).ok())
                    {
                        self.mask_seed = self
                            .mask_seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let up = Upstream::new(&target, self.ws_config, self.mask_seed);
                        self.upstream_requests.push((id, up.authority.clone()));
                        s.upstream = Some(Box::new(up));
                    }
                }
                if draining {
                    s.close(CloseCode::GOING_AWAY, "server shutting down", deadline);
                } else if !rest.is_empty() {
                    self.feed(id, &mut rest, tx, now);
                }
            }
        }
    }
}
