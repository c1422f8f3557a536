//! What nodes say to each other: a versioned serde envelope, encoded as
//! JSON and decoded without panicking.
//!
//! ractor_cluster carries a payload as bytes and hands them back to
//! `Message::deserialize`, whose `BytesConvertable` route may panic on bad
//! input. Arbor's cluster message keeps the bytes as they came
//! ([`crate::actors::cluster_actor::ClusterMsg::Remote`]) and decodes them
//! here, in the actor's handler, where a bad frame is an error that is
//! logged and dropped: a peer running another version, or a broken one,
//! cannot bring a node down.

use serde::{Deserialize, Serialize};

/// The envelope version this build writes. A reader accepts versions up to
/// its own and refuses newer ones by name.
pub const VERSION: u32 = 1;

/// The largest envelope a node decodes (a heartbeat is ~200 bytes).
pub const MAX_BYTES: usize = 1 << 20;

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The envelope version ([`VERSION`] when written by this build).
    pub v: u32,
    /// The sending node's name.
    pub from: String,
    /// What it says.
    pub body: Body,
}

/// What an envelope says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A heartbeat, answered by [`Body::Pong`].
    Ping {
        /// Counts the sender's heartbeats (echoed in the answer).
        seq: u64,
    },
    /// The answer to a heartbeat.
    Pong {
        /// The `seq` of the ping answered.
        seq: u64,
        /// The answering node's cluster address, as it advertises it.
        addr: String,
        /// Its labels (`--node-label`).
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        labels: std::collections::BTreeMap<String, String>,
        /// The members it sees (name -> address, not `down`): how nodes
        /// that joined through different peers find each other.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        members: std::collections::BTreeMap<String, String>,
    },
    /// The sender stops gracefully and leaves the cluster (answered with
    /// [`Body::Bye`]).
    Leaving,
    /// The answer to [`Body::Leaving`].
    Bye,
    /// Asks for the node's supervision tree (`arbor tree --cluster`).
    TreeRequest,
    /// The answer: the tree as `GET /v1/tree` gives it, or why not.
    Tree {
        /// The tree (JSON of a `TreeNode`).
        tree: Option<serde_json::Value>,
        /// Why there is none.
        error: Option<String>,
    },
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than [`MAX_BYTES`].
    #[error("failed to decode a cluster message: {0} bytes is more than the {MAX_BYTES} allowed")]
    TooLarge(usize),
    /// Not an envelope.
    #[error("failed to decode a cluster message: {0}")]
    Malformed(String),
    /// From a newer version of arbor.
    #[error("failed to decode a cluster message: version {0} is newer than this node's {VERSION}")]
    Version(u32),
}

impl Envelope {
    /// An envelope of this build's version.
    pub fn new(from: impl Into<String>, body: Body) -> Self {
        Self {
            v: VERSION,
            from: from.into(),
            body,
        }
    }

    /// The bytes sent.
    pub fn encode(&self) -> Vec<u8> {
        // An envelope is strings and numbers: it always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads `bytes`; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        // The version first, so that a newer peer's unknown body is named
        // as such rather than as garbage.
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if version.v > VERSION {
            return Err(DecodeError::Version(version.v));
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_as_written() {
        let e = Envelope::new("n1", Body::Ping { seq: 7 });
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let e = Envelope::new(
            "n2",
            Body::Pong {
                seq: 7,
                addr: "10.0.0.2:7100".into(),
                labels: [("zone".to_string(), "a".to_string())].into(),
                members: [("n3".to_string(), "10.0.0.3:7100".to_string())].into(),
            },
        );
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x00\xff\x13",
            b"{",
            b"{\"v\":1}",
            b"{\"v\":1,\"from\":\"a\",\"body\":{\"kind\":\"nope\"}}",
            b"{\"v\":-1}",
            b"[1,2,3]",
        ] {
            assert!(
                matches!(Envelope::decode(bytes), Err(DecodeError::Malformed(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        let bytes = br#"{"v":9,"from":"a","body":{"kind":"teleport"}}"#;
        assert_eq!(Envelope::decode(bytes), Err(DecodeError::Version(9)));
    }

    #[test]
    fn an_oversized_envelope_is_refused_before_parsing() {
        let bytes = vec![b' '; MAX_BYTES + 1];
        assert_eq!(
            Envelope::decode(&bytes),
            Err(DecodeError::TooLarge(MAX_BYTES + 1))
        );
    }
}
