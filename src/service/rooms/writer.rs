//! Group commit for local events.
//!
//! Every local event is appended by one writer task per process. It takes
//! whatever requests are waiting (up to [`MAX_BATCH`]), appends them all in
//! one transaction and commits once, so concurrent senders share a commit
//! (and, on PostgreSQL, one hold of the stream-position row lock and one
//! WAL flush) instead of queueing for one each.
//!
//! Refusals (auth rules, unknown room, bad content) are decided before the
//! event writes anything, so they fail only their own request. A database
//! error aborts the transaction; the batch is then replayed one request per
//! transaction, so one bad request never takes others down with it.

use std::sync::{Arc, Weak};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use tokio::sync::{mpsc, oneshot};

use super::timeline::{self, Appended, KeptHeads, Template, Txn};
use crate::{
    Error, Result, Server,
    service::federation::sender,
    store::push::{NewNotification, Recipients},
};

const MAX_BATCH: usize = 64;
const QUEUE: usize = 4096;

/// A client transaction id, owned so it can wait in the queue.
#[derive(Debug, Clone)]
pub struct OwnedTxn {
    pub device_id: String,
    pub scope: String,
    pub txn_id: String,
}

impl OwnedTxn {
    fn borrow(&self) -> Txn<'_> {
        Txn {
            device_id: &self.device_id,
            scope: &self.scope,
            txn_id: &self.txn_id,
        }
    }
}

struct Job {
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    template: Template,
    txn: Option<OwnedTxn>,
    /// The notifications the event causes, decided before it was queued.
    push: Arc<Recipients>,
    reply: oneshot::Sender<Result<OwnedEventId>>,
}

pub struct EventWriter {
    jobs: mpsc::Sender<Job>,
}

impl EventWriter {
    /// Starts the writer task; it stops when the server is dropped.
    pub fn start(server: Weak<Server>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(server, queue));
        Self { jobs }
    }

    pub async fn append(
        &self,
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        template: Template,
        txn: Option<OwnedTxn>,
        push: Arc<Recipients>,
    ) -> Result<OwnedEventId> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            room_id,
            sender,
            template,
            txn,
            push,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::internal("event writer stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("event writer dropped a request"))?
    }
}

async fn run(server: Weak<Server>, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut kept = KeptHeads::default();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(server) = server.upgrade() else {
            return;
        };
        write_batch(&server, std::mem::take(&mut batch), &mut kept).await;
    }
}

async fn write_batch(server: &Arc<Server>, jobs: Vec<Job>, kept: &mut KeptHeads) {
    match append_all(server, &jobs, kept).await {
        Ok((results, appended, destinations)) => {
            // Waking syncers runs beside the next batch, not before it.
            let notifying = server.clone();
            tokio::spawn(async move { timeline::notify(&notifying, &appended).await });
            sender::wake(server, &destinations);
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) if jobs.len() > 1 => {
            tracing::warn!(error = %e, size = jobs.len(), "event batch failed; replaying it one event at a time");
            for job in jobs {
                let result = append_all(server, std::slice::from_ref(&job), kept).await;
                let result = match result {
                    Ok((mut results, appended, destinations)) => {
                        timeline::notify(server, &appended).await;
                        sender::wake(server, &destinations);
                        results.remove(0)
                    }
                    Err(e) => Err(e),
                };
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
    }
}

/// What a committed batch did: each job's outcome, the events appended,
/// and the servers they were queued for.
type BatchOutcome = (Vec<Result<OwnedEventId>>, Vec<Appended>, Vec<String>);

/// Appends the jobs in one transaction. The outer error means the
/// transaction failed; the inner results are each job's own outcome. The
/// rooms' heads are taken from `kept` where still current, and left there
/// once committed.
async fn append_all(server: &Server, jobs: &[Job], kept: &mut KeptHeads) -> Result<BatchOutcome> {
    let mut w = server.db.write().await?;
    w.reserve_stream_positions(jobs.len() as i64).await?;
    let mut heads = kept.take_current(&w);
    let mut rooms: Vec<&str> = jobs
        .iter()
        .filter(|j| !heads.contains_key(&j.room_id))
        .map(|j| j.room_id.as_str())
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    if !rooms.is_empty() {
        timeline::load_heads(server, &mut w, &mut heads, &rooms).await?;
    }
    let mut results = Vec::with_capacity(jobs.len());
    let mut appended = Vec::with_capacity(jobs.len());
    let keyed: Vec<(&str, Txn<'_>)> = jobs
        .iter()
        .filter_map(|j| Some((j.sender.as_str(), j.txn.as_ref()?.borrow())))
        .collect();
    let mut seen = w.txn_events(&keyed).await?;
    let ts = crate::now_ms();
    for job in jobs {
        let txn = job.txn.as_ref().map(OwnedTxn::borrow);
        // Sent before this batch, or earlier in it.
        let earlier = txn.and_then(|t| {
            seen.remove(&(job.sender.as_str(), t))
                .flatten()
                .or_else(|| w.staged_txn_event(job.sender.as_str(), &t))
        });
        if let Some(existing) = earlier {
            results.push(existing.try_into().map_err(Error::internal));
            continue;
        }
        match timeline::append_in(
            server,
            &mut w,
            &mut heads,
            &job.room_id,
            &job.sender,
            job.template.clone(),
            txn,
        )
        .await
        {
            Ok(a) => {
                results.push(Ok(a.event_id.clone()));
                w.stage_notifications(&[NewNotification {
                    room_id: a.room_id.as_str(),
                    stream_ordering: a.stream_ordering,
                    event_id: a.event_id.as_str(),
                    ts,
                    recipients: &job.push,
                }]);
                appended.push(a);
            }
            // A failed statement aborts the whole transaction.
            Err(e) if e.status.is_server_error() => return Err(e),
            Err(e) => results.push(Err(e)),
        }
    }
    let destinations = sender::queue_local_events(server, &mut w, &mut heads, &appended).await?;
    let kept_at = w.heads_kept_by_caller();
    w.commit().await?;
    if let Some(at) = kept_at {
        kept.keep(heads, at);
    }
    Ok((results, appended, destinations))
}
