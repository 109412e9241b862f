use super::*;

const MIB: u64 = 1 << 20;

/// A GNU header of `kind` declaring `size` bytes.
fn header(name: &str, kind: tar::EntryType, size: u64) -> [u8; 512] {
    let mut h = Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    *h.as_bytes()
}

/// `h` with its size written in GNU base-256, as writers do past 8 GiB.
fn base256(mut h: [u8; 512], size: u64) -> [u8; 512] {
    h[124..128].copy_from_slice(&[0x80, 0, 0, 0]);
    h[128..136].copy_from_slice(&size.to_be_bytes());
    let hdr = Header::from_byte_slice(&h);
    let mut hdr = hdr.clone();
    hdr.set_cksum();
    *hdr.as_bytes()
}

fn push(out: &mut Vec<u8>, h: [u8; 512], body: &[u8]) {
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn pax(records: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rec = format!(" {k}={v}\n");
        let len = (1..)
            .find(|&l: &usize| l == rec.len() + l.to_string().len())
            .unwrap();
        out.extend(format!("{len}{rec}").bytes());
    }
    out
}

/// Feeds `stream` in pieces of `chunk` bytes.
fn run(stream: &[u8], cap: u64, chunk: usize) -> (Result<(), Fault>, Vec<u64>) {
    let mut h = Headers::new(cap);
    for piece in stream.chunks(chunk) {
        if let Err(f) = h.feed(piece) {
            return (Err(f), h.entries);
        }
    }
    (Ok(()), h.entries)
}

/// A layer as the tar crate's builder writes it: files, a directory, a
/// symlink, a name and a link target long enough for GNU `L`/`K` records.
fn normal() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, link: Option<&str>, body: &[u8]| {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(body.len() as u64);
        h.set_mode(0o755);
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, body).unwrap(),
        }
    };
    add("etc/", tar::EntryType::Directory, None, b"");
    add("etc/motd", tar::EntryType::Regular, None, b"hello\n");
    add(&"d/".repeat(200), tar::EntryType::Directory, None, b"");
    add(
        &("d/".repeat(200) + "f"),
        tar::EntryType::Regular,
        None,
        &[7; 1500],
    );
    add(
        "bin/sh",
        tar::EntryType::Symlink,
        Some(&"t/".repeat(100)),
        b"",
    );
    b.into_inner().unwrap()
}

#[test]
fn a_normal_layer_passes_and_is_framed_as_the_crate_frames_it() {
    let stream = normal();
    agrees_with_the_tar_crate(&stream);
    for chunk in [1, 7, 512, 4096, stream.len()] {
        let (res, entries) = run(&stream, MIB, chunk);
        assert_eq!(res, Ok(()), "in pieces of {chunk}");
        assert_eq!(entries.len(), 5, "{entries:?}");
    }
}

#[test]
fn long_names_under_the_cap_pass() {
    let mut stream = Vec::new();
    let name = "n".repeat(600 << 10);
    push(
        &mut stream,
        header(
            "././@LongLink",
            tar::EntryType::GNULongName,
            name.len() as u64 + 1,
        ),
        format!("{name}\0").as_bytes(),
    );
    push(&mut stream, header("x", tar::EntryType::Regular, 3), b"abc");
    stream.extend([0; 1024]);
    agrees_with_the_tar_crate(&stream);
    let (res, entries) = run(&stream, MIB, 8192);
    assert_eq!(res, Ok(()));
    assert_eq!(
        entries,
        vec![(name.len() as u64 + 1).next_multiple_of(512) + 512]
    );
}

#[test]
fn a_long_name_declaring_2_mib_is_refused_from_its_header_alone() {
    for kind in [
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
        tar::EntryType::XHeader,
        tar::EntryType::XGlobalHeader,
    ] {
        let mut stream = Vec::new();
        push(&mut stream, header("a", tar::EntryType::Regular, 3), b"abc");
        // Only the header: nothing of its body is needed to refuse it.
        stream.extend(header("././@LongLink", kind, 2 * MIB));
        let (res, _) = run(&stream, MIB, 100);
        match res {
            Err(Fault::TooLarge { at, size, cap, .. }) => {
                assert_eq!((at, size, cap), (1024, 2 * MIB, MIB), "{kind:?}")
            }
            other => panic!("{kind:?}: {other:?}"),
        }
        // And it stays refused.
        let mut h = Headers::new(MIB);
        assert!(h.feed(&stream).is_err());
        assert!(h.feed(&[0; 512]).is_err());
    }
}

