//! Every request body, bounded: at most `limit` bytes are passed on, a body that stops arriving
//! for `idle` ends with a timeout, and a body past the limit is read to its end (within
//! [`DRAIN_BYTES`] and [`DRAIN_TIME`], nothing kept) before its consumer sees the error, so the
//! client gets the 413 instead of a reset connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::Stream;
use tokio::time::{Instant, Sleep};

/// Bytes of a refused body read and dropped so the client sees the answer; past this (or
/// [`DRAIN_TIME`]) the connection is closed instead.
pub const DRAIN_BYTES: u64 = 1 << 30;
/// How long a refused body is read for at most.
pub const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Why a body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the request body stopped arriving for {}s", idle.as_secs_f64())]
    TimedOut { idle: Duration },
}

impl BodyError {
    /// The [`BodyError`] somewhere in an error's source chain (a multipart or body error wraps
    /// the stream's error).
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<BodyError>() {
                return Some(*found);
            }
            current = e.source();
        }
        None
    }
}

/// What the middleware enforces.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub limit: u64,
    pub idle: Duration,
}

/// The middleware (state: the limits).
pub async fn bound_bodies(
    State(limits): State<Arc<BodyLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bounded = Bounded::new(body, *limits);
    next.run(Request::from_parts(parts, Body::from_stream(bounded)))
        .await
}

enum Phase {
    Passing,
    /// Past the limit: reading the rest and dropping it.
    Draining {
        dropped: u64,
        until: Instant,
    },
    Done,
}

struct Bounded {
    inner: axum::body::BodyDataStream,
    limits: BodyLimits,
    seen: u64,
    idle: Pin<Box<Sleep>>,
    phase: Phase,
}

impl Bounded {
    fn new(body: Body, limits: BodyLimits) -> Self {
        Self {
            inner: body.into_data_stream(),
            limits,
            seen: 0,
            idle: Box::pin(tokio::time::sleep(limits.idle)),
            phase: Phase::Passing,
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.phase = Phase::Done;
        Poll::Ready(Some(Err(error)))
    }

    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle.as_mut().poll(cx).is_ready()
    }

    fn data_arrived(&mut self) {
        let deadline = Instant::now() + self.limits.idle;
        self.idle.as_mut().reset(deadline);
    }
}

impl Stream for Bounded {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let too_large = BodyError::TooLarge {
            limit: self.limits.limit,
        };
        loop {
            if matches!(self.phase, Phase::Done) {
                return Poll::Ready(None);
            }
            let draining = matches!(self.phase, Phase::Draining { .. });
            let chunk = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => {
                    if self.timed_out(cx) {
                        let idle = self.limits.idle;
                        return self.fail(BodyError::TimedOut { idle });
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(chunk))) => chunk,
                Poll::Ready(end) => {
                    if draining {
                        return self.fail(too_large);
                    }
                    if let Some(Err(e)) = end {
                        // The connection failed; its consumer sees the body end early.
                        tracing::debug!(error = %e, "request body failed");
                    }
                    self.phase = Phase::Done;
                    return Poll::Ready(None);
                }
            };
            self.data_arrived();
            if let Phase::Draining { dropped, until } = &mut self.phase {
                *dropped += chunk.len() as u64;
                if *dropped > DRAIN_BYTES || Instant::now() > *until {
                    return self.fail(too_large);
                }
                continue;
            }
            // Passing on.
            let allowed = self.limits.limit - self.seen;
            if chunk.len() as u64 <= allowed {
                self.seen += chunk.len() as u64;
                return Poll::Ready(Some(Ok(chunk)));
            }
            // What fits is passed on (its consumer may have its own, smaller limit and a more
            // specific answer); the rest is drained.
            self.seen = self.limits.limit;
            self.phase = Phase::Draining {
                dropped: chunk.len() as u64 - allowed,
                until: Instant::now() + DRAIN_TIME,
            };
            if allowed > 0 {
                return Poll::Ready(Some(Ok(chunk.slice(..allowed as usize))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn limits(limit: u64) -> BodyLimits {
        BodyLimits {
            limit,
            idle: Duration::from_secs(5),
        }
    }

    async fn collect(body: Body, limits: BodyLimits) -> (Vec<u8>, Option<BodyError>) {
        let mut stream = Bounded::new(body, limits);
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn passes_a_body_within_the_limit_and_cuts_one_past_it_after_reading_it() {
        let (out, err) = collect(Body::from(vec![7u8; 100]), limits(100)).await;
        assert_eq!((out.len(), err), (100, None));

        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..10).map(|_| Ok(Bytes::from(vec![1u8; 64]))).collect();
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = read.clone();
        let source = futures::stream::iter(chunks).inspect(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let (out, err) = collect(Body::from_stream(source), limits(100)).await;
        assert_eq!(out.len(), 100, "only what fits is passed on");
        assert_eq!(err, Some(BodyError::TooLarge { limit: 100 }));
        assert_eq!(
            read.load(std::sync::atomic::Ordering::SeqCst),
            10,
            "drained"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_times_out() {
        let source = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"a"))])
            .chain(futures::stream::pending());
        let idle = Duration::from_secs(3);
        let (out, err) = collect(Body::from_stream(source), BodyLimits { limit: 10, idle }).await;
        assert_eq!(out, b"a");
        assert_eq!(err, Some(BodyError::TimedOut { idle }));
    }

    #[test]
    fn found_through_the_wrappers_of_multipart_and_axum() {
        let wrapped = axum::Error::new(BodyError::TooLarge { limit: 3 });
        let multipart = multer::Error::StreamReadFailed(Box::new(wrapped));
        assert_eq!(
            BodyError::find(&multipart),
            Some(BodyError::TooLarge { limit: 3 })
        );
        assert_eq!(BodyError::find(&std::io::Error::other("x")), None);
    }
}
