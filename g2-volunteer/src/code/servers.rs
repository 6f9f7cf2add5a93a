//! Code servers (the paper's first option, §3.3): plain directories of
//! signed manifests and binaries, served by any static web server or read
//! from a mounted path, that a volunteer tries before the network.
//!
//! A code server needs no trust of its own: a manifest counts only if its
//! signature verifies and its publisher is trusted, and a binary only if its
//! size and blake3 are the manifest's, exactly as for code from the network.
//! So plain `http://` is enough (`https://` is refused with a clear error).
//!
//! Layout under the server's base (what `g2 publish --out DIR` writes):
//!
//! ```text
//! types/<blake3 of the type name, hex>.cbor   the type's signed manifests (a CBOR list)
//! binaries/<blake3 of the binary, hex>         the binary
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use tracing::debug;

use super::bundle::{Bundle, MAX_BINARY, Manifest, SignedManifest};

/// The largest manifest list read from a server.
const MAX_MANIFEST_LIST: usize = 1 << 20;

/// How long one request to a code server may take (a binary of tens of MiB
/// included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One code server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeServer {
    /// `http://host[:port]/base`
    Http {
        /// Host and port, as dialled and sent in `Host:`.
        authority: String,
        /// The base path, without a trailing slash.
        base: String,
    },
    /// `file:///dir`
    Dir(PathBuf),
}

impl std::fmt::Display for CodeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodeServer::Http { authority, base } => write!(f, "http://{authority}{base}"),
            CodeServer::Dir(d) => write!(f, "file://{}", d.display()),
        }
    }
}

impl std::str::FromStr for CodeServer {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "code server {url:?}: a file URL needs an absolute path (file:///dir)"
                ));
            }
            return Ok(CodeServer::Dir(PathBuf::from(path)));
        }
        if url.starts_with("https://") {
            return Err(format!(
                "code server {url:?}: https is not supported; use http:// (what a code server serves is signed and hash-checked, so it needs no TLS) or file://"
            ));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "code server {url:?}: expected an http:// or file:// URL"
            ));
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let valid_authority = !authority.is_empty()
            && authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !valid_authority {
            return Err(format!("code server {url:?}: bad host {authority:?}"));
        }
        if base.contains(['?', '#', ' ']) {
            return Err(format!(
                "code server {url:?}: the base path may not hold a query or fragment"
            ));
        }
        Ok(CodeServer::Http {
            authority: authority.to_string(),
            base: base.trim_end_matches('/').to_string(),
        })
    }
}

/// Where a type's manifests are, under a server's base.
pub fn manifests_path(type_name: &str) -> String {
    format!("types/{}.cbor", blake3::hash(type_name.as_bytes()).to_hex())
}

/// Where a binary is, under a server's base.
pub fn binary_path(blake3_hex: &str) -> String {
    format!("binaries/{blake3_hex}")
}

