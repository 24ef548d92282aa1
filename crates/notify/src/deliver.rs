//! Delivery: claims due outbox items and POSTs them over HTTPS (rustls
//! with ring, hyper's HTTP/1 client, as `meridian-auth` fetches keys), one
//! fresh connection per POST: notifications are rare, and a pool would be
//! one more thing to size and to go stale.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use meridian_outbox::{Failure, Item};
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Meter, ObservableGauge},
};
use rustls::pki_types::ServerName;

use crate::{CHANNEL, Error, Notifier, Result, Target, render::Payload, target::check_url};

/// How the delivery task paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// How often the outbox is looked at when nothing woke the task.
    pub poll_interval: Duration,
    /// The longest one POST (connect, TLS, answer) may take.
    pub request_timeout: Duration,
    /// Items claimed at once.
    pub batch_max: u32,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            batch_max: 32,
        }
    }
}

/// The largest answer body read (only the status matters).
const RESPONSE_BYTES_MAX: usize = 16 * 1024;

/// `meridian_notifications_delivered_total`,
/// `meridian_notifications_failed_total` (by target) and the
/// `meridian_notifications_dead_letters` gauge.
#[derive(Clone)]
pub struct DeliveryMetrics {
    region: KeyValue,
    delivered: Counter<u64>,
    failed: Counter<u64>,
    dead: Arc<AtomicU64>,
    pending: Arc<AtomicU64>,
    _gauges: Arc<[ObservableGauge<u64>; 2]>,
}

impl DeliveryMetrics {
    pub fn new(meter: &Meter, region: &str) -> DeliveryMetrics {
        let region = KeyValue::new("meridian.region", region.to_owned());
        let dead = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(AtomicU64::new(0));
        let gauge = |name: &'static str, description: &'static str, value: &Arc<AtomicU64>| {
            let (value, region) = (Arc::downgrade(value), region.clone());
            meter
                .u64_observable_gauge(name)
                .with_description(description)
                .with_unit("{notification}")
                .with_callback(move |observer| {
                    if let Some(value) = value.upgrade() {
                        observer
                            .observe(value.load(Ordering::Relaxed), std::slice::from_ref(&region));
                    }
                })
                .build()
        };
        let gauges = [
            gauge(
                "meridian.notifications.dead_letters",
                "Notifications that ran out of attempts and wait for `meridian notify retry`",
                &dead,
            ),
            gauge(
                "meridian.notifications.pending",
                "Notifications queued for delivery or a retry",
                &pending,
            ),
        ];
        DeliveryMetrics {
            delivered: meter
                .u64_counter("meridian.notifications.delivered")
                .with_description("Notifications a webhook accepted, by target")
                .with_unit("{notification}")
                .build(),
            failed: meter
                .u64_counter("meridian.notifications.failed")
                .with_description(
                    "Failed delivery attempts, by target and whether the item is now a dead letter",
                )
                .with_unit("{attempt}")
                .build(),
            region,
            dead,
            pending,
            _gauges: Arc::new(gauges),
        }
    }
}

/// Builds each target's client once, for the errors.
pub(crate) fn check_targets(targets: &[Target]) -> Result<()> {
    targets.iter().try_for_each(|t| Client::new(t).map(drop))
}

/// An HTTPS client for one target.
struct Client {
    uri: http::Uri,
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    fn new(target: &Target) -> Result<Client> {
        let bad = |reason: String| Error::Config(format!("target {}: {reason}", target.name));
        let uri = check_url(&target.url).map_err(|reason| bad(format!("url: {reason}")))?;
        let config = meridian_tls::outbound_client_config(target.ca()).map_err(|e| {
            match (e, target.ca()) {
                (meridian_tls::OutboundTlsError::Ca(reason), Some(path)) => {
                    bad(format!("ca {}: {reason}", path.display()))
                }
                (e, _) => bad(e.to_string()),
            }
        })?;
        Ok(Client {
            uri,
            tls: tokio_rustls::TlsConnector::from(config),
        })
    }

    /// One POST; `Ok` only for a 2xx answer.
    async fn post(&self, key: &str, body: Bytes) -> std::result::Result<u16, String> {
        let uri = &self.uri;
        let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
            return Err("no host".into());
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = http::Request::post(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "meridian-notify")
            .header("idempotency-key", key)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        if https {
            let name =
                ServerName::try_from(host.clone()).map_err(|e| format!("host {host:?}: {e}"))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(tls), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
    }
}

async fn send<T>(io: T, request: http::Request<Full<Bytes>>) -> std::result::Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Title case: some receivers (and simple test servers) match
    // `Content-Length` as written.
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Drain a little so the receiver's answer is complete; ignore errors.
        let _ = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await;
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
    .await;
    driver.abort();
    result
}

