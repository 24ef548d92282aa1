//! The region view kept current from etcd: a snapshot (Range over the
//! prefix), then a Watch from the snapshot's revision on. When the watch
//! breaks the view says `connected: false` until a new snapshot replaces it.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    apply,
    client::{self, Client, request},
    pb::{
        etcdserverpb::{
            RangeRequest, WatchCreateRequest, WatchRequest, kv_client::KvClient,
            watch_client::WatchClient, watch_request,
        },
        mvccpb::{KeyValue, event::EventType},
    },
};
use crate::{
    error::Result,
    keys::{self, KeyLayout},
    types::{RegionStatus, RegionView, Revision},
};

/// Takes a first snapshot (so the caller gets a real view or an error),
/// then follows changes in a task that ends when the last receiver drops.
pub(crate) async fn start(
    client: Client,
    layout: KeyLayout,
) -> Result<watch::Receiver<RegionView>> {
    let view = snapshot(&client, &layout).await?;
    let revision = view.revision;
    let (sender, receiver) = watch::channel(view);
    tokio::spawn(follow(client, layout, sender, revision));
    Ok(receiver)
}

async fn snapshot(client: &Client, layout: &KeyLayout) -> Result<RegionView> {
    let prefix = layout.all_regions_prefix();
    let range = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: keys::prefix_range_end(prefix.as_bytes()),
        ..RangeRequest::default()
    };
    let response = client
        .unary("Range", |channel, deadline| {
            let range = range.clone();
            async move { KvClient::new(channel).range(request(range, deadline)).await }
        })
        .await?;
    let revision = response
        .header
        .map(|header| Revision::from_etcd(header.revision))
        .unwrap_or_default();
    let mut view = RegionView {
        regions: BTreeMap::new(),
        revision,
        connected: true,
    };
    for kv in &response.kvs {
        apply_change(&mut view, layout, kv, false);
    }
    view.stamp(revision);
    Ok(view)
}

fn apply_change(view: &mut RegionView, layout: &KeyLayout, kv: &KeyValue, deleted: bool) {
    let Some((region, kind)) = layout.parse(&kv.key) else {
        return;
    };
    let status = view
        .regions
        .entry(region.clone())
        .or_insert_with(|| RegionStatus::empty(region.clone(), view.revision));
    if let Err(err) = apply(status, kind, (!deleted).then_some(kv)) {
        tracing::warn!(region = %region, error = %err, "ignoring a malformed coordination record");
    }
}

async fn follow(
    client: Client,
    layout: KeyLayout,
    sender: watch::Sender<RegionView>,
    mut revision: Revision,
) {
    let mut backoff = client::first_backoff();
    loop {
        let (index, channel) = client.preferred();
        tokio::select! {
            () = sender.closed() => return,
            reason = watch_once(&layout, channel, client.rpc_timeout(), &sender, &mut revision) => {
                tracing::warn!(endpoint = client.endpoint_name(index), reason, "region watch broke, resubscribing");
                client.failed(index);
            }
        }
        sender.send_if_modified(|view| std::mem::replace(&mut view.connected, false));
        loop {
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = client::next_backoff(backoff);
            // A fresh snapshot also covers events lost to compaction.
            match snapshot(&client, &layout).await {
                Ok(view) => {
                    revision = view.revision;
                    sender.send_replace(view);
                    backoff = client::first_backoff();
                    break;
                }
                Err(err) => tracing::warn!(error = %err, "region snapshot failed"),
            }
        }
    }
}

/// Follows one Watch stream until it breaks; returns why.
async fn watch_once(
    layout: &KeyLayout,
    channel: tonic::transport::Channel,
    open_deadline: std::time::Duration,
    sender: &watch::Sender<RegionView>,
    revision: &mut Revision,
) -> String {
    let prefix = layout.all_regions_prefix();
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: keys::prefix_range_end(prefix.as_bytes()),
                start_revision: revision.to_etcd().saturating_add(1),
                progress_notify: true,
                ..WatchCreateRequest::default()
            },
        )),
    };
    // The request side stays open for as long as the watch runs.
    let (requests, outgoing) = mpsc::channel::<WatchRequest>(1);
    if requests.send(create).await.is_err() {
        return "request stream closed".into();
    }
    let mut watch_client = WatchClient::new(channel);
    let opening = watch_client.watch(client::leader_required(ReceiverStream::new(outgoing)));
    let mut stream = match tokio::time::timeout(open_deadline, opening).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return format!("watch refused: {status}"),
        Err(_) => return format!("watch not opened within {} ms", open_deadline.as_millis()),
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return "watch stream ended".into(),
            Err(status) => return format!("watch stream failed: {status}"),
        };
        if response.canceled {
            return format!(
                "watch cancelled by etcd: {} (compact revision {})",
                response.cancel_reason, response.compact_revision
            );
        }
        let mut latest = *revision;
        let is_progress = response.events.is_empty() && !response.created;
        sender.send_if_modified(|view| {
            let before = view.clone();
            for event in &response.events {
                let Some(kv) = &event.kv else { continue };
                apply_change(view, layout, kv, event.r#type == EventType::Delete as i32);
                latest = latest.max(Revision::from_etcd(kv.mod_revision));
            }
            // A progress notification promises every event up to its header
            // revision was sent.
            if is_progress && let Some(header) = &response.header {
                latest = latest.max(Revision::from_etcd(header.revision));
            }
            view.connected = true;
            if latest != view.revision {
                view.stamp(latest);
            }
            *view != before
        });
        *revision = latest;
    }
}
