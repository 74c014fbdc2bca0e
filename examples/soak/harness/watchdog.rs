//! The watchdog: declares a hang when a thread has completed no operation
//! for `hang_secs`, and reports every thread's state and wait channel and,
//! with gdb, a summary of where the threads are parked and their backtraces.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::{Role, Shared};

/// Watches the roles until the run is finished; on a hang, writes the
/// report (stderr, the dump file) and, if the main thread does not pick it
/// up within 10 s, exits the process with code 2.
pub(super) fn watch(shared: &Shared) {
    let hang_ms = shared.config.hang_secs * 1000;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = shared.elapsed_ms();
        let roles: Vec<Arc<Role>> = shared.roles.lock().unwrap().clone();
        let stuck: Vec<String> = roles
            .iter()
            .filter(|role| role.active.load(Ordering::Relaxed))
            .filter(|role| now.saturating_sub(role.last_ms.load(Ordering::Relaxed)) >= hang_ms)
            .map(|role| {
                format!(
                    "{} (last op {:.1} s ago, {} ops)",
                    role.name,
                    (now - role.last_ms.load(Ordering::Relaxed)) as f64 / 1000.0,
                    role.ops.load(Ordering::Relaxed)
                )
            })
            .collect();
        if !stuck.is_empty() {
            let report = hang_report(shared, now, &stuck);
            // Straight to stderr: not captured by the test harness, in case
            // the process has to end here.
            let _ = std::io::stderr().lock().write_all(report.as_bytes());
            if let Some(path) = &shared.config.dump {
                let _ = std::fs::write(path, &report);
            }
            *shared.hang_report.lock().unwrap() = Some(report);
            shared.hung.store(true, Ordering::SeqCst);
            // The main thread picks the hang up within a moment, unless it
            // is the one stuck (in the checks or the close): then end here.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if shared.hang_seen.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::io::stderr()
                .lock()
                .write_all(b"SOAK HANG: the main thread is stuck too; exiting with code 2\n");
            std::process::exit(2);
        }
        if shared.finished.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// The hang report: who is stuck, the progress so far, the threads from
/// `/proc` and, with gdb, their backtraces.
fn hang_report(shared: &Shared, now_ms: u64, stuck: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SOAK HANG ({}): after {:.1} s, no operation completed for {} s by: {}",
        shared.config.label,
        now_ms as f64 / 1000.0,
        shared.config.hang_secs,
        stuck.join(", ")
    );
    let _ = writeln!(
        out,
        "progress before the hang: writes {} applied {} acked {} purged {} reads {} flushes {}",
        shared.writes.load(Ordering::Relaxed),
        shared.applied.load(Ordering::Relaxed),
        shared.acked.load(Ordering::Relaxed),
        shared.purged.load(Ordering::Relaxed),
        shared.reads.load(Ordering::Relaxed),
        shared.flushes.load(Ordering::Relaxed)
    );
    let pid = std::process::id();
    let _ = writeln!(
        out,
        "\nthreads of pid {pid} (/proc: name, state, wait channel):"
    );
    out.push_str(&proc_threads(pid));
    if shared.config.gdb {
        match gdb_backtraces(pid) {
            Some(backtraces) => {
                let _ = writeln!(out, "\nwhere the threads are parked (from gdb):");
                out.push_str(&summarize_backtraces(&backtraces));
                let _ = writeln!(out, "\ngdb -p {pid} -batch -ex \"thread apply all bt\":");
                out.push_str(&backtraces);
            }
            None => {
                let _ = writeln!(out, "\n(gdb not available: no backtraces)");
            }
        }
    }
    out
}

