//! Artifacts by URL (`artifact: {url, sha256}` in an app's file): the
//! leader fetches each into the blob store before a sync deploys it, so an
//! agent gets it as it gets a run's artifact (by digest, over its own
//! connection) and needs no way out to the URL. A blob already stored is
//! not fetched again; one whose bytes have another digest is not stored,
//! and the sync that wanted it changes nothing.

use std::time::Duration;

use futures_util::StreamExt;

use crate::blobs::{BlobError, Blobs};

/// The longest a fetch may take, body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The longest the server may take to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most redirects followed.
pub const MAX_REDIRECTS: usize = 5;

/// Makes sure the blob `sha256` is stored, fetching it from `url` (at most
/// `limit` bytes) when it is not; its size.
///
/// The URL comes from git, so the download goes only where `outbound`
/// allows (`crate::outbound`), redirects included.
pub async fn fetch_url(
    blobs: &Blobs,
    outbound: &crate::outbound::Outbound,
    url: &str,
    sha256: &str,
    limit: u64,
) -> Result<u64, String> {
    let stored = |e: BlobError| format!("the blob store: {e}");
    if blobs.stored(sha256).await.map_err(stored)? {
        return blobs.len(sha256).await.map_err(stored);
    }
    if let Some(why) = outbound.url_problem(url) {
        return Err(format!("refused to fetch {url}: {why}"));
    }
    let client = outbound
        .builder(MAX_REDIRECTS)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| chain(&e))?;
    let cannot = |e: reqwest::Error| format!("cannot fetch {url}: {}", chain(&e));
    let response = client.get(url).send().await.map_err(cannot)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("cannot fetch {url}: it answered {status}"));
    }
    let what = format!("the file at {url}");
    if let Some(len) = response.content_length().filter(|len| *len > limit) {
        return Err(BlobError::TooLarge { what: format!("{what} ({len} bytes)"), limit, flag: "--max-artifact-bytes" }
            .to_string());
    }
    let mut writer = blobs.writer(limit, what, "--max-artifact-bytes").await.map_err(stored)?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        writer.write(&chunk.map_err(cannot)?).await.map_err(|e| e.to_string())?;
    }
    let len = writer.written();
    match writer.finish(sha256, len).await {
        Ok((_, len)) => Ok(len),
        Err(BlobError::DigestMismatch { got, .. }) => Err(format!(
            "the file at {url} has the sha256 {got}, not the {sha256} the app's file names; it was not deployed \
             (fix the `sha256`, or the `url` if it serves the wrong file)"
        )),
        Err(e) => Err(stored(e)),
    }
}

/// An error with its causes, as reqwest hides them behind its own text.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
