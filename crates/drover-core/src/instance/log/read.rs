//! Reading logs back: `drover logs TARGET`.
//!
//! A target is an instance (id, unique id prefix or name; a removed one by
//! id or id prefix, from the kept logs), a service (every instance it has
//! now, running or exited, each line prefixed with its instance, merged by
//! time) or `service@release` (that release's instances, removed ones
//! included). `previous` asks for the instance the target replaced: the
//! most recent one of the same service and replica slot created before it
//! (`kubectl logs --previous`).
//!
//! Each instance's files are read oldest first (`log.N` … `log.1`, `log`),
//! pieces joined into lines ([`line::Assembler`]), filtered by time
//! (`since`, `until`), cut to the last `tail` lines per instance, and
//! merged by time across instances, each instance's own order kept. All
//! lines go to one output (as `kubectl logs` does); the JSON form carries
//! each line's stream. Following polls the files (across rotations) until
//! the instance exits; a service or release is followed until interrupted,
//! instances that appear meanwhile included.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::line::{Assembler, Line};
use super::{Follower, keep};
use crate::clock;
use crate::error::{Error, IoContext, Result};
use crate::instance::{self, Instance, State};
use crate::runtime;
use crate::store::Store;

/// What `drover logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub target: String,
    pub previous: bool,
    /// Only lines read at or after this time (ns since the epoch).
    pub since_ns: Option<i64>,
    /// Only lines read before this time (ns since the epoch).
    pub until_ns: Option<i64>,
    /// Only the last this many lines of each instance.
    pub tail: Option<usize>,
    pub follow: bool,
    /// Each line after the time it was read.
    pub timestamps: bool,
    /// One JSON object per line: time, stream, instance, service, release, text.
    pub json: bool,
}

/// One instance whose log is read.
#[derive(Debug, Clone)]
struct Source {
    id: String,
    service: Option<String>,
    release: Option<i64>,
    log: PathBuf,
}

/// What the target named.
enum Target {
    One(Box<Instance>),
    Many {
        service: String,
        release: Option<i64>,
    },
}

/// Print the logs `req` asks for to `out`.
pub fn show(store: &mut Store, req: &Request, out: &mut dyn Write) -> Result<()> {
    let target = resolve(store, &req.target)?;
    let target = match (target, req.previous) {
        (Target::One(i), true) => Target::One(Box::new(previous(store, &i)?)),
        (Target::Many { .. }, true) => {
            return Err(Error::Usage(format!(
                "--previous takes an instance; {:?} names a service (give one of its instances)",
                req.target
            )));
        }
        (t, false) => t,
    };
    let prefixed = matches!(target, Target::Many { .. });
    let mut sources = sources(store, &target)?;
    let mut tails: Vec<Tail> = Vec::new();
    let mut batches = Vec::new();
    for s in &sources {
        let (t, mut lines) = Tail::start(&s.log)?;
        filter(&mut lines, req);
        if let Some(n) = req.tail {
            lines.drain(..lines.len().saturating_sub(n));
        }
        tails.push(t);
        batches.push(lines);
    }
    let mut printer = Printer {
        req,
        prefixed,
        width: sources
            .iter()
            .map(|s| short(&s.id).len())
            .max()
            .unwrap_or(0),
    };
    printer.print(&sources, merge(batches), out)?;
    if !req.follow {
        let rest = tails.iter_mut().map(|t| t.asm.finish()).collect();
        return printer.print(&sources, merge(rest), out);
    }
    let stdout = Path::new("<stdout>");
    let mut looked = Instant::now();
    loop {
        out.flush().ctx("write log", stdout)?;
        std::thread::sleep(Duration::from_millis(100));
        let mut batches = Vec::new();
        for t in &mut tails {
            let mut lines = t.poll()?;
            filter(&mut lines, req);
            batches.push(lines);
        }
        printer.print(&sources, merge(batches), out)?;
        match &target {
            Target::One(i) => {
                let now = instance::find(store.db(), &i.id)?;
                let now = instance::refresh_one(store.db_mut(), now)?;
                if !now.state.is_live() {
                    // One last read: output written just before the exit.
                    let mut lines = tails[0].poll()?;
                    lines.extend(tails[0].asm.finish());
                    filter(&mut lines, req);
                    let last = lines.into_iter().map(|l| (0, l)).collect();
                    printer.print(&sources, last, out)?;
                    return out.flush().ctx("write log", stdout);
                }
            }
            Target::Many { .. } if looked.elapsed() >= Duration::from_secs(1) => {
                looked = Instant::now();
                // New instances (a heal, a deploy): all their output is new.
                for s in self::sources(store, &target)? {
                    if sources.iter().any(|k| k.id == s.id) {
                        continue;
                    }
                    let (t, mut lines) = Tail::start(&s.log)?;
                    filter(&mut lines, req);
                    sources.push(s);
                    tails.push(t);
                    printer.width = printer
                        .width
                        .max(short(&sources[sources.len() - 1].id).len());
                    let at = sources.len() - 1;
                    printer.print(&sources, lines.into_iter().map(|l| (at, l)).collect(), out)?;
                }
            }
            Target::Many { .. } => {}
        }
    }
}

