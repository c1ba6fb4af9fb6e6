//! etcd's Watch service: many watchers multiplexed on one bidirectional stream.
//!
//! One session task per stream reads the client's requests (create, cancel, progress) and
//! owns the stream's watchers; each watcher is a task that turns its [`keel::WatchStream`]
//! into responses. All of them write into one bounded channel, the response stream, so a
//! client that stops reading slows its own watchers down and nothing else.
//!
//! Order on the stream, per watcher: the `created` response, then events in revision order,
//! then at most one `canceled` response (after a cancel request, or when the revisions the
//! watcher needs were compacted), after which nothing else for that id.

use super::{current_header, to_status, ApiLimits};
use crate::convert;
use crate::pb::etcdserverpb as pb;
use futures_util::StreamExt;
use keel::{Node, NodeError};
use keel_storage::StorageError;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Responses buffered per stream before watchers wait for the client to read.
const RESPONSES_BUFFER: usize = 128;

/// The watch id etcd uses for answers that belong to no single watcher (progress).
const NO_WATCH_ID: i64 = -1;

/// etcd's text for a client-chosen watch id that is already in use on the stream.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

type Responses = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// The client stopped reading (its stream is gone).
struct Closed;

/// etcd's Watch service on a [`Node`].
#[derive(Clone, Debug)]
pub struct WatchService {
    node: Arc<Node>,
    limits: ApiLimits,
}

