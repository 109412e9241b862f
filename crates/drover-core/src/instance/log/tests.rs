use super::*;

fn read_all(log: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    copy_all(log, &mut out).unwrap();
    out
}

/// The texts of the log's records, pieces joined.
fn texts(log: &Path) -> Vec<(Stream, String)> {
    let mut a = line::Assembler::default();
    read_all(log)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| a.push(l))
        .map(|l| (l.stream, String::from_utf8(l.text).unwrap()))
        .collect()
}

#[test]
fn rotation_keeps_the_newest_output_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut r = Rotating::new(log.clone(), 100, 2);
    let lines: Vec<String> = (0..200).map(|i| format!("line {i:04}\n")).collect();
    for l in &lines {
        r.write(l.as_bytes()).unwrap();
    }
    let mut total = 0;
    for p in rotated_files(&log).iter().chain([&log]) {
        let len = fs::metadata(p).unwrap().len();
        assert!(len <= 100, "{} holds {len} bytes", p.display());
        total += len;
    }
    assert!(total <= 300);
    assert_eq!(rotated_files(&log).len(), 2);
    // Whole lines, in order, ending with the last one.
    let text = String::from_utf8(read_all(&log)).unwrap();
    assert!(text.ends_with("line 0199\n"), "{text}");
    let tail: Vec<&str> = text.lines().collect();
    let first = lines.len() - tail.len();
    assert_eq!(
        tail,
        lines[first..]
            .iter()
            .map(|l| l.trim_end())
            .collect::<Vec<_>>()
    );
}

/// `drover logs` of an instance printing as fast as it can: each read is
/// the files of one moment, so no line comes twice, none is missing or out
/// of order, and no more comes than the log holds.
#[test]
fn reading_while_the_log_rotates_repeats_and_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut r = Rotating::new(log, 4096, 2);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                r.write(format!("line {i:012}\n").as_bytes()).unwrap();
                i += 1;
            }
            i
        })
    };
    // Reads count once the writer is rotating.
    while rotated_files(&log).len() < 2 {
        std::thread::yield_now();
    }
    let mut reads = 0;
    while reads < 300 {
        let mut bytes = Vec::new();
        Follower::start(&log, &mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.len() <= 3 * 4096, "{} bytes read", text.len());
        let numbers: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] + 1 == w[1]),
            "a line repeated, missing or out of order"
        );
        assert!(!numbers.is_empty());
        reads += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 1000);
}

#[test]
fn a_record_longer_than_a_file_goes_whole_into_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut r = Rotating::new(log.clone(), 100, 3);
    r.write(b"short\n").unwrap();
    let long = format!("{}\n", "x".repeat(250));
    r.write(long.as_bytes()).unwrap();
    r.write(b"after\n").unwrap();
    assert_eq!(
        String::from_utf8(read_all(&log)).unwrap(),
        format!("short\n{long}after\n")
    );
    assert_eq!(fs::read_to_string(rotated(&log, 1)).unwrap(), long);
}

#[test]
fn a_pump_stamps_both_streams_and_follow_reads_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (r_out, w_out) = pipe().unwrap();
    let (r_err, w_err) = pipe().unwrap();
    let pump = Pump::start(r_out, r_err, log.clone(), 2000, 1000);
    let (mut w_out, mut w_err) = (File::from(w_out), File::from(w_err));
    let mut follower = Follower::start(&log, &mut Vec::new()).unwrap();
    let mut seen = Vec::new();
    let mut want = Vec::new();
    for i in 0..300 {
        if i % 3 == 0 {
            w_err.write_all(format!("e{i}\n").as_bytes()).unwrap();
            want.push((Stream::Stderr, format!("e{i}")));
        } else {
            w_out.write_all(format!("o{i}\n").as_bytes()).unwrap();
            want.push((Stream::Stdout, format!("o{i}")));
        }
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
            follower.poll(&mut seen).unwrap();
        }
    }
    drop((w_out, w_err));
    assert!(pump.finish(Duration::from_secs(5)));
    follower.poll(&mut seen).unwrap();
    assert_eq!(seen, read_all(&log));
    let mut got = texts(&log);
    // Each stream in its own order; between streams, as read.
    for s in [Stream::Stdout, Stream::Stderr] {
        let a: Vec<_> = got.iter().filter(|l| l.0 == s).collect();
        let b: Vec<_> = want.iter().filter(|l| l.0 == s).collect();
        assert_eq!(a, b);
    }
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(!rotated_files(&log).is_empty(), "it rotated");
}

