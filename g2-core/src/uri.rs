//! Object URIs: `g2p2p://<network>/<uuid>` (paper §2).
//!
//! The network name is a logical name for a changing set of volunteers, not a
//! host; several networks can coexist. Parsing and printing round-trip, and a bad
//! URI gives a [`UriError`] naming the part that is wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::ObjectId;

/// The URI scheme of G2 objects.
pub const SCHEME: &str = "g2p2p";

/// The address of a distributed object: network name and GUID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectUri {
    /// The logical network name, e.g. `plas.qut.edu`.
    pub network: String,
    /// The object's GUID.
    pub id: ObjectId,
}

/// What is wrong with a URI or a network name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The URI does not start with `g2p2p://`.
    #[error("bad scheme in {uri:?}: expected `g2p2p://`")]
    Scheme {
        /// The whole input.
        uri: String,
    },
    /// There is no network name between `//` and `/`.
    #[error("missing network name in {uri:?}")]
    MissingNetwork {
        /// The whole input.
        uri: String,
    },
    /// The network name has a character outside `[A-Za-z0-9._-]` or is too long.
    #[error("bad network name {network:?}: {reason}")]
    BadNetwork {
        /// The offending name.
        network: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// There is no GUID after the network name.
    #[error("missing object GUID in {uri:?}")]
    MissingGuid {
        /// The whole input.
        uri: String,
    },
    /// The GUID is not a UUID.
    #[error("bad object GUID {guid:?}: {reason}")]
    BadGuid {
        /// The offending text.
        guid: String,
        /// The UUID parser's complaint.
        reason: String,
    },
}

/// Longest accepted network name, in bytes.
pub const MAX_NETWORK_NAME: usize = 253;

/// Checks a network name: 1..=253 bytes of `[A-Za-z0-9._-]`.
pub fn validate_network_name(name: &str) -> Result<(), UriError> {
    let bad = |reason| UriError::BadNetwork {
        network: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NETWORK_NAME {
        return Err(bad("longer than 253 bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return Err(bad("only letters, digits, '.', '-' and '_' are allowed"));
    }
    Ok(())
}

impl ObjectUri {
    /// A URI for object `id` on `network` (the name must be valid).
    pub fn new(network: impl Into<String>, id: ObjectId) -> Result<Self, UriError> {
        let network = network.into();
        validate_network_name(&network)?;
        Ok(Self { network, id })
    }
}

impl fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}://{}/{}",
            self.network,
            self.id.uuid().hyphenated()
        )
    }
}

impl FromStr for ObjectUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        let rest = s
            .strip_prefix("g2p2p://")
            .or_else(|| {
                // the scheme is case-insensitive, as in the paper's `G2P2P://`
                s.get(..8)
                    .filter(|head| head.eq_ignore_ascii_case("g2p2p://"))
                    .and_then(|_| s.get(8..))
            })
            .ok_or_else(|| UriError::Scheme { uri: s.to_string() })?;
        let (network, guid) = match rest.split_once('/') {
            Some((n, g)) => (n, g),
            None => (rest, ""),
        };
        if network.is_empty() {
            return Err(UriError::MissingNetwork { uri: s.to_string() });
        }
        validate_network_name(network)?;
        if guid.is_empty() {
            return Err(UriError::MissingGuid { uri: s.to_string() });
        }
        let id = uuid::Uuid::try_parse(guid).map_err(|e| UriError::BadGuid {
            guid: guid.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            network: network.to_string(),
            id: ObjectId::from(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_papers_example() {
        let uri: ObjectUri = "g2p2p://plas.qut.edu/fccf281d-47bd-45c7-8f2b-a48d462d171b"
            .parse()
            .unwrap();
        assert_eq!(uri.network, "plas.qut.edu");
        assert_eq!(
            uri.to_string(),
            "g2p2p://plas.qut.edu/fccf281d-47bd-45c7-8f2b-a48d462d171b"
        );
        let upper: ObjectUri = "G2P2P://plas.qut.edu/fccf281d-47bd-45c7-8f2b-a48d462d171b"
            .parse()
            .unwrap();
        assert_eq!(upper, uri);
    }

    #[test]
    fn errors_name_the_bad_part() {
        let e = "http://x/fccf281d-47bd-45c7-8f2b-a48d462d171b"
            .parse::<ObjectUri>()
            .unwrap_err();
        assert!(matches!(e, UriError::Scheme { .. }), "{e}");
        assert!(e.to_string().contains("scheme"));

        let e = "g2p2p:///fccf281d-47bd-45c7-8f2b-a48d462d171b"
            .parse::<ObjectUri>()
            .unwrap_err();
        assert!(matches!(e, UriError::MissingNetwork { .. }), "{e}");

        let e = "g2p2p://bad net/fccf281d-47bd-45c7-8f2b-a48d462d171b"
            .parse::<ObjectUri>()
            .unwrap_err();
        assert!(e.to_string().contains("\"bad net\""), "{e}");

        let e = "g2p2p://net".parse::<ObjectUri>().unwrap_err();
        assert!(matches!(e, UriError::MissingGuid { .. }), "{e}");

        let e = "g2p2p://net/not-a-uuid".parse::<ObjectUri>().unwrap_err();
        assert!(e.to_string().contains("\"not-a-uuid\""), "{e}");
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(network in "[A-Za-z0-9._-]{1,60}", id: u128) {
            let uri = ObjectUri::new(network, ObjectId::from_u128(id)).unwrap();
            let back: ObjectUri = uri.to_string().parse().unwrap();
            prop_assert_eq!(back, uri);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,120}") {
            let _ = s.parse::<ObjectUri>();
        }
    }
}