impl Notifier {
    /// Delivers queued notifications until the task is dropped: claims due
    /// items, POSTs each to its target, and records the outcome. `wake`
    /// (from [`Notifier::notify`]'s callers) shortens the wait after an
    /// enqueue; without it the outbox is polled every
    /// [`DeliverySettings::poll_interval`].
    pub async fn deliver(
        self,
        settings: DeliverySettings,
        metrics: Option<DeliveryMetrics>,
    ) -> Result<()> {
        let (Some(outbox), Some(clock)) = (self.outbox().cloned(), self.clock()) else {
            return Ok(());
        };
        let clients: HashMap<String, Client> = self
            .targets()
            .iter()
            .map(|t| Ok((t.name.clone(), Client::new(t)?)))
            .collect::<Result<_>>()?;
        let mut ticker = tokio::time::interval(settings.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_dead = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.woken() => {}
            }
            let now = clock.now();
            let items = match outbox.claim(CHANNEL, now, settings.batch_max).await {
                Ok(items) => items,
                Err(error) => {
                    tracing::warn!(error = %error, "notifications: cannot read the outbox; retrying");
                    continue;
                }
            };
            let batch_full = items.len() >= settings.batch_max as usize;
            // Targets in parallel, each target's items in order.
            let mut by_target: HashMap<String, Vec<(Item, Payload)>> = HashMap::new();
            for item in items {
                match serde_json::from_str::<Payload>(&item.payload) {
                    Ok(payload) => by_target
                        .entry(payload.target.clone())
                        .or_default()
                        .push((item, payload)),
                    Err(error) => {
                        let reason = format!("unreadable payload: {error}");
                        settle(
                            &outbox,
                            &item,
                            clock.now(),
                            Err(reason),
                            "?",
                            metrics.as_ref(),
                        )
                        .await;
                    }
                }
            }
            let posts = by_target.into_iter().map(|(name, items)| {
                let (outbox, clock, metrics, client) =
                    (&outbox, &clock, metrics.as_ref(), clients.get(&name));
                async move {
                    for (item, payload) in items {
                        let outcome = match client {
                            None => Err(format!("target {name:?} is no longer configured")),
                            Some(client) => {
                                let body = Bytes::from(payload.body.to_string());
                                match tokio::time::timeout(
                                    settings.request_timeout,
                                    client.post(&payload.key, body),
                                )
                                .await
                                {
                                    Ok(result) => result,
                                    Err(_) => Err(format!(
                                        "no answer within {} ms",
                                        settings.request_timeout.as_millis()
                                    )),
                                }
                            }
                        };
                        settle(outbox, &item, clock.now(), outcome, &name, metrics).await;
                    }
                }
            });
            futures::future::join_all(posts).await;
            if let Ok(counts) = outbox.counts().await {
                if let Some(metrics) = &metrics {
                    metrics.dead.store(counts.dead, Ordering::Relaxed);
                    metrics.pending.store(counts.pending, Ordering::Relaxed);
                }
                if last_dead != Some(counts.dead) && counts.dead > 0 {
                    tracing::warn!(
                        dead_letters = counts.dead,
                        "notifications waiting in the dead-letter list (meridian notify dead-letters)"
                    );
                }
                last_dead = Some(counts.dead);
            }
            if batch_full {
                // More may be due: go again without waiting for the tick.
                self.wake();
            }
        }
    }
}

async fn settle(
    outbox: &meridian_outbox::Outbox,
    item: &Item,
    now: jiff::Timestamp,
    outcome: std::result::Result<u16, String>,
    target: &str,
    metrics: Option<&DeliveryMetrics>,
) {
    let attrs = |extra: Option<KeyValue>| {
        let mut attrs = vec![KeyValue::new("target", target.to_owned())];
        if let Some(m) = metrics {
            attrs.push(m.region.clone());
        }
        attrs.extend(extra);
        attrs
    };
    match outcome {
        Ok(status) => {
            tracing::debug!(key = %item.key, target, status, "notification delivered");
            if let Err(error) = outbox.delivered(item, now).await {
                // Sent, but not marked: the lease runs out and it goes again
                // under the same key, which the receiver deduplicates.
                tracing::warn!(key = %item.key, error = %error, "notification delivered but not marked; it will be sent again");
            }
            if let Some(m) = metrics {
                m.delivered.add(1, &attrs(None));
            }
        }
        Err(reason) => {
            let failure = outbox.failed(item, now, &reason).await;
            let dead = matches!(failure, Ok(Failure::Dead));
            match failure {
                Ok(Failure::Retry(at)) => {
                    tracing::info!(key = %item.key, target, attempt = item.attempts, retry_at = %at, error = %reason, "notification failed; will retry")
                }
                Ok(Failure::Dead) => {
                    tracing::error!(key = %item.key, target, attempts = item.attempts, error = %reason,
                        "notification is a dead letter: out of attempts (meridian notify retry to send it again)")
                }
                Ok(Failure::Stale) => {}
                Err(error) => {
                    tracing::warn!(key = %item.key, error = %error, "notification failed and could not be rescheduled; its claim lease brings it back")
                }
            }
            if let Some(m) = metrics {
                m.failed
                    .add(1, &attrs(Some(KeyValue::new("dead_letter", dead))));
            }
        }
    }
}