/// The last `n` lines of the log at `log` (pieces joined), as text.
pub fn last_lines(log: &Path, n: usize) -> Vec<String> {
    let Ok((mut t, mut lines)) = Tail::start(log) else {
        return Vec::new();
    };
    lines.extend(t.asm.finish());
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| String::from_utf8_lossy(&l.text).into_owned())
        .collect()
}

fn resolve(store: &Store, key: &str) -> Result<Target> {
    if let Some((service, release)) = key.split_once('@') {
        let release = release.parse::<i64>().map_err(|_| {
            Error::Usage(format!(
                "{key:?}: after @ comes a release number (`drover releases {service}` lists them)"
            ))
        })?;
        return Ok(Target::Many {
            service: service.to_string(),
            release: Some(release),
        });
    }
    let not_found = match instance::find(store.db(), key) {
        Ok(i) => return Ok(Target::One(Box::new(i))),
        Err(e @ Error::NotFound { .. }) => e,
        Err(e) => return Err(e),
    };
    let all = instance::list(store.db(), true)?;
    if all.iter().any(|i| i.service.as_deref() == Some(key)) {
        return Ok(Target::Many {
            service: key.to_string(),
            release: None,
        });
    }
    // A removed instance by a prefix of its id.
    let removed: Vec<&Instance> = all
        .iter()
        .filter(|i| i.state == State::Deleted && i.id.starts_with(key))
        .collect();
    match removed.as_slice() {
        [one] if !key.is_empty() => Ok(Target::One(Box::new((*one).clone()))),
        [] | [_] => Err(match not_found {
            Error::NotFound { .. } => Error::NotFound {
                what: format!("instance or service {key:?}"),
                hint: Some("`drover ps -a` lists instances, `drover status` services".into()),
            },
            e => e,
        }),
        many => Err(Error::Usage(format!(
            "{key:?} matches {} removed instances; give more of the id",
            many.len()
        ))),
    }
}

/// The instance `inst` replaced: same service and slot, created before it,
/// the most recent such.
fn previous(store: &Store, inst: &Instance) -> Result<Instance> {
    let none = || Error::NotFound {
        what: format!("an instance before {}", inst.id),
        hint: Some(match (&inst.service, inst.slot) {
            (Some(s), Some(slot)) => format!(
                "it is the first instance of service {s} in replica slot {slot} (or the \
                 one before was removed before logs were kept)"
            ),
            _ => "only a service's instances replace one another".into(),
        }),
    };
    let (Some(service), Some(slot)) = (&inst.service, inst.slot) else {
        return Err(none());
    };
    instance::list(store.db(), true)?
        .into_iter()
        .filter(|i| {
            i.id != inst.id
                && i.service.as_deref() == Some(service)
                && i.slot == Some(slot)
                && !i.state.is_live()
                && i.created <= inst.created
        })
        .max_by(|a, b| a.created.cmp(&b.created))
        .ok_or_else(none)
}

