//! Handing `serve`'s listening sockets to its successor, so a restart or an
//! upgrade refuses no connection.
//!
//! The running serve listens on a Unix socket in the store,
//! `<store>/serve.sock` (mode 0600, and the peer must be root or serve's
//! own user). A successor (`drover serve --takeover`) connects and asks:
//!
//! ```text
//!  successor                          running serve
//!  takeover <pid>            ───▶
//!                            ◀───     socket web/8080   + the fd (SCM_RIGHTS)
//!                            ◀───     socket api/9090   + the fd
//!                            ◀───     end
//!  (accepts on them, routes as the database says)
//!  go                        ───▶
//!                            ◀───     ok   (stops accepting, finishes what is
//!                                           in flight, releases serve's lock)
//!  (takes serve's lock, carries on)
//! ```
//!
//! The kernel's sockets stay open the whole time, held by one process or
//! both: a connection arriving meanwhile waits in the backlog and is
//! accepted by whichever process is in `accept` — never refused. A
//! successor that goes away before `go` changes nothing: the running serve
//! carries on as if it had never asked.
//!
//! A socket's name, `<service>/<port>`, is also its `FDNAME` in systemd's
//! fd store ([`super::systemd`]); a service name never holds a `/`, and
//! systemd refuses `:` in a name.
#![allow(unsafe_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg, sockopt::PeerCredentials,
};

/// The socket's file name in the store.
pub const SOCKET: &str = "serve.sock";

/// How long either side waits for the other's next word.
const PATIENCE: Duration = Duration::from_secs(30);

/// The name a service's listening socket goes by: `web/8080`.
pub fn fd_name(service: &str, port: u16) -> String {
    format!("{service}/{port}")
}

/// The service and port of a name [`fd_name`] made.
pub fn parse_fd_name(name: &str) -> Option<(&str, u16)> {
    let (service, port) = name.rsplit_once('/')?;
    Some((service, port.parse().ok()?))
}

/// The running serve's end: where successors ask.
pub struct Server {
    listener: UnixListener,
    file: SocketFile,
}

/// The socket file, removed when this is dropped unless a successor has
/// bound its own at the same path meanwhile (its inode tells).
#[derive(Clone)]
pub struct SocketFile {
    path: PathBuf,
    id: FileId,
}

/// What tells one socket file from the next at the same path: the inode
/// number alone does not (a successor's socket, made just after the old
/// one was unlinked, often gets the same number), its change time too.
type FileId = (u64, i64, i64);

fn file_id(m: &std::fs::Metadata) -> FileId {
    (m.ino(), m.ctime(), m.ctime_nsec())
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| file_id(&m) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Server {
    /// Listen at `<store>/serve.sock`, replacing a file left there.
    pub fn bind(store: &Path) -> io::Result<Server> {
        let path = store.join(SOCKET);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let id = file_id(&std::fs::symlink_metadata(&path)?);
        Ok(Server {
            listener,
            file: SocketFile { path, id },
        })
    }

    /// The socket file: keep it where it outlives the thread that accepts
    /// (a process exits without unwinding its threads).
    pub fn file(&self) -> SocketFile {
        self.file.clone()
    }

    /// Wait for the next successor to ask. A peer that is neither root nor
    /// this process's user, or that says something else, is an error (the
    /// caller goes on listening).
    pub fn accept(&self) -> io::Result<Successor> {
        let (stream, _) = self.listener.accept()?;
        let cred = nix::sys::socket::getsockopt(&stream, PeerCredentials)?;
        let me = nix::unistd::geteuid().as_raw();
        if cred.uid() != 0 && cred.uid() != me {
            return Err(io::Error::other(format!(
                "refused a takeover by uid {} (pid {})",
                cred.uid(),
                cred.pid()
            )));
        }
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader)?;
        let pid = line
            .strip_prefix("takeover ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not a takeover request: {line:?}")))?;
        Ok(Successor { reader, pid })
    }
}

/// A successor that asked for the sockets.
pub struct Successor {
    reader: BufReader<UnixStream>,
    /// Its process id (under systemd, the service's next main process).
    pub pid: u32,
}