#[test]
fn base_256_sizes_are_read_as_the_crate_reads_them() {
    // An L header declaring 16 GiB in base-256: refused.
    let h = base256(
        header("././@LongLink", tar::EntryType::GNULongName, 0),
        16 << 30,
    );
    let (res, _) = run(&h, MIB, 512);
    assert!(
        matches!(res, Err(Fault::TooLarge { size, .. }) if size == 16 << 30),
        "{res:?}"
    );
    // A file whose 700 bytes are declared in base-256: the next header is
    // found after them (one hiding inside would not be).
    let mut stream = Vec::new();
    push(
        &mut stream,
        base256(header("f", tar::EntryType::Regular, 0), 700),
        &[b'a'; 700],
    );
    push(&mut stream, header("g", tar::EntryType::Regular, 1), b"b");
    stream.extend([0; 1024]);
    agrees_with_the_tar_crate(&stream);
    assert_eq!(run(&stream, MIB, 333), (Ok(()), vec![0, 1536]));
}

#[test]
fn a_pax_size_record_moves_the_next_header_as_it_does_for_the_crate() {
    // The file's header says 0 bytes, its PAX header 2048: the 2048 bytes
    // hold what looks like a huge L header, which is content, not a header.
    let mut body = header("././@LongLink", tar::EntryType::GNULongName, 64 * MIB).to_vec();
    body.resize(2048, 0);
    let records = pax(&[("path", "f"), ("size", "2048")]);
    let mut stream = Vec::new();
    push(
        &mut stream,
        header("PaxHeader", tar::EntryType::XHeader, records.len() as u64),
        &records,
    );
    push(&mut stream, header("f", tar::EntryType::Regular, 0), &body);
    push(&mut stream, header("g", tar::EntryType::Regular, 1), b"b");
    stream.extend([0; 1024]);
    agrees_with_the_tar_crate(&stream);
    assert_eq!(
        run(&stream, MIB, 100),
        (Ok(()), vec![1024, 1024 + 512 + 2048])
    );

    // The other way round: the header says 2048, the PAX record 0, and
    // right after the header comes a huge L header. It is refused.
    let records = pax(&[("size", "0")]);
    let mut stream = Vec::new();
    push(
        &mut stream,
        header("PaxHeader", tar::EntryType::XHeader, records.len() as u64),
        &records,
    );
    stream.extend(header("f", tar::EntryType::Regular, 2048));
    push(
        &mut stream,
        header("././@LongLink", tar::EntryType::GNULongName, 64 * MIB),
        &[],
    );
    let (res, _) = run(&stream, MIB, 512);
    assert!(
        matches!(res, Err(Fault::TooLarge { at: 1536, .. })),
        "{res:?}"
    );
}

#[test]
fn a_pax_header_past_the_cap_is_refused() {
    let records = pax(&[("path", &"p".repeat(4096))]);
    let mut stream = Vec::new();
    push(
        &mut stream,
        header("PaxHeader", tar::EntryType::XHeader, records.len() as u64),
        &records,
    );
    push(&mut stream, header("f", tar::EntryType::Regular, 1), b"x");
    stream.extend([0; 1024]);
    agrees_with_the_tar_crate(&stream);
    assert_eq!(run(&stream, 8192, 4096).0, Ok(()));
    assert!(matches!(
        run(&stream, 4096, 4096).0,
        Err(Fault::TooLarge {
            what: "PAX (x)",
            at: 0,
            ..
        })
    ));
}

#[test]
fn gnu_sparse_extension_blocks_are_passed_over() {
    // A sparse file of one 512-byte chunk, its map in an extension block.
    let mut h = Header::new_gnu();
    h.set_path("s").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(512);
    h.set_mode(0o644);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_is_extended(true);
    gnu.set_real_size(1024);
    h.set_cksum();
    let mut ext = GnuExtSparseHeader::new();
    ext.sparse[0].set_offset(512);
    ext.sparse[0].set_length(512);
    let mut stream = h.as_bytes().to_vec();
    stream.extend_from_slice(ext.as_bytes());
    stream.extend([b'd'; 512]);
    push(&mut stream, header("g", tar::EntryType::Regular, 1), b"b");
    stream.extend([0; 1024]);
    agrees_with_the_tar_crate(&stream);
    assert_eq!(run(&stream, MIB, 200), (Ok(()), vec![0, 1536]));
}

#[test]
fn a_size_the_crate_cannot_read_is_corrupt() {
    let mut h = header("f", tar::EntryType::Regular, 0);
    h[124..136].copy_from_slice(b"99999999999\0");
    let (res, _) = run(&h, MIB, 512);
    assert!(matches!(res, Err(Fault::Corrupt(_))), "{res:?}");
    agrees_with_the_tar_crate(&h);
}