/// One line per thread: tid, name, state, wait channel.
fn proc_threads(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "  (no /proc)\n".to_owned();
    };
    let mut tids: Vec<u64> = tasks
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let mut by_place: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for tid in tids {
        let base = format!("/proc/{pid}/task/{tid}");
        let read = |file: &str| {
            std::fs::read_to_string(format!("{base}/{file}"))
                .map(|text| text.trim().to_owned())
                .unwrap_or_default()
        };
        let comm = read("comm");
        let stat = read("stat");
        // The state follows the parenthesised command name.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        let wchan = read("wchan");
        let _ = writeln!(out, "  {tid:>7} {comm:<18} {state} {wchan}");
        by_place
            .entry(format!("{state} {wchan}"))
            .or_default()
            .push(comm);
    }
    let _ = writeln!(out, "  by state and wait channel:");
    for (place, names) in by_place {
        let _ = writeln!(out, "    {place}: {} ({})", names.len(), names.join(", "));
    }
    out
}

/// `gdb -p <pid> -batch -ex "thread apply all bt"`, or `None` without gdb.
fn gdb_backtraces(pid: u32) -> Option<String> {
    let child = std::process::Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let child_id = child.id();
    // gdb should take seconds; do not let a stuck gdb stall the run.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    match done_rx.recv_timeout(Duration::from_secs(180)) {
        Ok(Ok(output)) => Some(String::from_utf8_lossy(&output.stdout).into_owned()),
        Ok(Err(_)) => None,
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &child_id.to_string()])
                .status();
            Some("(gdb did not finish within 180 s)\n".to_owned())
        }
    }
}

/// For each thread, the frames of sled, idemflow and this harness (and the
/// lock or condition variable it waits on), grouped: who is parked where.
pub fn summarize_backtraces(text: &str) -> String {
    let mut threads: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Thread ") {
            let name = rest
                .rsplit_once('"')
                .and_then(|(head, _)| head.rsplit_once('"'))
                .map_or_else(|| rest.to_owned(), |(_, name)| name.to_owned());
            threads.push((name, Vec::new()));
        } else if line.starts_with('#') {
            if let Some((_, frames)) = threads.last_mut() {
                if let Some(frame) = frame_name(line) {
                    frames.push(frame);
                }
            }
        }
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, frames) in threads {
        // What it waits on: a lock, a condition variable, a one-shot, a sleep.
        let parked = frames
            .iter()
            .find(|frame| {
                frame.contains("lock_slow")
                    || frame.contains("Condvar::wait")
                    || frame.contains("OneShot")
                    || frame.ends_with("::wait")
                    || frame.contains("sleep")
                    || frame.contains("recv")
            })
            .or_else(|| frames.first())
            .cloned();
        let ours: Vec<String> = frames
            .iter()
            .filter(|frame| {
                frame.starts_with("sled::")
                    || frame.starts_with("<sled::")
                    || frame.contains("idemflow::")
                    || frame.starts_with("soak::")
            })
            .take(6)
            .cloned()
            .collect();
        let mut key = String::new();
        if let Some(parked) = parked {
            let _ = write!(key, "[{parked}] ");
        }
        key.push_str(&ours.join(" <- "));
        groups.entry(key).or_default().push(name);
    }
    let mut out = String::new();
    for (place, names) in groups {
        let _ = writeln!(
            out,
            "  {} thread(s) {}:\n      {place}",
            names.len(),
            names.join(", ")
        );
    }
    out
}

/// The function of a gdb frame line, without arguments, generic parameters or hash.
fn frame_name(line: &str) -> Option<String> {
    // "#3  0x... in sled::pagecache::iobuf::IoBufs::sa_stabilize (...) at src/..."
    // "#0  sled::pagecache::segment::SegmentAccountant::bump_tip (...) at ..."
    let after_number = line.split_once(' ')?.1.trim_start();
    let text = match after_number.split_once(" in ") {
        Some((address, rest)) if address.starts_with("0x") => rest,
        _ => after_number,
    };
    let name = text.split(" (").next()?.trim();
    let mut clean = String::new();
    let mut depth = 0;
    for c in name.chars() {
        match c {
            '<' if !clean.is_empty() => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let clean = match clean.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 => head.to_owned(),
        _ => clean,
    };
    Some(clean)
}