#[test]
fn output_without_a_newline_is_written_after_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (r_out, w_out) = pipe().unwrap();
    let (r_err, w_err) = pipe().unwrap();
    let pump = Pump::start(r_out, r_err, log.clone(), 1 << 20, 1);
    let mut w = File::from(w_out);
    w.write_all(b"Password: ").unwrap();
    std::thread::sleep(line::FLUSH_AFTER + Duration::from_millis(500));
    let text = String::from_utf8(read_all(&log)).unwrap();
    assert!(text.ends_with(" stdout P Password: \n"), "{text:?}");
    w.write_all(b"ok\n").unwrap();
    drop((w, w_err));
    assert!(pump.finish(Duration::from_secs(5)));
    assert_eq!(texts(&log), [(Stream::Stdout, "Password: ok".to_string())]);
}

#[test]
fn a_stalled_log_holds_the_container_back_only_for_a_while() {
    let (r, w) = pipe().unwrap();
    let queue: Arc<Shared> = Arc::new((
        Mutex::new(Queue {
            readers: 1,
            ..Default::default()
        }),
        Condvar::new(),
        Condvar::new(),
    ));
    let q = queue.clone();
    let reader = std::thread::spawn(move || read_pipe(File::from(r), Stream::Stdout, &q));
    // Nobody writes the queue out: past QUEUE_BYTES the reader waits
    // QUEUE_WAIT, then drops (and counts) instead of blocking the writer.
    let started = std::time::Instant::now();
    let mut w = File::from(w);
    let chunk = [b"x".repeat(1023), b"\n".to_vec()].concat().repeat(64);
    let chunks = QUEUE_BYTES / chunk.len() + 8;
    for _ in 0..chunks {
        w.write_all(&chunk).unwrap();
    }
    drop(w);
    reader.join().unwrap();
    assert!(started.elapsed() >= QUEUE_WAIT);
    assert!(
        started.elapsed() < 2 * QUEUE_WAIT,
        "one wait, not one per read"
    );
    let q = queue.0.lock().unwrap();
    assert!(q.bytes <= QUEUE_BYTES);
    let dropped: u64 = q
        .items
        .iter()
        .map(|i| match i {
            Item::Dropped(n) => *n,
            Item::Data(_) => 0,
        })
        .sum();
    assert!(dropped > 0);
    // Every byte read is either queued (as records) or counted as dropped.
    let records: usize = q
        .items
        .iter()
        .map(|i| match i {
            Item::Data(d) => d.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(),
            Item::Dropped(_) => 0,
        })
        .sum();
    // (a line held across a dropped read may go either way).
    let total = (chunks * chunk.len()) as u64;
    assert!((dropped + records as u64 * 1024).abs_diff(total) <= 1024);
}

#[test]
fn a_failed_write_is_reported_in_the_log_not_lost_silently() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let queue: Shared = Default::default();
    {
        let mut q = queue.0.lock().unwrap();
        let mut one = Vec::new();
        line::write(&mut one, 0, Stream::Stdout, false, b"one");
        let mut two = Vec::new();
        line::write(&mut two, 0, Stream::Stdout, false, b"two");
        q.items.push_back(Item::Data(one));
        q.items.push_back(Item::Dropped(1234));
        q.items.push_back(Item::Data(two));
    }
    write_log(&queue, Rotating::new(log.clone(), 1 << 20, 1));
    assert_eq!(
        texts(&log),
        [
            (Stream::Stdout, "one".to_string()),
            (
                Stream::Stderr,
                "[drover: 1234 bytes of output dropped: the log could not keep up]".to_string()
            ),
            (Stream::Stdout, "two".to_string()),
        ]
    );
}
