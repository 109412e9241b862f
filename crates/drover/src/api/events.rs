//! `GET /api/v1/events`: the events `drover events` prints, as a JSON list,
//! or — asked for `text/event-stream` — as server-sent events that follow
//! the ledger: each event is `id: SEQ`, `event: TYPE`, `data: JSON`, so a
//! browser's `EventSource` resumes after a dropped connection from the
//! last id it saw (`Last-Event-ID`).
//!
//! Query: `service`, `since` and `until` (a duration back from now or a
//! timestamp, as the CLI's flags), `from` (a ledger seq). A stream without
//! `since`, `from` or `Last-Event-ID` starts at the next event, as `docker
//! events` does.

use std::time::Duration;

use drover_core::events::{self, Query};
use drover_core::store::Store;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::{Body, Call, Reply};
use crate::output;

/// How often a stream looks for new entries.
const POLL: Duration = Duration::from_millis(500);
/// A comment this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

fn query(c: &Call) -> anyhow::Result<Query> {
    let time = |key: &str| -> anyhow::Result<Option<String>> {
        c.query(key)
            .map(|v| {
                crate::timearg::parse(v)
                    .map(crate::timearg::Time::rfc3339)
                    .map_err(|e| super::usage(format!("query parameter {key}: {e}")))
            })
            .transpose()
    };
    Ok(Query {
        service: c.query("service").map(str::to_string),
        since: time("since")?,
        until: time("until")?,
    })
}

/// The events so far (`drover events --json`'s, as one `EventList`), and
/// `next`: the `from` to ask with for the ones after.
pub fn list(c: &Call) -> anyhow::Result<Reply> {
    let q = query(c)?;
    let from = c.number::<u64>("from")?.unwrap_or(1);
    let store = Store::open_unleased(&c.api.store)?;
    let batch = events::read(store.db().read(), &q, from)?;
    let mut doc = output::document("Event", serde_json::to_value(&batch.events)?);
    doc["next"] = batch.next.into();
    Ok(Reply::json(StatusCode::OK, &doc))
}

/// The event stream.
pub fn stream(c: &Call, last_event: Option<u64>) -> anyhow::Result<Response<Body>> {
    let q = query(c)?;
    let dir = c.api.store.clone();
    let mut store = Store::open_unleased(&dir)?;
    let head = store.db().read().ledger_head()?.map_or(0, |h| h.0 as u64);
    let mut from = match (last_event, c.number::<u64>("from")?) {
        (Some(seen), _) => seen + 1,
        (None, Some(from)) => from,
        (None, None) if q.since.is_some() => 1,
        (None, None) => head + 1,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if tx
            .send(Bytes::from_static(b"retry: 2000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut quiet = Duration::ZERO;
        loop {
            let q2 = q.clone();
            let read = tokio::task::spawn_blocking(move || {
                let batch = events::read(store.db().read(), &q2, from);
                (store, batch)
            })
            .await;
            let Ok((back, batch)) = read else { return };
            store = back;
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    let doc = output::error_document("internal", &e.to_string(), None);
                    let _ = tx.send(frame(None, "error", &doc.to_string())).await;
                    return;
                }
            };
            from = batch.next;
            for e in &batch.events {
                let data = serde_json::to_string(e).expect("an event serializes");
                if tx
                    .send(frame(Some(e.seq), e.kind.as_str(), &data))
                    .await
                    .is_err()
                {
                    return;
                }
                quiet = Duration::ZERO;
            }
            if q.until
                .as_ref()
                .is_some_and(|u| drover_core::clock::now_rfc3339() >= *u)
            {
                return;
            }
            if quiet >= KEEPALIVE {
                if tx
                    .send(Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
                quiet = Duration::ZERO;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => quiet += POLL,
                _ = tx.closed() => return,
            }
        }
    });
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    }));
    let body: Body = BodyExt::boxed(body);
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx in front: do not buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// One server-sent event. `data` is one line (compact JSON).
fn frame(id: Option<u64>, event: &str, data: &str) -> Bytes {
    let mut s = String::new();
    if let Some(id) = id {
        s.push_str(&format!("id: {id}\n"));
    }
    s.push_str(&format!("event: {event}\ndata: {data}\n\n"));
    s.into()
}
