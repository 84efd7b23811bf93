//! A server stream that outlives the coordinator serving it: when it breaks
//! (the coordinator was killed, restarted, or stepped down), [`Resumable`]
//! opens it again with [`Conn::call_patiently`], on the same coordinator or
//! another, for up to `--reconnect-timeout`, and says so on stderr (one line
//! when it is lost, one when it delivers again). `drover run --follow`
//! (a run's watch, [`crate::follow`]) and `drover logs` (a job's log) both
//! follow their stream through it; each skips what a reopened stream
//! replays.

use std::future::Future;

use indicatif::ProgressBar;

use crate::client::{Client, Conn, Exit, Patience, status_exit};
use crate::follow::{back, notice, retry_stream};

/// A stream of `M` with what it takes to open it again: the call that opens
/// it (`open`, idempotent), the patience kept across its reopenings, and why
/// the last stream ended when it has to be opened again.
pub struct Resumable<M, F> {
    patience: Patience,
    open: F,
    /// The open stream; None when it has to be opened (again).
    stream: Option<tonic::Streaming<M>>,
    /// Why the last stream ended, when it has to be opened again.
    broke: Option<tonic::Status>,
}

impl<M, F, Fut> Resumable<M, F>
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
{
    /// `stream` is the stream already opened, if any; without one, the
    /// first [`Resumable::next`] opens it with `patience`, as if it had
    /// broken.
    pub fn new(patience: Patience, stream: Option<tonic::Streaming<M>>, open: F) -> Self {
        Resumable { patience, open, stream, broke: None }
    }

    /// The next message, opening the stream again first when it broke;
    /// None when the stream has ended. `early_end`, when given, says that
    /// the stream must not end yet, and why: an end is then taken for a
    /// break. `on_break` is called each time the stream broke, before it is
    /// opened again. The notices go to stderr, with `bar` suspended
    /// meanwhile.
    pub async fn next(
        &mut self,
        conn: &mut Conn,
        bar: Option<&ProgressBar>,
        early_end: Option<&str>,
        mut on_break: impl FnMut(),
    ) -> Result<Option<M>, Exit> {
        loop {
            let open = match self.stream.as_mut() {
                Some(open) => open,
                None => {
                    let opened = conn
                        .call_patiently(&mut self.patience, self.broke.take(), |n| notice(bar, n), &mut self.open)
                        .await?;
                    self.stream.insert(opened)
                }
            };
            let message = match open.message().await {
                Ok(Some(message)) => message,
                // The coordinator ended the stream early, which only one
                // going away would do: open it again as if it had broken.
                Ok(None) => match early_end {
                    Some(why) => {
                        (self.stream, self.broke) = (None, Some(tonic::Status::unavailable(why)));
                        on_break();
                        continue;
                    }
                    None => return Ok(None),
                },
                Err(status) if retry_stream(&status) => {
                    (self.stream, self.broke) = (None, Some(status));
                    on_break();
                    continue;
                }
                Err(status) => return Err(status_exit(status)),
            };
            if let Some(after) = self.patience.heard() {
                back(bar, conn.url(), after);
            }
            return Ok(Some(message));
        }
    }
}