fn sources(store: &Store, target: &Target) -> Result<Vec<Source>> {
    let root = store.root();
    let source = |i: &Instance| -> Option<Source> {
        let log = if i.state == State::Deleted {
            keep::log_of(root, &i.id)?
        } else {
            runtime::log_path(&i.bundle(root))
        };
        Some(Source {
            id: i.id.clone(),
            service: i.service.clone(),
            release: i.release,
            log,
        })
    };
    match target {
        Target::One(i) => source(i).map(|s| vec![s]).ok_or_else(|| {
            Error::Usage(format!(
                "instance {} was removed and its log is not kept (gc collected it after its \
                 service's `logs.keep`, or it was removed before drover kept logs)",
                i.id
            ))
        }),
        Target::Many { service, release } => {
            let all = instance::list(store.db(), release.is_some())?;
            let of: Vec<&Instance> = all
                .iter()
                .filter(|i| i.service.as_deref() == Some(service.as_str()))
                .filter(|i| release.is_none() || i.release == *release)
                .collect();
            let v: Vec<Source> = of.iter().filter_map(|i| source(i)).collect();
            if of.is_empty() && release.is_some() {
                return Err(Error::NotFound {
                    what: format!("logs of {service}@{}", release.unwrap_or(0)),
                    hint: Some(format!(
                        "`drover releases {service}` lists its releases; kept logs of removed \
                         instances go after the service's `logs.keep`"
                    )),
                });
            }
            Ok(v)
        }
    }
}

fn filter(lines: &mut Vec<Line>, req: &Request) {
    lines.retain(|l| match l.time {
        // Unstamped (an older monitor's): no time to judge by; kept.
        None => true,
        Some(t) => req.since_ns.is_none_or(|s| t >= s) && req.until_ns.is_none_or(|u| t < u),
    });
}

/// Merge per-source batches by time, each source's order kept.
fn merge(batches: Vec<Vec<Line>>) -> Vec<(usize, Line)> {
    let mut queues: Vec<VecDeque<Line>> = batches.into_iter().map(VecDeque::from).collect();
    let mut out = Vec::new();
    loop {
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.front().map(|l| (l.time.unwrap_or(i64::MIN), i)))
            .min();
        let Some((_, i)) = next else {
            return out;
        };
        out.push((i, queues[i].pop_front().expect("front seen")));
    }
}

/// The instance as a line's prefix names it.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

struct Printer<'a> {
    req: &'a Request,
    prefixed: bool,
    width: usize,
}

impl Printer<'_> {
    fn print(
        &self,
        sources: &[Source],
        lines: Vec<(usize, Line)>,
        out: &mut dyn Write,
    ) -> Result<()> {
        let stdout = Path::new("<stdout>");
        for (i, l) in lines {
            let s = &sources[i];
            let time = l.time.map(clock::format_rfc3339_nanos);
            if self.req.json {
                let v = json!({
                    "time": time,
                    "stream": l.stream.as_str(),
                    "instance": s.id,
                    "service": s.service,
                    "release": s.release,
                    "text": String::from_utf8_lossy(&l.text),
                });
                writeln!(out, "{v}").ctx("write log", stdout)?;
                continue;
            }
            let mut head = String::new();
            if self.prefixed {
                head.push_str(&format!("{:w$} | ", short(&s.id), w = self.width));
            }
            if self.req.timestamps {
                head.push_str(time.as_deref().unwrap_or("-"));
                head.push(' ');
            }
            out.write_all(head.as_bytes())
                .and_then(|()| out.write_all(&l.text))
                .and_then(|()| out.write_all(b"\n"))
                .ctx("write log", stdout)?;
        }
        Ok(())
    }
}

/// One instance's log as it is read: its files, the bytes of a line not
/// yet complete, its pieces not yet joined.
struct Tail {
    follower: Follower,
    buf: Vec<u8>,
    asm: Assembler,
}

impl Tail {
    /// Read the whole log at `log`; returns the lines complete so far.
    fn start(log: &Path) -> Result<(Tail, Vec<Line>)> {
        let mut buf = Vec::new();
        let follower = Follower::start(log, &mut buf)?;
        let mut t = Tail {
            follower,
            buf,
            asm: Assembler::default(),
        };
        let lines = t.lines();
        Ok((t, lines))
    }

    /// The lines completed since the last call.
    fn poll(&mut self) -> Result<Vec<Line>> {
        self.follower.poll(&mut self.buf)?;
        Ok(self.lines())
    }

    /// The complete lines read so far, taken out of the buffer.
    fn lines(&mut self) -> Vec<Line> {
        let Some(end) = self.buf.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.buf.split_off(end + 1);
        let done = std::mem::replace(&mut self.buf, rest);
        done[..end]
            .split(|&b| b == b'\n')
            .filter_map(|l| self.asm.push(l))
            .collect()
    }
}
