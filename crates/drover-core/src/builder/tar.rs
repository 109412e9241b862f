//! Deterministic tar headers (ustar, with PAX extended headers only when a
//! field does not fit). Written by hand so that every byte is decided here:
//! no user or group names, no device numbers, no atime/ctime, one mtime.

use std::fmt::Write as _;

pub const BLOCK: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Hardlink,
    Symlink,
    Dir,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Dir => b'5',
        }
    }
}

/// What a header says about one entry.
pub struct Header<'a> {
    /// Path inside the layer, relative, `/`-separated, no trailing slash.
    pub path: &'a str,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub link: Option<&'a str>,
    pub xattrs: &'a [(String, Vec<u8>)],
}

/// Append the header block(s) for `h` to `out`.
pub fn write_header(out: &mut Vec<u8>, h: &Header<'_>) {
    let mut name = h.path.to_string();
    if h.kind == Kind::Dir {
        name.push('/');
    }
    let link = h.link.unwrap_or("");
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if name.len() > 100 {
        pax.push(("path".into(), name.clone().into_bytes()));
    }
    if link.len() > 100 {
        pax.push(("linkpath".into(), link.as_bytes().to_vec()));
    }
    if h.size > 0o777_7777_7777 {
        pax.push(("size".into(), h.size.to_string().into_bytes()));
    }
    for (id, v) in [("uid", h.uid), ("gid", h.gid)] {
        if v > 0o777_7777 {
            pax.push((id.into(), v.to_string().into_bytes()));
        }
    }
    for (k, v) in h.xattrs {
        pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
    }
    if !pax.is_empty() {
        let mut body = Vec::new();
        for (k, v) in &pax {
            body.extend_from_slice(&pax_record(k, v));
        }
        let pax_name = format!("PaxHeader/{}", truncate(&name, 90));
        push_block(
            out,
            &pax_name,
            b'x',
            0o644,
            0,
            0,
            body.len() as u64,
            h.mtime,
            "",
        );
        out.extend_from_slice(&body);
        pad(out, body.len());
    }
    push_block(
        out,
        truncate(&name, 100),
        h.kind.flag(),
        h.mode,
        h.uid.min(0o777_7777),
        h.gid.min(0o777_7777),
        if h.kind == Kind::File {
            h.size.min(0o777_7777_7777)
        } else {
            0
        },
        h.mtime,
        truncate(link, 100),
    );
}

/// Zero bytes that round `len` up to a whole block.
pub fn padding(len: u64) -> usize {
    (BLOCK - (len % BLOCK as u64) as usize) % BLOCK
}

fn pad(out: &mut Vec<u8>, len: usize) {
    out.resize(out.len() + padding(len as u64), 0);
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A PAX record: "<len> <key>=<value>\n", where len counts itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3; // space, '=', newline
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

#[allow(clippy::too_many_arguments)]
fn push_block(
    out: &mut Vec<u8>,
    name: &str,
    flag: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: u64,
    link: &str,
) {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut b[100..108], u64::from(mode & 0o7777));
    octal(&mut b[108..116], u64::from(uid));
    octal(&mut b[116..124], u64::from(gid));
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime.min(0o777_7777_7777));
    b[156] = flag;
    b[157..157 + link.len()].copy_from_slice(link.as_bytes());
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], 0);
    octal(&mut b[337..345], 0);
    // The checksum is computed with its own field read as spaces.
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let mut s = String::new();
    let _ = write!(s, "{sum:06o}");
    b[148..154].copy_from_slice(s.as_bytes());
    b[154] = 0;
    b[155] = b' ';
    out.extend_from_slice(&b);
}

/// Zero-padded octal filling the field, NUL-terminated.
fn octal(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: Kind, size: u64, link: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(
            &mut out,
            &Header {
                path,
                kind,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size,
                mtime: 0,
                link,
                xattrs: &[],
            },
        );
        out
    }

    #[test]
    fn headers_read_back_with_the_tar_crate() {
        let long = "d/".repeat(70) + "file.txt";
        let mut stream = Vec::new();
        for (path, kind, content, link) in [
            ("etc", Kind::Dir, &b""[..], None),
            ("etc/motd", Kind::File, &b"hello\n"[..], None),
            (long.as_str(), Kind::File, &b"x"[..], None),
            ("bin/sh", Kind::Symlink, &b""[..], Some("busybox")),
            ("etc/motd2", Kind::Hardlink, &b""[..], Some("etc/motd")),
        ] {
            stream.extend(header(path, kind, content.len() as u64, link));
            stream.extend_from_slice(content);
            stream.resize(stream.len() + padding(content.len() as u64), 0);
        }
        stream.extend_from_slice(&[0u8; 1024]);
        let mut ar = tar::Archive::new(&stream[..]);
        let got: Vec<(String, u8, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type().as_byte(),
                    e.size(),
                )
            })
            .collect();
        assert_eq!(got[0], ("etc/".into(), b'5', 0));
        assert_eq!(got[1], ("etc/motd".into(), b'0', 6));
        assert_eq!(got[2], (long.clone(), b'0', 1));
        assert_eq!(got[3].0, "bin/sh");
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let rec = pax_record("path", &[b'a'; 95]);
        let text = String::from_utf8(rec.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rec.len());
    }

    #[test]
    fn same_input_gives_same_bytes() {
        assert_eq!(
            header("a/b", Kind::File, 3, None),
            header("a/b", Kind::File, 3, None)
        );
        assert_eq!(header("a", Kind::File, 0, None).len(), BLOCK);
    }
}