impl Successor {
    /// Send the listening sockets, each with its name.
    pub fn send(&mut self, sockets: &[(String, BorrowedFd<'_>)]) -> io::Result<()> {
        let fd = self.reader.get_ref().as_raw_fd();
        for (name, sock) in sockets {
            let line = format!("socket {name}\n");
            let fds = [sock.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(
                fd,
                &[io::IoSlice::new(line.as_bytes())],
                &cmsg,
                MsgFlags::empty(),
                None,
            )?;
        }
        self.reader.get_mut().write_all(b"end\n")
    }

    /// Wait until the successor accepts on the sockets and says `go`; then
    /// answer `ok`: from here the caller stops. An error (it went away, or
    /// took too long) means it will not take over.
    pub fn wait_go(mut self) -> io::Result<()> {
        let line = read_line(&mut self.reader)?;
        if line != "go" {
            return Err(io::Error::other(format!("expected go, got {line:?}")));
        }
        self.reader.get_mut().write_all(b"ok\n")
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other serve hung up",
        ));
    }
    Ok(line.trim_end().to_string())
}

/// The successor's end: connected to the running serve.
pub struct Predecessor {
    stream: UnixStream,
}

/// Connect to the serve running for `store`; `None` when none listens.
pub fn connect(store: &Path) -> io::Result<Option<Predecessor>> {
    match UnixStream::connect(store.join(SOCKET)) {
        Ok(stream) => {
            stream.set_read_timeout(Some(PATIENCE))?;
            Ok(Some(Predecessor { stream }))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Predecessor {
    /// Ask for the listening sockets: their names and descriptors (close-
    /// on-exec: the instances' monitors inherit none).
    pub fn receive(&mut self) -> io::Result<Vec<(String, OwnedFd)>> {
        writeln!(self.stream, "takeover {}", std::process::id())?;
        let fd = self.stream.as_raw_fd();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
            let mut iov = [io::IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(got) = c {
                    // SAFETY: the kernel just installed these descriptors in
                    // this process for us; nothing else refers to them.
                    fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
            let n = msg.bytes;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the running serve hung up before handing over its sockets",
                ));
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if line == "end" {
                    if names.len() != fds.len() {
                        return Err(io::Error::other(format!(
                            "the running serve named {} sockets but sent {}",
                            names.len(),
                            fds.len()
                        )));
                    }
                    out.extend(names.into_iter().zip(fds));
                    return Ok(out);
                }
                match line.strip_prefix("socket ") {
                    Some(name) => names.push(name.to_string()),
                    None => return Err(io::Error::other(format!("unexpected {line:?}"))),
                }
            }
        }
    }

    /// Say `go` (the sockets are being accepted on here) and wait for the
    /// running serve's `ok`: it stops now.
    pub fn go(mut self) -> io::Result<()> {
        self.stream.write_all(b"go\n")?;
        let mut reader = BufReader::new(self.stream);
        match read_line(&mut reader)?.as_str() {
            "ok" => Ok(()),
            other => Err(io::Error::other(format!("expected ok, got {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(fd_name("web.v2", 8080), "web.v2/8080");
        assert_eq!(parse_fd_name("web.v2/8080"), Some(("web.v2", 8080)));
        assert_eq!(parse_fd_name("stored"), None);
        assert_eq!(parse_fd_name("web/http"), None);
    }

    /// A successor's socket file often gets the inode number of the one it
    /// replaced; the old serve's file must still not take it away.
    #[test]
    fn the_old_socket_file_never_removes_the_successors() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..50 {
            let old = Server::bind(dir.path()).unwrap();
            let file = old.file();
            drop(old);
            let new = Server::bind(dir.path()).unwrap();
            drop(file);
            assert!(
                dir.path().join(SOCKET).exists(),
                "the old serve removed its successor's socket"
            );
            drop(new);
        }
    }

    /// The sockets arrive, still listening, with their names; the running
    /// serve hears `go`; its socket file goes with it, not the successor's.
    #[test]
    fn sockets_cross_to_the_successor() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::bind(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SOCKET)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr_a = a.local_addr().unwrap();
        let old = std::thread::spawn(move || {
            let mut s = server.accept().unwrap();
            assert_eq!(s.pid, std::process::id());
            s.send(&[("web/1".into(), a.as_fd()), ("api/2".into(), b.as_fd())])
                .unwrap();
            s.wait_go().unwrap();
            server
        });
        let mut p = connect(dir.path()).unwrap().expect("a serve listens");
        let got = p.receive().unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web/1", "api/2"]);
        let l = std::net::TcpListener::from(got.into_iter().next().unwrap().1);
        assert_eq!(l.local_addr().unwrap(), addr_a);
        let _c = std::net::TcpStream::connect(addr_a).unwrap();
        l.accept().unwrap();
        p.go().unwrap();
        let server = old.join().unwrap();
        drop(server);
        assert!(!dir.path().join(SOCKET).exists());
        assert!(connect(dir.path()).unwrap().is_none());
    }
}
