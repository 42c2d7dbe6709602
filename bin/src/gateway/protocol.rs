//! The pub/sub JSON control protocol spoken on `pubsub` routes (docs/GATEWAY.md).
//!
//! Client to gateway, one text message each:
//! `{"op":"subscribe","topic":"t"}`, `{"op":"unsubscribe","topic":"t"}`,
//! `{"op":"publish","topic":"t","data":"..."}`; an optional `"id"` (any JSON value) is
//! echoed in the reply. Gateway to client: `{"op":"subscribed"|"unsubscribed"|"published",
//! "topic":"t"}`, `{"op":"error","error":"...","id":...}` and the deliveries
//! `{"op":"message","topic":"t","data":"..."}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 256;

/// A request from a client.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Start receiving a topic.
    Subscribe {
        /// The topic.
        topic: String,
        /// Echoed in the reply.
        #[serde(default)]
        id: Option<Value>,
    },
    /// Stop receiving a topic.
    Unsubscribe {
        /// The topic.
        topic: String,
        /// Echoed in the reply.
        #[serde(default)]
        id: Option<Value>,
    },
    /// Send `data` to every subscriber of `topic`.
    Publish {
        /// The topic.
        topic: String,
        /// The message text.
        data: String,
        /// Echoed in the reply.
        #[serde(default)]
        id: Option<Value>,
    },
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a JSON object of the documented shape.
    #[error("bad request: {0}")]
    Malformed(String),
    /// The topic is empty or too long.
    #[error("bad topic: must be 1..=256 bytes")]
    Topic,
}

impl Request {
    /// Parses one client message.
    pub fn parse(text: &[u8]) -> Result<Request, RequestError> {
        let req: Request =
            serde_json::from_slice(text).map_err(|e| RequestError::Malformed(e.to_string()))?;
        let topic = match &req {
            Request::Subscribe { topic, .. }
            | Request::Unsubscribe { topic, .. }
            | Request::Publish { topic, .. } => topic,
        };
        if !valid_topic(topic) {
            return Err(RequestError::Topic);
        }
        Ok(req)
    }
}

/// Whether `topic` is an acceptable topic name.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN
}

/// A message from the gateway to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Reply<'a> {
    /// The subscription is active.
    Subscribed {
        /// The topic.
        topic: &'a str,
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    /// The subscription is gone.
    Unsubscribed {
        /// The topic.
        topic: &'a str,
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    /// The message was accepted for fan-out.
    Published {
        /// The topic.
        topic: &'a str,
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    /// The request failed.
    Error {
        /// What went wrong.
        error: &'a str,
        /// The request's id, when it could be read.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    /// A delivery.
    Message {
        /// The topic.
        topic: &'a str,
        /// The published text.
        data: &'a str,
    },
}

impl Reply<'_> {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn request_subscribe_parsed() {
        let r = Request::parse(br#"{"op":"subscribe","topic":"t","id":7}"#).unwrap();
        assert_eq!(
            r,
            Request::Subscribe {
                topic: "t".into(),
                id: Some(Value::from(7))
            }
        );
    }

    #[test]
    fn request_publish_without_data_rejected() {
        let e = Request::parse(br#"{"op":"publish","topic":"t"}"#).unwrap_err();
        assert!(matches!(e, RequestError::Malformed(_)));
    }

    #[test]
    fn request_unknown_op_rejected() {
        assert!(Request::parse(br#"{"op":"nope","topic":"t"}"#).is_err());
        assert!(Request::parse(b"not json").is_err());
    }

    #[test]
    fn request_empty_topic_rejected() {
        let e = Request::parse(br#"{"op":"subscribe","topic":""}"#).unwrap_err();
        assert_eq!(e, RequestError::Topic);
    }

    #[test]
    fn reply_message_serialized() {
        let s = Reply::Message {
            topic: "t",
            data: "a\"b",
        }
        .to_json();
        assert_eq!(s, r#"{"op":"message","topic":"t","data":"a\"b"}"#);
    }
}