impl WatchService {
    /// The service on `node`; fragments are bounded by `limits.request_bytes_max`.
    pub fn new(node: Arc<Node>, limits: ApiLimits) -> Self {
        WatchService { node, limits }
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let node = Arc::new(super::caller(&self.node, &request).await?);
        crate::status::refuse_on_learner(&node)?;
        let (tx, rx) = mpsc::channel(RESPONSES_BUFFER);
        let session = Session {
            _stream: StreamCount::new(node.metrics().watch_streams()),
            node: Arc::clone(&node),
            limits: self.limits,
            tx,
            watchers: BTreeMap::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One running watcher of a stream.
struct Watching {
    task: JoinHandle<()>,
    /// Every event up to this revision has been queued on the stream.
    delivered: Arc<AtomicI64>,
}

/// The state of one Watch stream.
///
/// Invariants: 1. every id in `watchers` is unique on the stream; 2. a watcher's task is the
/// only writer of its events, and after its `canceled` response it writes nothing.
/// Counts one client watch stream while it lives.
struct StreamCount(prometheus_client::metrics::gauge::Gauge);

impl StreamCount {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        StreamCount(gauge)
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Session {
    /// Counted in the node's watch stream gauge.
    _stream: StreamCount,
    node: Arc<Node>,
    limits: ApiLimits,
    tx: Responses,
    watchers: BTreeMap<i64, Watching>,
    /// Next id to try for a watcher that did not choose one (etcd starts at 0).
    next_id: i64,
}

impl Drop for Session {
    fn drop(&mut self) {
        for w in self.watchers.values() {
            w.task.abort();
        }
    }
}

impl Session {
    /// Serve requests until the client closes its side or stops reading; then every watcher
    /// stops (dropping the session aborts them).
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        use pb::watch_request::RequestUnion;
        while let Some(Ok(request)) = inbound.next().await {
            let served = match request.request_union {
                Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
                Some(RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => self.progress().await,
                None => Ok(()),
            };
            if served.is_err() {
                return;
            }
        }
    }

    async fn send(&self, response: Result<pb::WatchResponse, Status>) -> Result<(), Closed> {
        self.tx.send(response).await.map_err(|_| Closed)
    }

    /// etcd's id choice: the client's when non-zero and free; otherwise the lowest unused
    /// id from a counter that starts at 0.
    fn choose_id(&mut self, requested: i64) -> Option<i64> {
        self.watchers.retain(|_, w| !w.task.is_finished());
        if requested != 0 {
            return (!self.watchers.contains_key(&requested)).then_some(requested);
        }
        while self.watchers.contains_key(&self.next_id) {
            self.next_id = self.next_id.checked_add(1)?;
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1)?;
        Some(id)
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> Result<(), Closed> {
        let header = match current_header(&self.node).await {
            Ok(h) => h,
            Err(status) => return self.send(Err(status)).await,
        };
        // Count live watchers only; a refused create uses up no id.
        self.watchers.retain(|_, w| !w.task.is_finished());
        if self.watchers.len() >= self.limits.watchers_per_stream_max {
            return self
                .send(Ok(refused(
                    header,
                    crate::status::TOO_MANY_REQUESTS.to_owned(),
                )))
                .await;
        }
        let Some(id) = self.choose_id(create.watch_id) else {
            return self
                .send(Ok(refused(header, DUPLICATE_WATCH_ID.to_owned())))
                .await;
        };
        let created = pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        let spec = convert::watch_spec(&create);
        let start = spec.start_revision;
        match self.node.watch(spec).await {
            Ok(stream) => {
                self.send(Ok(created)).await?;
                // Nothing at or below this revision will be sent: the watch starts after it.
                let before_start = start.map_or(header.revision, |s| s.to_etcd().saturating_sub(1));
                self.spawn_pump(
                    id,
                    header,
                    &create,
                    stream,
                    before_start.min(header.revision),
                );
                Ok(())
            }
            Err(NodeError::Rejected(StorageError::Compacted { compacted, .. })) => {
                // As etcd: the watch is created, then canceled for the compaction.
                self.send(Ok(created)).await?;
                self.send(Ok(compacted_response(header, id, compacted.to_etcd())))
                    .await
            }
            Err(e) => {
                let status = to_status(e);
                self.send(Ok(refused(header, status.message().to_owned())))
                    .await
            }
        }
    }

    fn spawn_pump(
        &mut self,
        id: i64,
        header: pb::ResponseHeader,
        create: &pb::WatchCreateRequest,
        stream: keel::WatchStream,
        delivered: i64,
    ) {
        let delivered = Arc::new(AtomicI64::new(delivered));
        let pump = Pump {
            id,
            header,
            tx: self.tx.clone(),
            fragment: create.fragment,
            bytes_max: self.limits.request_bytes_max,
            delivered: Arc::clone(&delivered),
        };
        let progress = create
            .progress_notify
            .then_some(self.limits.watch_progress_interval);
        let task = tokio::spawn(pump.run(stream, progress));
        self.watchers.insert(id, Watching { task, delivered });
    }

    /// Stop watcher `id` and confirm; an unknown (or already ended) id gets no answer, as in
    /// etcd.
    async fn cancel(&mut self, id: i64) -> Result<(), Closed> {
        let Some(watching) = self.watchers.remove(&id) else {
            return Ok(());
        };
        if watching.task.is_finished() {
            return Ok(());
        }
        watching.task.abort();
        // Wait for the task to stop, so none of its events can follow the confirmation.
        let _ = watching.task.await;
        let header = match current_header(&self.node).await {
            Ok(h) => h,
            Err(status) => return self.send(Err(status)).await,
        };
        self.send(Ok(pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            canceled: true,
            ..Default::default()
        }))
        .await
    }

    /// Answer a progress request with a revision every watcher of the stream has delivered
    /// all events up to (the current revision when there is no watcher).
    ///
    /// Deviation from etcd: etcd reports the store's current revision once all watchers are
    /// synced; keel's watch streams report progress only through events, so the answer is
    /// the lowest revision the stream's watchers have delivered, which can trail the current
    /// revision while watchers are idle (always correct, sometimes conservative).
    async fn progress(&mut self) -> Result<(), Closed> {
        let mut header = match current_header(&self.node).await {
            Ok(h) => h,
            Err(status) => return self.send(Err(status)).await,
        };
        self.watchers.retain(|_, w| !w.task.is_finished());
        if let Some(min) = self
            .watchers
            .values()
            .map(|w| w.delivered.load(Ordering::Acquire))
            .min()
        {
            header.revision = header.revision.min(min);
        }
        self.send(Ok(pb::WatchResponse {
            header: Some(header),
            watch_id: NO_WATCH_ID,
            ..Default::default()
        }))
        .await
    }
}

/// A create that failed: etcd answers `created` and `canceled` at once, with the reason.
fn refused(header: pb::ResponseHeader, reason: String) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(header),
        watch_id: NO_WATCH_ID,
        created: true,
        canceled: true,
        cancel_reason: reason,
        ..Default::default()
    }
}

fn compacted_response(header: pb::ResponseHeader, id: i64, compacted: i64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(header),
        watch_id: id,
        canceled: true,
        compact_revision: compacted,
        cancel_reason: crate::status::COMPACTED.to_owned(),
        ..Default::default()
    }
}

/// Moves one watcher's batches onto the stream.
struct Pump {
    id: i64,
    /// The last header sent (its cluster, member and term are reused for progress).
    header: pb::ResponseHeader,
    tx: Responses,
    fragment: bool,
    bytes_max: usize,
    delivered: Arc<AtomicI64>,
}

impl Pump {
    async fn run(mut self, mut stream: keel::WatchStream, progress: Option<Duration>) {
        let mut ticker = progress.map(|period| {
            let mut t = tokio::time::interval(period);
            t.reset();
            t
        });
        let mut sent_since_tick = false;
        loop {
            tokio::select! {
                item = stream.next() => {
                    let Some(item) = item else { return };
                    if self.deliver(item).await.is_err() {
                        return;
                    }
                    sent_since_tick = true;
                }
                () = next_tick(&mut ticker) => {
                    if !sent_since_tick && self.notify_progress().await.is_err() {
                        return;
                    }
                    sent_since_tick = false;
                }
            }
        }
    }

