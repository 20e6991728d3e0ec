//! Client-side rate limits for the Kubernetes API (`--kube-api-qps`, `--kube-api-burst`), as client-go's
//! token bucket: up to `burst` requests at once, then `qps` per second. Off by default, like
//! controller-runtime since API Priority and Fairness protects the API server; an admin of a busy or
//! small API server turns it on. Each client has its own bucket: the management cluster's, and one per
//! workload cluster.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A request rate: `qps` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiRate {
    pub qps: f64,
    pub burst: u32,
}

impl ApiRate {
    /// The rate of `--kube-api-qps` and `--kube-api-burst`: none for a qps of 0; the burst defaults to
    /// twice the qps (client-go's 5 and 10), at least 1.
    pub fn from_flags(qps: f64, burst: Option<u32>) -> Option<ApiRate> {
        (qps > 0.0).then(|| ApiRate {
            qps,
            // A qps of a few thousand at most (see the flag's range): the product fits.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            burst: burst.unwrap_or_else(|| (qps * 2.0).ceil() as u32).max(1),
        })
    }
}

/// A kube client for `config`, limited to `rate` when there is one.
pub fn client(config: kube::Config, rate: Option<ApiRate>) -> Result<kube::Client, kube::Error> {
    Ok(match rate {
        Some(rate) => kube::client::ClientBuilder::try_from(config)?
            .with_layer(&RateLimitLayer(rate))
            .build(),
        None => kube::Client::try_from(config)?,
    })
}

/// Adds [`RateLimited`] to a client's service stack.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitLayer(pub ApiRate);

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            bucket: Bucket::full(self.0, Instant::now()),
            waiting: None,
            token: false,
        }
    }
}

/// A service that takes a token from its bucket before each request, waiting when there is none.
/// The kube client buffers requests in front of it, so waiting requests queue in order.
#[derive(Debug)]
pub struct RateLimited<S> {
    inner: S,
    bucket: Bucket,
    waiting: Option<Pin<Box<Sleep>>>,
    /// A token is taken for the next call.
    token: bool,
}

impl<S, R> tower::Service<R> for RateLimited<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.token {
            if let Some(sleep) = self.waiting.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.waiting = None;
            }
            match self.bucket.take(Instant::now()) {
                Ok(()) => self.token = true,
                Err(wait) => self.waiting = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.token = false;
        self.inner.call(request)
    }
}

#[derive(Debug)]
struct Bucket {
    rate: ApiRate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: ApiRate, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    /// Takes a token, or says how long until there is one.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate.qps;
        self.tokens = (self.tokens + earned).min(f64::from(self.rate.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate.qps))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tower::{Layer, Service, ServiceExt};

    /// Records when each request arrived.
    #[derive(Clone)]
    struct Clock(Arc<Mutex<Vec<Instant>>>);

    impl Service<()> for Clock {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<(), Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, (): ()) -> Self::Future {
            self.0.lock().expect("lock").push(Instant::now());
            std::future::ready(Ok(()))
        }
    }

    /// Sends `n` requests through `service` as fast as it lets them; their arrival times in ms after the first
    /// was sent.
    async fn send(
        service: &mut RateLimited<Clock>,
        arrivals: &Arc<Mutex<Vec<Instant>>>,
        n: usize,
    ) -> Vec<u128> {
        arrivals.lock().expect("lock").clear();
        let start = Instant::now();
        for _ in 0..n {
            service
                .ready()
                .await
                .expect("ready")
                .call(())
                .await
                .expect("call");
        }
        let offsets = arrivals
            .lock()
            .expect("lock")
            .iter()
            .map(|t| (*t - start).as_millis())
            .collect();
        offsets
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_and_the_rest_at_the_rate() {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let rate = ApiRate::from_flags(10.0, Some(3)).expect("a rate");
        let mut service = RateLimitLayer(rate).layer(Clock(arrivals.clone()));
        assert_eq!(
            send(&mut service, &arrivals, 7).await,
            [0, 0, 0, 100, 200, 300, 400]
        );
        // Idle time refills the bucket up to the burst, no further.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(send(&mut service, &arrivals, 4).await, [0, 0, 0, 100]);
    }

    #[test]
    fn no_qps_means_no_limit_and_the_burst_defaults_to_twice_the_qps() {
        assert_eq!(ApiRate::from_flags(0.0, Some(5)), None);
        assert_eq!(
            ApiRate::from_flags(5.0, None),
            Some(ApiRate { qps: 5.0, burst: 10 })
        );
        assert_eq!(
            ApiRate::from_flags(0.2, None),
            Some(ApiRate { qps: 0.2, burst: 1 })
        );
    }
}