impl CodeServer {
    /// The body of `rel` under the base, at most `max` bytes; `None` if the
    /// server does not have it.
    async fn get(&self, rel: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
        match self {
            CodeServer::Dir(dir) => {
                let path = dir.join(rel);
                match tokio::fs::metadata(&path).await {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                    Ok(m) if m.len() > max as u64 => {
                        return Err(format!("{}: larger than {max} bytes", path.display()));
                    }
                    Ok(_) => {}
                }
                tokio::fs::read(&path)
                    .await
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            CodeServer::Http { authority, base } => {
                tokio::time::timeout(REQUEST_TIMEOUT, http_get(authority, base, rel, max))
                    .await
                    .map_err(|_| format!("{self}: no answer within {REQUEST_TIMEOUT:?}"))?
            }
        }
    }

    /// The manifests this server has for `type_name` whose signatures verify.
    pub async fn manifests(
        &self,
        type_name: &str,
    ) -> Result<Vec<(Manifest, SignedManifest)>, String> {
        let Some(bytes) = self
            .get(&manifests_path(type_name), MAX_MANIFEST_LIST)
            .await?
        else {
            return Ok(Vec::new());
        };
        let list: Vec<SignedManifest> = ciborium::from_reader(bytes.as_slice())
            .map_err(|e| format!("{self}: the manifest list of {type_name} is not CBOR: {e}"))?;
        let mut out = Vec::new();
        super::bundle::keep_manifests_of(type_name, list, self, &mut out);
        Ok(out)
    }

    /// The binary `m` describes, checked against its size and hash.
    pub async fn binary(&self, m: &Manifest) -> Result<Vec<u8>, String> {
        let max = usize::try_from(m.size.min(MAX_BINARY)).unwrap_or(usize::MAX);
        let bytes = self
            .get(&binary_path(&m.binary_blake3), max)
            .await?
            .ok_or_else(|| format!("{self} does not have binary {}", m.binary_blake3))?;
        if bytes.len() as u64 != m.size || blake3::hash(&bytes).to_hex().as_str() != m.binary_blake3
        {
            return Err(format!(
                "{self} sent a binary that does not match {} (altered or corrupt)",
                m.binary_blake3
            ));
        }
        Ok(bytes)
    }
}

/// One `GET` over HTTP/1.1; `None` on 404.
async fn http_get(
    authority: &str,
    base: &str,
    rel: &str,
    max: usize,
) -> Result<Option<Vec<u8>>, String> {
    let url = format!("http://{authority}{base}/{rel}");
    let dial = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::net::TcpStream::connect(&dial)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!("code server connection: {e}");
        }
    });
    let req = hyper::Request::get(format!("{base}/{rel}"))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "g2-volunteer")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        match resp.status() {
            hyper::StatusCode::OK => {}
            hyper::StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(format!("{url}: HTTP {s}")),
        }
        let body = Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Some(body.to_bytes().to_vec()))
    }
    .await;
    driver.abort();
    result
}

/// Writes `signed` (the manifest of `bundle`) and its binary into the
/// code-server directory `dir`, keeping the manifests already there for
/// each type (one per publisher and target: the newest).
pub fn export(dir: &Path, bundle: &Bundle, signed: &SignedManifest) -> Result<(), String> {
    let m = signed.open().map_err(|e| e.to_string())?;
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let bin_dir = dir.join("binaries");
    std::fs::create_dir_all(&bin_dir).map_err(|e| io(&bin_dir, e))?;
    let bin = dir.join(binary_path(&m.binary_blake3));
    let binary: Vec<u8> = bundle.chunks.concat();
    write_atomically(&bin, &binary).map_err(|e| io(&bin, e))?;
    let types_dir = dir.join("types");
    std::fs::create_dir_all(&types_dir).map_err(|e| io(&types_dir, e))?;
    for t in &m.types {
        let path = dir.join(manifests_path(t));
        let mut list: Vec<SignedManifest> = match std::fs::read(&path) {
            Ok(b) => ciborium::from_reader(b.as_slice())
                .map_err(|e| format!("{}: not a manifest list: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path, e)),
        };
        list.retain(|s| {
            s.open()
                .is_ok_and(|o| !(o.publisher == m.publisher && o.target == m.target))
        });
        list.push(signed.clone());
        let bytes = super::bundle::cbor(&list).map_err(|e| e.to_string())?;
        write_atomically(&path, &bytes).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused_clearly() {
        assert_eq!(
            "http://127.0.0.1:8080/code/".parse::<CodeServer>().unwrap(),
            CodeServer::Http {
                authority: "127.0.0.1:8080".into(),
                base: "/code".into()
            }
        );
        assert_eq!(
            "http://example.org".parse::<CodeServer>().unwrap(),
            CodeServer::Http {
                authority: "example.org".into(),
                base: "".into()
            }
        );
        assert_eq!(
            "file:///srv/g2".parse::<CodeServer>().unwrap(),
            CodeServer::Dir("/srv/g2".into())
        );
        for (bad, says) in [
            ("https://example.org", "https is not supported"),
            ("ftp://example.org", "expected an http:// or file:// URL"),
            ("file://relative", "absolute path"),
            ("http:///x", "bad host"),
            ("http://a b/", "bad host"),
            ("http://h/x?y=1", "query"),
        ] {
            let e = bad.parse::<CodeServer>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