    /// Send one batch (or the end of the watch); `Err` when the watcher must stop.
    async fn deliver(
        &mut self,
        item: Result<keel::Response<keel_storage::watch::WatchBatch>, NodeError>,
    ) -> Result<(), Closed> {
        let batch = match item {
            Ok(batch) => batch,
            Err(e) => {
                let response = match e {
                    NodeError::Rejected(StorageError::Compacted { compacted, .. }) => Ok(
                        compacted_response(self.header, self.id, compacted.to_etcd()),
                    ),
                    other => Err(to_status(other)),
                };
                let _ = self.tx.send(response).await;
                return Err(Closed);
            }
        };
        self.header = convert::header(&batch.header);
        let events = batch.body.events.into_iter().map(convert::event).collect();
        for response in fragments(self.header, self.id, events, self.fragment, self.bytes_max) {
            self.tx.send(Ok(response)).await.map_err(|_| Closed)?;
        }
        self.delivered
            .store(batch.body.revision.to_etcd(), Ordering::Release);
        Ok(())
    }

    /// etcd's progress notification: an empty response at the revision delivered so far.
    async fn notify_progress(&self) -> Result<(), Closed> {
        let mut header = self.header;
        header.revision = self.delivered.load(Ordering::Acquire);
        let response = pb::WatchResponse {
            header: Some(header),
            watch_id: self.id,
            ..Default::default()
        };
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }
}

async fn next_tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Bytes an event adds to a response: field 11's one-byte tag, its length, the event.
fn event_len_bytes(event: &crate::pb::mvccpb::Event) -> usize {
    let len = event.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// The responses carrying `events`: one, or (when the watcher allows fragments and one
/// response would exceed `bytes_max`) several of at most `bytes_max` bytes each — at least
/// one event each — with `fragment` set on all but the last.
fn fragments(
    header: pb::ResponseHeader,
    id: i64,
    events: Vec<crate::pb::mvccpb::Event>,
    fragment: bool,
    bytes_max: usize,
) -> Vec<pb::WatchResponse> {
    let empty = pb::WatchResponse {
        header: Some(header),
        watch_id: id,
        ..Default::default()
    };
    let base_len = empty.encoded_len();
    let total_len = base_len + events.iter().map(event_len_bytes).sum::<usize>();
    if !fragment || total_len <= bytes_max {
        return vec![pb::WatchResponse { events, ..empty }];
    }
    let mut out = Vec::new();
    let mut current = empty.clone();
    let mut current_len = base_len;
    for event in events {
        let len = event_len_bytes(&event);
        if !current.events.is_empty() && current_len + len > bytes_max {
            current.fragment = true;
            out.push(std::mem::replace(&mut current, empty.clone()));
            current_len = base_len;
        }
        current_len += len;
        current.events.push(event);
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb;

    fn event(value_bytes: usize) -> mvccpb::Event {
        mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: "k".into(),
                value: vec![b'v'; value_bytes].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fragments_respect_the_limit_and_mark_all_but_the_last() {
        let header = pb::ResponseHeader::default();
        let events: Vec<_> = (0..10).map(|_| event(100)).collect();
        let whole = fragments(header, 3, events.clone(), false, 300);
        assert_eq!(whole.len(), 1);
        let parts = fragments(header, 3, events, true, 300);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encoded_len() <= 300));
        let flags: Vec<bool> = parts.iter().map(|p| p.fragment).collect();
        assert!(flags[..flags.len() - 1].iter().all(|f| *f));
        assert!(!flags[flags.len() - 1]);
        assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        // An event larger than the limit still goes out, alone.
        let big = fragments(header, 3, vec![event(1000), event(10)], true, 300);
        assert_eq!(big.len(), 2);
    }
}
