use super::*;

const T: i64 = 1_796_507_825_123_456_789;

fn records(out: &[u8]) -> Vec<Record> {
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(parse)
        .collect()
}

fn lines(out: &[u8]) -> Vec<Line> {
    let mut a = Assembler::default();
    let mut v: Vec<Line> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| a.push(l))
        .collect();
    v.extend(a.finish());
    v
}

#[test]
fn a_record_is_written_in_the_cri_format_and_read_back() {
    let mut out = Vec::new();
    write(&mut out, T, Stream::Stderr, false, b"hello world");
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "2026-12-05T21:57:05.123456789Z stderr F hello world\n"
    );
    let r = parse(&out[..out.len() - 1]);
    assert_eq!(
        r,
        Record {
            time: Some(T),
            stream: Stream::Stderr,
            partial: false,
            text: b"hello world".to_vec()
        }
    );
}

#[test]
fn kubelet_lines_parse_too() {
    // containerd writes RFC3339Nano (trailing zeros trimmed) and empty lines.
    let r = parse(b"2026-12-05T21:57:05.5Z stdout P ");
    assert_eq!(r.time, Some(T - T % 1_000_000_000 + 500_000_000));
    assert!(r.partial);
    assert!(r.text.is_empty());
    assert_eq!(parse(b"2026-12-05T21:57:05Z stdout F").text, b"");
}

#[test]
fn an_unstamped_line_reads_as_stdout_without_a_time() {
    for old in [&b"plain old output"[..], b"2026-12-05 not a stamp", b""] {
        let r = parse(old);
        assert_eq!(r.time, None);
        assert_eq!(r.stream, Stream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.text, old);
    }
    // An unknown stream or tag is not the format either.
    assert_eq!(parse(b"2026-12-05T21:57:05Z stdin F x").time, None);
    assert_eq!(parse(b"2026-12-05T21:57:05Z stdout X x").time, None);
}

#[test]
fn an_unstamped_line_takes_the_time_before_it() {
    let mut a = Assembler::default();
    assert_eq!(a.push(b"old").unwrap().time, None);
    a.push(b"2026-12-05T21:57:05.123456789Z stdout F new")
        .unwrap();
    assert_eq!(a.push(b"old again").unwrap().time, Some(T));
}

#[test]
fn whole_lines_are_records_and_the_rest_waits_for_its_newline() {
    let mut s = Splitter::new(Stream::Stdout);
    let mut out = Vec::new();
    s.push(T, b"one\ntwo\nthr", &mut out);
    assert!(s.holds());
    s.push(T + 1, b"ee\n", &mut out);
    assert!(!s.holds());
    let r = records(&out);
    assert_eq!(r.len(), 3);
    assert_eq!(r[2].text, b"three");
    assert_eq!(r[2].time, Some(T + 1));
    assert!(r.iter().all(|r| !r.partial));
}

#[test]
fn text_without_a_newline_is_flushed_as_a_piece_and_joined_on_reading() {
    let mut s = Splitter::new(Stream::Stdout);
    let mut out = Vec::new();
    s.push(T, b"Progress: 10%", &mut out);
    assert!(out.is_empty());
    s.flush(T, &mut out);
    s.push(T + 5, b" 20%\n", &mut out);
    let r = records(&out);
    assert_eq!(r.len(), 2);
    assert!(r[0].partial && !r[1].partial);
    assert_eq!(
        lines(&out),
        vec![Line {
            time: Some(T),
            stream: Stream::Stdout,
            text: b"Progress: 10% 20%".to_vec()
        }]
    );
}

#[test]
fn a_line_longer_than_the_limit_is_cut_into_pieces_and_rejoined() {
    let long: Vec<u8> = (0..(2 * MAX_LINE + 10))
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let mut data = long.clone();
    data.push(b'\n');
    let mut s = Splitter::new(Stream::Stderr);
    let mut out = Vec::new();
    s.push(T, &data, &mut out);
    let r = records(&out);
    assert_eq!(r.len(), 3);
    assert!(r[0].partial && r[1].partial && !r[2].partial);
    assert!(r.iter().all(|r| r.text.len() <= MAX_LINE));
    assert_eq!(lines(&out)[0].text, long);
    // Also when it arrives without its newline, bit by bit.
    let mut s = Splitter::new(Stream::Stderr);
    let mut out = Vec::new();
    for chunk in long.chunks(1000) {
        s.push(T, chunk, &mut out);
    }
    assert_eq!(records(&out).len(), 2, "two full pieces written, rest held");
    s.finish(T, &mut out);
    assert_eq!(lines(&out)[0].text, long);
}

#[test]
fn invalid_utf8_is_kept_as_written() {
    let mut s = Splitter::new(Stream::Stdout);
    let mut out = Vec::new();
    s.push(T, b"caf\xe9 \xff\xfe\n", &mut out);
    assert_eq!(lines(&out)[0].text, b"caf\xe9 \xff\xfe");
}

#[test]
fn pieces_of_the_two_streams_are_joined_separately() {
    let mut out = Vec::new();
    write(&mut out, T, Stream::Stdout, true, b"out-a ");
    write(&mut out, T, Stream::Stderr, false, b"err");
    write(&mut out, T, Stream::Stdout, false, b"out-b");
    let l = lines(&out);
    assert_eq!(l[0].text, b"err");
    assert_eq!(l[1].text, b"out-a out-b");
}

#[test]
fn the_end_of_a_stream_completes_its_last_line() {
    let mut s = Splitter::new(Stream::Stdout);
    let mut out = Vec::new();
    s.push(T, b"no newline at the end", &mut out);
    s.finish(T, &mut out);
    let r = records(&out);
    assert_eq!(r.len(), 1);
    assert!(!r[0].partial);
}
