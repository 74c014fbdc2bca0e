//! Durable past power loss (issue #9 item 5; SPEC section 4: `Immediate`
//! means stable storage for every file and directory the store wrote).
//!
//! A child process (this test binary run again with
//! `IDEMFLOW_DURABLE_CHILD_DB` set) opens an engine with
//! `Durability::Immediate` on a directory that does not exist yet and makes a
//! few hundred calls. First from one thread, every kind of call: creations
//! with payloads, transitions with fresh keys, replays, no-ops, errors
//! (`NotFound`, `InvalidTransition`, `VersionConflict`, `KeyReused`), reads
//! (`get`, `history`, `outbox().pending`) and `outbox().ack`. Then from three
//! threads at once (group commit), calls that all change something:
//! creations, transitions with fresh keys, acknowledgements of outbox events.
//! Around every call it writes `BEGIN <n>` and, once the call returned,
//! `ACK <n> w|r <label>` to stdout (`w`: the call changed something, `r`: it
//! only read), each with a single `write(1, ...)`. The child runs under
//! `strace -f -y`, which records every write, sync, creation, rename and
//! removal with the path of its file descriptor.
//!
//! The checker ([`trace`]) then proves, at every acknowledgement of a change
//! (and of opening the engine and registering the machine):
//! - every write to a file of the database directory (`write`, `pwrite64`,
//!   `writev`, `pwritev*`, `ftruncate`) that started before the
//!   acknowledgement *completed before* an `fsync`/`fdatasync` of that file
//!   *started*, and that sync *completed* before the acknowledgement began
//!   (sled's own `sync_file_range` does not count);
//! - every directory entry created before it (a file opened with `O_CREAT`
//!   that was not seen before, a `mkdir`, the target of a rename; the
//!   database directory itself included) was followed the same way by an
//!   `fsync` of its directory.
//!
//! Two refinements of "every acknowledged call", both needed for the rule to
//! be true of a correct engine:
//! - Read-only acknowledgements (`r`) are not held to it. sled writes to its
//!   log for calls that change nothing: every multi-tree transaction logs a
//!   `BatchManifest` (`PageCache::pin_log`), also one that writes nothing (a
//!   batch of no-ops, replays and refused requests), and a traversal, reads
//!   included, may complete a node split or merge and log it. None of that
//!   carries data: a read-only answer depends only on earlier changes, whose
//!   writes were proven synced at those changes' acknowledgements (in the
//!   single-threaded phase each was acknowledged before the read began). The
//!   writes sled made for read-only calls are counted, and each one is still
//!   held to the rule at the next acknowledgement of a change (the tail of
//!   the log, synced by the next batch that writes). Syncing them before each
//!   read-only answer would cost an `fdatasync` per no-op, replay or refused
//!   request (1 to 8 ms here, against well under 1 ms now).
//! - Under group commit a caller prints its `ACK` after its batch was synced,
//!   but possibly after the next leader began writing the *next* batch. Such
//!   a batch holds a call of another thread that began before its writes and
//!   whose answer (after that batch's sync) comes after this `ACK`. So a
//!   write (or creation) not covered yet is excused when *another* call that
//!   was already running when the write started is still unacknowledged;
//!   that call's own `ACK` checks it. With one client thread nothing is ever
//!   excused. (Because the three-threaded phase only changes things, every one
//!   of its batches ends with a sync.)
//!
//! What the trace cannot show is data that should have been written and was
//! not: that every acknowledged change is in the files is `tests/crash.rs`'s
//! part (kill -9 keeps the page cache); this test proves that what is in the
//! files is on stable storage.
//!
//! Two variants: a new database (8 MiB segments, no blob files expected) and
//! an "older" one with 512 KiB segments and 16-30 KiB payloads, where sled
//! writes pages to `blobs/` files; that variant asserts blob files appeared.
//! Without strace the tests skip visibly, unless `IDEMFLOW_REQUIRE_STRACE=1`
//! (set by `.ci/run`), where they fail. See `docs/reliability.md`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use idemflow::{Durability, Engine, Error, MachineDef, NamedMachine, NamedRequest, OutcomeRecord};
use serde_json::{json, Value};

const CHILD_ENV: &str = "IDEMFLOW_DURABLE_CHILD_DB";
const VARIANT_ENV: &str = "IDEMFLOW_DURABLE_CHILD_VARIANT";
const REQUIRE_ENV: &str = "IDEMFLOW_REQUIRE_STRACE";
/// How long the traced child may run before it is killed.
const WATCHDOG: Duration = Duration::from_secs(120);
/// Calls of the single-threaded phase, then threads and calls per thread of
/// the multi-threaded phase. Three threads, not two: two callers mostly take
/// turns (one leads a batch while the other waits, then the other leads its
/// own), so batches rarely hold two calls; with three, about a quarter of the
/// changes share a batch and its sync with another.
const SINGLE_CALLS: u64 = 150;
const THREADS: usize = 3;
const CALLS_PER_THREAD: u64 = 70;

/// What strace records: everything that writes, syncs, creates, renames or
/// removes a file (`?`: no error where the architecture lacks the call).
const TRACED: &str = "openat,?creat,write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,\
                      sync_file_range,?rename,renameat,?renameat2,ftruncate,?mkdir,mkdirat,\
                      ?unlink,unlinkat";

// ---------------------------------------------------------------- the checker

/// Parses `strace -f -ttt -y` output and checks durability at every `ACK`.
mod trace {
    use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

    /// One system call, joined from its `<unfinished ...>` and `<... resumed>`
    /// halves when another thread's call came in between.
    #[derive(Clone, Debug)]
    pub struct Call {
        pub name: String,
        pub args: Vec<String>,
        /// What follows ` = `: `0`, `4096`, `3</path>`, `-1 ENOENT (...)`.
        pub ret: String,
        /// Index of the line where the call began.
        pub start: usize,
        /// Index of the line where it returned.
        pub end: usize,
        /// The line(s) as printed, for messages.
        pub text: String,
    }

    impl Call {
        fn ok(&self) -> bool {
            !self.ret.starts_with('-') && !self.ret.starts_with('?')
        }
    }

    /// Parses a whole trace. Lines that are not system calls (signals, exits)
    /// and calls still unfinished at the end are left out.
    pub fn parse(text: &str) -> Vec<Call> {
        let mut calls = Vec::new();
        // Per thread: the first half of a call and where it began.
        let mut unfinished: HashMap<u32, (String, usize, String)> = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let (pid, rest) = split_prefix(line);
            if rest.starts_with("+++") || rest.starts_with("---") || rest.is_empty() {
                continue;
            }
            if let Some(after) = rest.strip_prefix("<... ") {
                let Some(close) = after.find(" resumed>") else {
                    continue;
                };
                let Some((head, start, first_line)) = unfinished.remove(&pid) else {
                    continue;
                };
                let tail = &after[close + " resumed>".len()..];
                let joined = format!("{}{}", head.trim_end(), tail);
                if let Some(mut call) = parse_call(&joined, start, index) {
                    call.text = format!("{first_line}\n    {line}");
                    calls.push(call);
                }
            } else if let Some(head) = rest.strip_suffix("<unfinished ...>") {
                unfinished.insert(pid, (head.to_owned(), index, line.to_owned()));
            } else if let Some(mut call) = parse_call(rest, index, index) {
                call.text = line.to_owned();
                calls.push(call);
            }
        }
        calls
    }

    /// Splits `<pid> <seconds.micros> ` off a line (either may be absent).
    fn split_prefix(line: &str) -> (u32, &str) {
        let mut rest = line.trim_start();
        let mut pid = 0;
        let token = |text: &str| text.split(' ').next().unwrap_or("").to_owned();
        let first = token(rest);
        if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) {
            pid = first.parse().unwrap_or(0);
            rest = rest[first.len()..].trim_start();
        }
        let second = token(rest);
        if second.contains('.') && second.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            rest = rest[second.len()..].trim_start();
        }
        (pid, rest)
    }

    /// `name(arg, arg, ...) = ret`.
    fn parse_call(text: &str, start: usize, end: usize) -> Option<Call> {
        let open = text.find('(')?;
        let name = &text[..open];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let mut args = Vec::new();
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut current = String::new();
        let mut close = None;
        for (offset, c) in text[open + 1..].char_indices() {
            if in_string {
                current.push(c);
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
                continue;
            }
            match c {
                '"' => {
                    in_string = true;
                    current.push(c);
                }
                '(' | '[' | '{' | '<' => {
                    depth += 1;
                    current.push(c);
                }
                ')' if depth == 0 => {
                    close = Some(open + 1 + offset);
                    break;
                }
                ')' | ']' | '}' | '>' => {
                    depth = depth.saturating_sub(1);
                    current.push(c);
                }
                ',' if depth == 0 => {
                    args.push(current.trim().to_owned());
                    current.clear();
                }
                _ => current.push(c),
            }
        }
        let close = close?;
        if !current.trim().is_empty() {
            args.push(current.trim().to_owned());
        }
        let ret = text[close + 1..]
            .trim_start()
            .strip_prefix('=')?
            .trim()
            .to_owned();
        Some(Call {
            name: name.to_owned(),
            args,
            ret,
            start,
            end,
            text: String::new(),
        })
    }

    /// The path strace prints for a descriptor: `3</a/b>` -> `/a/b`; `None`
    /// for pipes, sockets, anonymous files and bare numbers. A file removed
    /// meanwhile (`/a/b (deleted)`) gives `Some((path, true))`.
    pub fn fd_path(arg: &str) -> Option<(String, bool)> {
        let lt = arg.find('<')?;
        let inner = arg[lt + 1..].strip_suffix('>')?;
        if !inner.starts_with('/') {
            return None;
        }
        match inner.strip_suffix(" (deleted)") {
            Some(path) => Some((path.to_owned(), true)),
            None => Some((inner.to_owned(), false)),
        }
    }

    /// A quoted strace string, unescaped (truncation marks `...` dropped).
    pub fn unquote(arg: &str) -> Option<String> {
        unquote_bytes(arg).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The bytes of a quoted strace string.
    pub fn unquote_bytes(arg: &str) -> Option<Vec<u8>> {
        let body = arg.strip_prefix('"')?;
        let mut out = Vec::new();
        let mut chars = body.bytes().peekable();
        while let Some(b) = chars.next() {
            match b {
                b'"' => break,
                b'\\' => match chars.next()? {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let hex: Vec<u8> = (0..2).filter_map(|_| chars.next()).collect();
                        out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
                    }
                    digit @ b'0'..=b'7' => {
                        let mut value = u32::from(digit - b'0');
                        for _ in 0..2 {
                            match chars.peek() {
                                Some(&d @ b'0'..=b'7') => {
                                    value = value * 8 + u32::from(d - b'0');
                                    chars.next();
                                }
                                _ => break,
                            }
                        }
                        out.push(value as u8);
                    }
                    other => out.push(other),
                },
                other => out.push(other),
            }
        }
        Some(out)
    }

    fn parent(path: &str) -> String {
        match path.rfind('/') {
            Some(0) => "/".to_owned(),
            Some(slash) => path[..slash].to_owned(),
            None => ".".to_owned(),
        }
    }

    fn join(dir: &str, path: &str) -> String {
        if path.starts_with('/') {
            path.to_owned()
        } else {
            format!(
                "{}/{}",
                dir.trim_end_matches('/'),
                path.trim_start_matches("./")
            )
        }
    }

    /// What the checker counted and found.
    #[derive(Debug, Default)]
    pub struct Report {
        /// `ACK` lines checked.
        pub acks: usize,
        /// Writes (and truncations) to files of the database before the last `ACK`.
        pub writes: usize,
        /// Files of the database written.
        pub files_written: usize,
        /// Completed `fsync`/`fdatasync` calls on database files and directories.
        pub syncs: usize,
        /// ... of which on directories.
        pub directory_syncs: usize,
        /// ... of which on the data file `db` (one per synced batch).
        pub data_file_syncs: usize,
        /// Directory entries created (files, directories, rename targets).
        pub created: usize,
        /// Blob files (`blobs/<n>`) created.
        pub blob_files: usize,
        /// Writes to blob files.
        pub blob_writes: usize,
        /// `ACK` lines of calls that changed something (checked), and of
        /// read-only calls (see [`check`]).
        pub changing_acks: usize,
        pub read_only_acks: usize,
        /// Writes and creations still unsynced at the acknowledgement of a
        /// read-only call (sled's log writes for read-only transactions and
        /// cooperative node splits): each was then checked at the next
        /// acknowledgement of a change.
        pub unsynced_at_read_only: usize,
        /// sled's `sync_file_range` calls (seen, never counted as a sync).
        pub sync_file_ranges: usize,
        /// Files removed (`unlink`) after being written or created.
        pub removed: usize,
        /// (ACK, write or creation) pairs excused because another call that
        /// began before the write was still unacknowledged.
        pub excused: usize,
        /// The violations, one per write or creation not covered in time,
        /// with the first acknowledgement it failed (empty when the check passed).
        pub violations: Vec<String>,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Write,
        Create,
    }

    /// Something that must be synced before the next `ACK`.
    struct Obligation {
        kind: Kind,
        /// The file or directory whose sync covers it.
        target: usize,
        /// The file it concerns (dropped when that file is removed).
        file: usize,
        /// The lines where its call began and returned.
        start: usize,
        end: usize,
        text: String,
    }

    enum Point {
        /// An obligation begins (a write starts, an entry appears).
        Begin(usize),
        /// An obligation's call returned.
        Finish(usize),
        /// A sync of `target` that started at `start` returned.
        Synced {
            target: usize,
            start: usize,
        },
        Removed(usize),
        CallBegin(u64),
        Ack(u64, bool, String),
    }

    /// Files and directories by path; a rename moves the identity.
    #[derive(Default)]
    struct Files {
        by_path: HashMap<String, usize>,
        paths: Vec<String>,
    }

    impl Files {
        fn id(&mut self, path: &str) -> usize {
            if let Some(&id) = self.by_path.get(path) {
                return id;
            }
            self.new_id(path)
        }

        fn new_id(&mut self, path: &str) -> usize {
            let id = self.paths.len();
            self.paths.push(path.to_owned());
            self.by_path.insert(path.to_owned(), id);
            id
        }
    }

    /// What the child writes to stdout around a call.
    enum Marker {
        Begin(u64),
        /// `ACK <n> w|r <label>`: `w` when the call changed something.
        Ack(u64, bool, String),
    }

    fn marker(call: &Call) -> Option<Marker> {
        if call.name != "write" || !(call.args.first()?.starts_with("1<") || call.args[0] == "1") {
            return None;
        }
        let text = unquote(call.args.get(1)?)?;
        let (is_ack, rest) = if let Some(rest) = text.strip_prefix("ACK ") {
            (true, rest)
        } else {
            (false, text.strip_prefix("BEGIN ")?)
        };
        let mut words = rest.split_whitespace();
        let number = words.next()?.parse().ok()?;
        if !is_ack {
            return Some(Marker::Begin(number));
        }
        let changed = match words.next()? {
            "w" => true,
            "r" => false,
            _ => return None,
        };
        Some(Marker::Ack(number, changed, text.trim_end().to_owned()))
    }

    /// A directory entry appeared: its directory must be synced after it.
    fn created(
        path: &str,
        file: usize,
        call: &Call,
        files: &mut Files,
        obligations: &mut Vec<Obligation>,
        points: &mut Vec<(usize, u8, Point)>,
    ) {
        let target = files.id(&parent(path));
        obligations.push(Obligation {
            kind: Kind::Create,
            target,
            file,
            start: call.start,
            end: call.end,
            text: call.text.clone(),
        });
        let id = obligations.len() - 1;
        points.push((call.start, 0, Point::Begin(id)));
        points.push((call.end, 1, Point::Finish(id)));
    }

    /// Checks the trace of a run on the database in `root` (an absolute,
    /// canonical path). Writes to files outside `root` are ignored; syncs of
    /// `root`'s parent count for entries created there (`root` itself).
    ///
    /// Every write (or truncation) of a file under `root` and every entry
    /// created there (or `root` itself) is an obligation, open until a sync
    /// of the file (of the directory, for an entry) that *began* after the
    /// call returned has itself returned. At an `ACK ... w` line every
    /// obligation still open is a violation, unless another call that began
    /// before the obligation's call is still unacknowledged (its batch may be
    /// a later one; its own `ACK` checks it). At an `ACK ... r` line the
    /// obligations still open are only counted (`unsynced_at_read_only`):
    /// they stay open for the next `ACK ... w`.
    pub fn check(calls: &[Call], root: &str) -> Report {
        let root = root.trim_end_matches('/').to_owned();
        let root_parent = parent(&root);
        let inside = |path: &str| path == root || path.starts_with(&format!("{root}/"));
        let blob_prefix = format!("{root}/blobs/");
        let mut report = Report::default();
        let mut files = Files::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut cwd = String::from("/");
        let mut obligations: Vec<Obligation> = Vec::new();
        // (position, order within the line, point)
        let mut points: Vec<(usize, u8, Point)> = Vec::new();
        let mut written: HashSet<usize> = HashSet::new();
        let mut touched: HashSet<usize> = HashSet::new();
        let mut last_ack = 0;
        // Directories, to count their syncs apart.
        let mut directories: HashSet<String> =
            [root.clone(), root_parent.clone()].into_iter().collect();

        let resolve = |dirfd: &str, path: &str, cwd: &str| -> String {
            if path.starts_with('/') {
                return path.to_owned();
            }
            match fd_path(dirfd) {
                Some((dir, _)) => join(&dir, path),
                None => join(cwd, path),
            }
        };

        for call in calls {
            if let Some(first) = call.args.first() {
                if first.starts_with("AT_FDCWD<") {
                    if let Some((dir, _)) = fd_path(first) {
                        cwd = dir;
                    }
                }
            }
            match marker(call) {
                Some(Marker::Ack(number, changed, text)) => {
                    last_ack = call.start;
                    points.push((call.start, 0, Point::Ack(number, changed, text)));
                    continue;
                }
                Some(Marker::Begin(number)) => {
                    points.push((call.start, 0, Point::CallBegin(number)));
                    continue;
                }
                None => {}
            }
            match call.name.as_str() {
                "openat" | "creat" if call.ok() => {
                    let (flags, arg_path) = if call.name == "creat" {
                        ("O_CREAT".to_owned(), call.args.first())
                    } else {
                        (
                            call.args.get(2).cloned().unwrap_or_default(),
                            call.args.get(1),
                        )
                    };
                    let path = match fd_path(&call.ret) {
                        Some((path, _)) => path,
                        None => {
                            let Some(given) = arg_path.and_then(|arg| unquote(arg)) else {
                                continue;
                            };
                            let dirfd = if call.name == "creat" {
                                ""
                            } else {
                                &call.args[0]
                            };
                            resolve(dirfd, &given, &cwd)
                        }
                    };
                    let is_new = flags.contains("O_CREAT") && !seen.contains(&path);
                    seen.insert(path.clone());
                    if is_new && inside(&path) {
                        let file = files.new_id(&path);
                        touched.insert(file);
                        report.created += 1;
                        if path.starts_with(&blob_prefix) {
                            report.blob_files += 1;
                        }
                        created(&path, file, call, &mut files, &mut obligations, &mut points);
                    }
                }
                "mkdir" | "mkdirat" if call.ok() => {
                    let (dirfd, arg) = if call.name == "mkdir" {
                        ("", call.args.first())
                    } else {
                        (call.args[0].as_str(), call.args.get(1))
                    };
                    let Some(given) = arg.and_then(|arg| unquote(arg)) else {
                        continue;
                    };
                    let path = resolve(dirfd, &given, &cwd);
                    seen.insert(path.clone());
                    directories.insert(path.clone());
                    if inside(&path) {
                        let file = files.new_id(&path);
                        report.created += 1;
                        created(&path, file, call, &mut files, &mut obligations, &mut points);
                    }
                }
                "rename" | "renameat" | "renameat2" if call.ok() => {
                    let (from, to) = if call.name == "rename" {
                        let from = call.args.first().and_then(|a| unquote(a));
                        let to = call.args.get(1).and_then(|a| unquote(a));
                        (
                            from.map(|p| resolve("", &p, &cwd)),
                            to.map(|p| resolve("", &p, &cwd)),
                        )
                    } else {
                        let from = call.args.get(1).and_then(|a| unquote(a));
                        let to = call.args.get(3).and_then(|a| unquote(a));
                        (
                            from.map(|p| resolve(&call.args[0], &p, &cwd)),
                            to.map(|p| resolve(&call.args[2], &p, &cwd)),
                        )
                    };
                    let (Some(from), Some(to)) = (from, to) else {
                        continue;
                    };
                    seen.insert(to.clone());
                    if !inside(&to) {
                        continue;
                    }
                    let file = match files.by_path.remove(&from) {
                        Some(id) => id,
                        None => files.new_id(&from),
                    };
                    files.by_path.insert(to.clone(), file);
                    files.paths[file] = to.clone();
                    report.created += 1;
                    created(&to, file, call, &mut files, &mut obligations, &mut points);
                }
                "unlink" | "unlinkat" if call.ok() => {
                    let (dirfd, arg) = if call.name == "unlink" {
                        ("", call.args.first())
                    } else {
                        (call.args[0].as_str(), call.args.get(1))
                    };
                    let Some(given) = arg.and_then(|arg| unquote(arg)) else {
                        continue;
                    };
                    let path = resolve(dirfd, &given, &cwd);
                    seen.remove(&path);
                    if let Some(file) = files.by_path.remove(&path) {
                        if touched.contains(&file) {
                            report.removed += 1;
                        }
                        points.push((call.end, 1, Point::Removed(file)));
                    }
                }
                "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "ftruncate"
                    if !call.ret.starts_with('-') =>
                {
                    let Some((path, deleted)) = call.args.first().and_then(|a| fd_path(a)) else {
                        continue;
                    };
                    if deleted || !inside(&path) {
                        continue;
                    }
                    let file = files.id(&path);
                    touched.insert(file);
                    written.insert(file);
                    report.writes += 1;
                    if path.starts_with(&blob_prefix) {
                        report.blob_writes += 1;
                    }
                    obligations.push(Obligation {
                        kind: Kind::Write,
                        target: file,
                        file,
                        start: call.start,
                        end: call.end,
                        text: call.text.clone(),
                    });
                    let id = obligations.len() - 1;
                    points.push((call.start, 0, Point::Begin(id)));
                    points.push((call.end, 1, Point::Finish(id)));
                }
                "fsync" | "fdatasync" if call.ret == "0" => {
                    let Some((path, _)) = call.args.first().and_then(|a| fd_path(a)) else {
                        continue;
                    };
                    if !(inside(&path) || path == root_parent) {
                        continue;
                    }
                    let target = files.id(&path);
                    report.syncs += 1;
                    if directories.contains(&path) {
                        report.directory_syncs += 1;
                    }
                    if path == format!("{root}/db") {
                        report.data_file_syncs += 1;
                    }
                    points.push((
                        call.end,
                        1,
                        Point::Synced {
                            target,
                            start: call.start,
                        },
                    ));
                }
                "sync_file_range" => {
                    if let Some((path, _)) = call.args.first().and_then(|a| fd_path(a)) {
                        if inside(&path) {
                            report.sync_file_ranges += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        report.files_written = written.len();
        // Only what happened before the last acknowledgement is checked.
        report.writes = obligations
            .iter()
            .filter(|o| o.kind == Kind::Write && o.start < last_ack)
            .count();

        // Replay in trace order. A write's end is unknown (`None`) until it
        // returns, and a sync covers only writes that returned before it began.
        points.sort_by_key(|(position, order, _)| (*position, *order));
        let mut open: BTreeSet<usize> = BTreeSet::new();
        let mut ends: Vec<Option<usize>> = vec![None; obligations.len()];
        let mut in_flight: BTreeMap<u64, usize> = BTreeMap::new();
        // Obligation -> (the first ACK it failed, how many ACKs it failed).
        let mut violated: BTreeMap<usize, (String, usize)> = BTreeMap::new();
        let mut unsynced_at_read_only: HashSet<usize> = HashSet::new();
        for (position, _, point) in points {
            match point {
                Point::Begin(id) => {
                    open.insert(id);
                }
                Point::Finish(id) => ends[id] = Some(obligations[id].end),
                Point::Synced { target, start } => {
                    open.retain(|&id| {
                        obligations[id].target != target
                            || !matches!(ends[id], Some(end) if end < start)
                    });
                }
                Point::Removed(file) => {
                    open.retain(|&id| obligations[id].file != file);
                }
                Point::CallBegin(number) => {
                    in_flight.insert(number, position);
                }
                Point::Ack(number, changed, ack_text) => {
                    report.acks += 1;
                    if changed {
                        report.changing_acks += 1;
                    } else {
                        report.read_only_acks += 1;
                    }
                    in_flight.remove(&number);
                    // The earliest start of another call still unanswered.
                    let earliest_other = in_flight.values().copied().min();
                    for &id in &open {
                        let obligation = &obligations[id];
                        if earliest_other.is_some_and(|begin| begin < obligation.start) {
                            report.excused += 1;
                            continue;
                        }
                        if !changed {
                            unsynced_at_read_only.insert(id);
                            continue;
                        }
                        violated
                            .entry(id)
                            .or_insert_with(|| (ack_text.clone(), 0))
                            .1 += 1;
                    }
                }
            }
        }
        report.unsynced_at_read_only = unsynced_at_read_only.len();
        for (id, (first_ack, count)) in violated {
            let obligation = &obligations[id];
            let what = match obligation.kind {
                Kind::Write => format!(
                    "file {} was written and not synced (fsync/fdatasync) after the write \
                     before the acknowledgement",
                    files.paths[obligation.file]
                ),
                Kind::Create => format!(
                    "{} was created and its directory {} was not fsynced after the creation \
                     before the acknowledgement",
                    files.paths[obligation.file], files.paths[obligation.target]
                ),
            };
            report.violations.push(format!(
                "{what}\n  write/creation: {}\n  acknowledgement: {first_ack} (and {} later ones)",
                obligation.text,
                count - 1
            ));
        }
        report
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const ROOT: &str = "/t/r";

        /// Opening, creating the directory and the data file, a blob file,
        /// a snapshot renamed into place: everything synced, then ACK 1.
        const GOOD: &str = r#"100 1.000001 write(1<pipe:[9]>, "BEGIN 1\n", 8) = 8
100 1.000002 mkdir("/t/r", 0777) = 0
100 1.000003 openat(AT_FDCWD</w>, "/t/r/db", O_RDWR|O_CREAT|O_CLOEXEC, 0666) = 3</t/r/db>
101 1.000004 pwrite64(3</t/r/db>, "abc\"def) = 1", 3, 0 <unfinished ...>
100 1.000005 openat(AT_FDCWD</w>, "/t/r/blobs/7", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0666) = 4</t/r/blobs/7>
101 1.000006 <... pwrite64 resumed>) = 3
101 1.000007 sync_file_range(3</t/r/db>, 0, 3, SYNC_FILE_RANGE_WAIT_BEFORE|SYNC_FILE_RANGE_WRITE|SYNC_FILE_RANGE_WAIT_AFTER) = 0
100 1.000008 write(4</t/r/blobs/7>, "\1\2\3\4", 4) = 4
100 1.000009 openat(AT_FDCWD</w>, "/t/r/snap.1.generating", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 5</t/r/snap.1.generating>
100 1.000010 writev(5</t/r/snap.1.generating>, [{iov_base="x", iov_len=1}], 1) = 1
100 1.000011 fsync(5</t/r/snap.1.generating>) = 0
100 1.000012 rename("/t/r/snap.1.generating", "/t/r/snap.1") = 0
100 1.000013 fdatasync(3</t/r/db> <unfinished ...>
101 1.000014 write(2<pipe:[10]>, "log", 3) = 3
100 1.000015 <... fdatasync resumed>) = 0
100 1.000016 openat(AT_FDCWD</w>, "/t/r/blobs/7", O_RDONLY|O_CLOEXEC) = 6</t/r/blobs/7>
100 1.000017 fsync(6</t/r/blobs/7>) = 0
100 1.000018 openat(AT_FDCWD</w>, "/t/r/blobs", O_RDONLY|O_CLOEXEC) = 7</t/r/blobs>
100 1.000019 fsync(7</t/r/blobs>) = 0
100 1.000020 fsync(8</t/r>) = 0
100 1.000021 fsync(9</t>) = 0
100 1.000022 write(1<pipe:[9]>, "ACK 1 w\n", 8) = 8
"#;

        fn run(trace: &str) -> Report {
            check(&parse(trace), ROOT)
        }

        #[test]
        fn parses_joined_halves_and_quoted_parentheses() {
            let calls = parse(GOOD);
            let write = calls.iter().find(|c| c.name == "pwrite64").unwrap();
            assert_eq!((write.start, write.end), (3, 5));
            assert_eq!(write.args.len(), 4, "{:?}", write.args);
            assert_eq!(write.ret, "3");
            let sync = calls.iter().find(|c| c.name == "fdatasync").unwrap();
            assert_eq!((sync.start, sync.end, sync.ret.as_str()), (12, 14, "0"));
            assert_eq!(unquote(&write.args[1]).unwrap(), "abc\"def) = 1");
            assert_eq!(
                fd_path("3</t/r/db (deleted)>"),
                Some(("/t/r/db".to_owned(), true))
            );
            assert_eq!(fd_path("1<pipe:[9]>"), None);
        }

        #[test]
        fn a_fully_synced_trace_passes() {
            let report = run(GOOD);
            assert!(report.violations.is_empty(), "{:#?}", report.violations);
            assert_eq!(report.acks, 1);
            assert_eq!(report.writes, 3);
            assert_eq!(report.blob_files, 1);
            // the directory, db, blobs/7, snap.1.generating, snap.1
            assert_eq!(report.created, 5);
            assert_eq!(report.sync_file_ranges, 1);
        }

        #[test]
        fn a_write_after_the_last_sync_fails() {
            let trace = GOOD.replace(
                "100 1.000022 write(1<pipe:[9]>",
                "101 1.000021 pwrite64(3</t/r/db>, \"late\", 4, 3) = 4\n100 1.000022 write(1<pipe:[9]>",
            );
            let report = run(&trace);
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            let violation = &report.violations[0];
            assert!(
                violation.contains("file /t/r/db was written"),
                "{violation}"
            );
            assert!(violation.contains("\"late\""), "{violation}");
            assert!(violation.contains("ACK 1"), "{violation}");
        }

        #[test]
        fn sync_file_range_is_not_a_sync() {
            // Without the fdatasync, sled's own sync_file_range is all there is.
            let trace = GOOD
                .replace("100 1.000013 fdatasync(3</t/r/db> <unfinished ...>\n", "")
                .replace("100 1.000015 <... fdatasync resumed>) = 0\n", "");
            let report = run(&trace);
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            assert!(report.violations[0].contains("/t/r/db was written"));
        }

        #[test]
        fn a_sync_that_completes_after_the_ack_does_not_count() {
            let trace = GOOD
                .replace("100 1.000015 <... fdatasync resumed>) = 0\n", "")
                .replace(
                    "100 1.000022 write(1<pipe:[9]>, \"ACK 1 w\\n\", 8) = 8\n",
                    "101 1.000022 write(1<pipe:[9]>, \"ACK 1 w\\n\", 8) = 8\n100 1.000023 <... fdatasync resumed>) = 0\n",
                );
            let report = run(&trace);
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
        }

        #[test]
        fn a_write_still_running_when_the_sync_starts_is_not_covered() {
            // The pwrite returns only after the fdatasync began.
            let trace = GOOD
                .replace("101 1.000006 <... pwrite64 resumed>) = 3\n", "")
                .replace(
                    "101 1.000014 write(2<pipe:[10]>, \"log\", 3) = 3\n",
                    "101 1.000014 <... pwrite64 resumed>) = 3\n",
                );
            let report = run(&trace);
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
        }

        #[test]
        fn a_missing_directory_sync_fails() {
            let report = run(&GOOD.replace("100 1.000019 fsync(7</t/r/blobs>) = 0\n", ""));
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            assert!(
                report.violations[0]
                    .contains("/t/r/blobs/7 was created and its directory /t/r/blobs"),
                "{}",
                report.violations[0]
            );
            // The database directory itself needs its parent synced.
            let report = run(&GOOD.replace("100 1.000021 fsync(9</t>) = 0\n", ""));
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            assert!(report.violations[0].contains("/t/r was created and its directory /t"));
            // A rename needs its directory synced after it.
            let trace = GOOD
                .replace("100 1.000012 rename(\"/t/r/snap.1.generating\", \"/t/r/snap.1\") = 0\n", "")
                .replace(
                    "100 1.000022 write(1<pipe:[9]>",
                    "100 1.000021 rename(\"/t/r/snap.1.generating\", \"/t/r/snap.1\") = 0\n100 1.000022 write(1<pipe:[9]>",
                );
            let report = run(&trace);
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            assert!(report.violations[0].contains("/t/r/snap.1 was created"));
        }

        #[test]
        fn a_blob_not_synced_fails_and_files_outside_are_ignored() {
            let trace = GOOD.replace("100 1.000017 fsync(6</t/r/blobs/7>) = 0\n", "").replace(
                "100 1.000022 write(1<pipe:[9]>",
                "100 1.000021 write(10</t/other>, \"x\", 1) = 1\n100 1.000022 write(1<pipe:[9]>",
            );
            let report = run(&trace);
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            assert!(report.violations[0].contains("file /t/r/blobs/7 was written"));
        }

        /// Group commit: thread 101's call 2 began before the write of the
        /// next batch and is still unanswered at ACK 1, so that write is
        /// excused there and checked at ACK 2.
        #[test]
        fn a_write_of_another_unanswered_call_is_checked_at_that_call() {
            let excused = GOOD.replace(
                "100 1.000022 write(1<pipe:[9]>, \"ACK 1 w\\n\", 8) = 8\n",
                "101 1.000021 write(1<pipe:[9]>, \"BEGIN 2\\n\", 8) = 8\n\
                 102 1.000022 pwrite64(3</t/r/db>, \"next\", 4, 3) = 4\n\
                 100 1.000023 write(1<pipe:[9]>, \"ACK 1 w\\n\", 8) = 8\n\
                 102 1.000024 fdatasync(3</t/r/db>) = 0\n\
                 101 1.000025 write(1<pipe:[9]>, \"ACK 2 w\\n\", 8) = 8\n",
            );
            let report = run(&excused);
            assert!(report.violations.is_empty(), "{:#?}", report.violations);
            assert_eq!((report.acks, report.excused), (2, 1));
            // Without the sync before ACK 2, ACK 2 fails.
            let report = run(&excused.replace("102 1.000024 fdatasync(3</t/r/db>) = 0\n", ""));
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            assert!(report.violations[0].contains("ACK 2"));
            // A call that began after the write does not excuse it.
            let late = excused.replace(
                "101 1.000021 write(1<pipe:[9]>, \"BEGIN 2\\n\", 8) = 8\n\
                 102 1.000022 pwrite64(3</t/r/db>, \"next\", 4, 3) = 4\n",
                "102 1.000021 pwrite64(3</t/r/db>, \"next\", 4, 3) = 4\n\
                 101 1.000022 write(1<pipe:[9]>, \"BEGIN 2\\n\", 8) = 8\n",
            );
            let report = run(&late);
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            assert!(report.violations[0].contains("ACK 1"));
        }

        /// sled writes for read-only calls too (a batch manifest, a node
        /// split); a read-only answer does not depend on them, but the next
        /// change's acknowledgement must find them synced.
        #[test]
        fn writes_unsynced_at_a_read_only_ack_are_checked_at_the_next_change() {
            let trace = GOOD.replace(
                "100 1.000022 write(1<pipe:[9]>, \"ACK 1 w\\n\", 8) = 8\n",
                "100 1.000022 write(1<pipe:[9]>, \"ACK 1 w\\n\", 8) = 8\n\
                 100 1.000023 write(1<pipe:[9]>, \"BEGIN 2\\n\", 8) = 8\n\
                 101 1.000024 pwrite64(3</t/r/db>, \"manifest\", 8, 3) = 8\n\
                 100 1.000025 write(1<pipe:[9]>, \"ACK 2 r get\\n\", 12) = 12\n\
                 100 1.000026 write(1<pipe:[9]>, \"BEGIN 3\\n\", 8) = 8\n\
                 100 1.000027 fdatasync(3</t/r/db>) = 0\n\
                 100 1.000028 write(1<pipe:[9]>, \"ACK 3 w fire\\n\", 13) = 13\n",
            );
            let report = run(&trace);
            assert!(report.violations.is_empty(), "{:#?}", report.violations);
            assert_eq!((report.changing_acks, report.read_only_acks), (2, 1));
            assert_eq!(report.unsynced_at_read_only, 1);
            let report = run(&trace.replace("100 1.000027 fdatasync(3</t/r/db>) = 0\n", ""));
            assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
            assert!(
                report.violations[0].contains("ACK 3 w fire"),
                "{}",
                report.violations[0]
            );
        }

        #[test]
        fn a_removed_file_needs_no_sync() {
            let trace = GOOD
                .replace("100 1.000017 fsync(6</t/r/blobs/7>) = 0\n", "")
                .replace(
                    "100 1.000018 openat",
                    "100 1.000017 unlink(\"/t/r/blobs/7\") = 0\n100 1.000018 openat",
                );
            let report = run(&trace);
            assert!(report.violations.is_empty(), "{:#?}", report.violations);
            assert_eq!(report.removed, 1);
        }
    }
}

// ---------------------------------------------------------------- the child

/// SplitMix64: small, deterministic, good enough for test choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn lamp() -> MachineDef {
    MachineDef::new("lamp", "off")
        .state("off")
        .state("on")
        .state("dimmed")
        .terminal_state("broken")
        .transition("off", "switch_on", "on")
        .transition("on", "switch_off", "off")
        .transition("on", "dim", "dimmed")
        .transition("dimmed", "switch_off", "off")
        .transition("dimmed", "brighten", "on")
        .transition("on", "burn_out", "broken")
}

const EVENTS: [&str; 5] = ["switch_on", "switch_off", "dim", "brighten", "burn_out"];
const STATES: [&str; 3] = ["off", "on", "dimmed"];
const IDS: u64 = 24;

static NEXT_CALL: AtomicU64 = AtomicU64::new(0);
/// The next outbox position the multi-threaded phase acknowledges.
static ACK_CURSOR: AtomicU64 = AtomicU64::new(0);

/// One line to stdout with a single `write(1, ...)`.
fn say(line: &str) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

fn child_fail(what: String) -> ! {
    say(&format!("CHILD-FAIL {what}\n"));
    std::process::exit(3);
}

/// Runs one call between `BEGIN <n>` and `ACK <n> w|r <label>`; `run`
/// returns the answer and whether the call changed something (`w`). Errors a
/// random request may get are answers too (read-only ones).
fn call<T>(label: &str, run: impl FnOnce() -> idemflow::Result<(T, bool)>) -> Option<T> {
    let n = NEXT_CALL.fetch_add(1, Ordering::SeqCst);
    say(&format!("BEGIN {n}\n"));
    let (answer, changed) = match run() {
        Ok((value, changed)) => (Some(value), changed),
        Err(
            Error::NotFound { .. }
            | Error::InvalidTransition { .. }
            | Error::VersionConflict { .. }
            | Error::KeyReused { .. },
        ) => (None, false),
        Err(error) => child_fail(format!("call {n} ({label}): unexpected error {error:?}")),
    };
    let kind = if changed { "w" } else { "r" };
    say(&format!("ACK {n} {kind} {label}\n"));
    answer
}

/// Whether an outcome changed something: an applied change, or a keyed
/// no-op (it stores its key record); never a replay.
fn changed(outcome: &OutcomeRecord, keyed: bool) -> bool {
    !outcome.replay && (outcome.applied || keyed)
}

fn apply(
    lamps: &NamedMachine,
    id: &str,
    request: NamedRequest,
) -> idemflow::Result<(OutcomeRecord, bool)> {
    let keyed = request.key_ref().is_some();
    lamps.apply(id, request).map(|outcome| {
        let changed = changed(&outcome, keyed);
        (outcome, changed)
    })
}

fn payload(rng: &mut Rng, blobs: bool) -> Value {
    let size = if blobs {
        16 * 1024 + rng.below(14 * 1024)
    } else {
        rng.below(2000)
    } as usize;
    let fill = char::from(b'a' + rng.below(26) as u8);
    json!({"n": rng.below(1_000_000), "s": fill.to_string().repeat(size)})
}

/// The single-threaded phase: `calls` random calls of every kind.
fn mixed_calls(engine: &Engine, lamps: &NamedMachine, calls: u64, blobs: bool) {
    let mut rng = Rng(0x5EED);
    let outbox = engine.outbox();
    let mut keyed: Vec<(String, NamedRequest)> = Vec::new();
    for i in 0..calls {
        let id = format!("e-{}", rng.below(IDS));
        let roll = rng.below(100);
        if roll < 14 {
            let body = payload(&mut rng, blobs);
            call("create", || {
                lamps.create_with(&id, Some(body), None).map(|outcome| {
                    let changed = changed(&outcome, false);
                    (outcome, changed)
                })
            });
        } else if roll < 42 {
            let choices = if rng.below(10) == 0 { 5 } else { 4 };
            let event = EVENTS[rng.below(choices) as usize];
            let mut request = NamedRequest::fire(event)
                .key(format!("k-0-{i}"))
                .actor("tester");
            if rng.below(10) < 7 {
                request = request.payload(payload(&mut rng, blobs));
            }
            keyed.push((id.clone(), request.clone()));
            call("fire", || apply(lamps, &id, request));
        } else if roll < 50 {
            let state = STATES[rng.below(3) as usize];
            call("to", || apply(lamps, &id, NamedRequest::to(state)));
        } else if roll < 57 && !keyed.is_empty() {
            let (id, request) = keyed[rng.below(keyed.len() as u64) as usize].clone();
            call("replay", || apply(lamps, &id, request));
        } else if roll < 60 && !keyed.is_empty() {
            let (id, request) = keyed[rng.below(keyed.len() as u64) as usize].clone();
            let key = request.key_ref().unwrap_or("none").to_owned();
            let other = NamedRequest::to("off")
                .key(key)
                .payload(json!({"other": true}));
            call("reuse", || apply(lamps, &id, other));
        } else if roll < 63 {
            let request = NamedRequest::fire("switch_on").expect_version(1_000);
            call("conflict", || apply(lamps, &id, request));
        } else if roll < 66 {
            let missing = format!("missing-{i}");
            call("missing", || {
                apply(lamps, &missing, NamedRequest::fire("dim"))
            });
        } else if roll < 76 {
            call("get", || lamps.get(&id).map(|record| (record, false)));
        } else if roll < 84 {
            call("history", || {
                lamps.history(&id).map(|history| (history, false))
            });
        } else if roll < 92 {
            call("pending", || {
                outbox.pending(20).map(|events| (events, false))
            });
        } else {
            let events = call("pending", || {
                outbox.pending(5).map(|events| (events, false))
            })
            .unwrap_or_default();
            let changes = !events.is_empty();
            call("ack", || {
                outbox.ack(&events).map(|removed| (removed, changes))
            });
        }
    }
}

/// One thread of the multi-threaded phase: only calls that change something
/// (creations of its own entities, transitions around a cycle with fresh
/// keys, outbox acknowledgements by position), so every batch is synced and
/// any write not synced at an acknowledgement belongs to a batch still
/// running.
fn changing_calls(engine: &Engine, lamps: &NamedMachine, thread: u64, calls: u64, blobs: bool) {
    let mut rng = Rng(0x5EED ^ thread.wrapping_mul(0xA24B_AED4_963E_E407));
    let outbox = engine.outbox();
    // Own entities and the state each is in.
    let mut entities: Vec<(String, usize)> = Vec::new();
    const CYCLE: [(&str, &str); 3] = [
        ("switch_on", "on"),
        ("dim", "dimmed"),
        ("switch_off", "off"),
    ];
    for i in 0..calls {
        let roll = rng.below(100);
        if roll < 20 || entities.is_empty() {
            let id = format!("t{thread}-{i}");
            let body = payload(&mut rng, blobs);
            let created = call("create", || {
                lamps.create_with(&id, Some(body), None).map(|outcome| {
                    let changed = changed(&outcome, false);
                    (outcome, changed)
                })
            });
            if created.is_some_and(|outcome| outcome.applied) {
                entities.push((id, 0));
            }
        } else if roll < 92 {
            let index = rng.below(entities.len() as u64) as usize;
            let (id, step) = entities[index].clone();
            let (event, _) = CYCLE[step % 3];
            let request = NamedRequest::fire(event)
                .key(format!("k-{thread}-{i}"))
                .payload(payload(&mut rng, blobs));
            let outcome = call("fire", || apply(lamps, &id, request));
            match outcome {
                Some(outcome) if outcome.applied && !outcome.replay => entities[index].1 += 1,
                other => child_fail(format!("{id}: {event} did not apply: {other:?}")),
            }
        } else {
            // The next few positions, whoever's events they hold (positions
            // count up from 0 in commit order). No `pending` read here: a
            // read-only call may leave writes of sled unsynced (see the module
            // docs). Acknowledging is a write job, synced even when it
            // removes nothing.
            let first = ACK_CURSOR.fetch_add(4, Ordering::SeqCst);
            let positions: Vec<u64> = (first..first + 4).collect();
            call("ack", || {
                outbox
                    .ack_positions(&positions)
                    .map(|removed| (removed, true))
            });
        }
    }
}

/// The child: does something only when run by one of the tests below.
#[test]
fn durable_files_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    std::panic::set_hook(Box::new(|info| child_fail(format!("panic: {info}"))));
    // Never outlive the parent's watchdog.
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG + Duration::from_secs(10));
        child_fail("the child ran too long".to_owned());
    });
    say(&format!("PID {}\n", std::process::id()));
    let blobs = std::env::var(VARIANT_ENV).as_deref() == Ok("blobs");
    let mut builder = Engine::builder()
        .durability(Durability::Immediate)
        // No background purge: every write below belongs to a call.
        .purge_interval(None);
    if blobs {
        builder = builder.segment_size(512 * 1024);
    }
    let engine = call("open", || builder.open(&path).map(|engine| (engine, true))).unwrap();
    let lamps = call("register", || {
        engine.register(lamp()).map(|lamps| (lamps, true))
    })
    .unwrap();
    mixed_calls(&engine, &lamps, SINGLE_CALLS, blobs);
    std::thread::scope(|scope| {
        for thread in 1..=THREADS as u64 {
            let (engine, lamps) = (&engine, &lamps);
            scope.spawn(move || changing_calls(engine, lamps, thread, CALLS_PER_THREAD, blobs));
        }
    });
    drop(lamps);
    drop(engine);
    say("DONE\n");
}

// ---------------------------------------------------------------- the parent

/// Whether strace can trace here; `Err` says why not.
fn strace_usable() -> Result<(), String> {
    match Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err("strace not found".to_owned())
        }
        Err(error) => Err(format!("strace cannot be run: {error}")),
        Ok(output) if !output.status.success() => Err(format!(
            "strace cannot trace here: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

fn run_variant(variant: &str) -> Option<trace::Report> {
    if std::env::var(CHILD_ENV).is_ok() {
        return None;
    }
    if let Err(why) = strace_usable() {
        assert!(
            std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
            "{REQUIRE_ENV}=1 but {why}"
        );
        eprintln!("skipping: {why}");
        return None;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let base: PathBuf = dir.path().canonicalize().unwrap();
    // A directory the engine creates, so its creation is checked too.
    let root = base.join("store");
    let trace_file = base.join("trace.txt");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-ttt", "-y", "-s", "48", "-e"])
        .arg(format!("trace={}", TRACED.replace(' ', "")))
        .arg("-o")
        .arg(&trace_file)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durable_files_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &root)
        .env(VARIANT_ENV, variant)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting strace");
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut acks = 0usize;
    let mut child_pid = None;
    let mut failure = None;
    let mut done = false;
    let status = loop {
        match received.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if line.starts_with("ACK ") {
                    acks += 1;
                } else if let Some(pid) = line.strip_prefix("PID ") {
                    child_pid = Some(pid.trim().to_owned());
                } else if line.starts_with("CHILD-FAIL") {
                    failure = Some(line);
                } else if line == "DONE" {
                    done = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break child.wait().unwrap(),
        }
        if started.elapsed() > WATCHDOG {
            if let Some(pid) = &child_pid {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "variant {variant}: the traced child did not finish within {WATCHDOG:?} \
                 ({acks} acknowledgements so far); killed it"
            );
        }
    };
    let errors = errors.join().unwrap_or_default();
    assert!(
        failure.is_none() && status.success() && done,
        "variant {variant}: the child failed ({status}): {failure:?}\n{errors}"
    );
    let text = std::fs::read(&trace_file).expect("reading the trace");
    let text = String::from_utf8_lossy(&text);
    let report = trace::check(&trace::parse(&text), root.to_str().unwrap());
    eprintln!(
        "durable_files {variant}: {} ACKs ({} of changes, {} read-only; {} writes unsynced at \
         read-only ACKs, checked at the next change), {} writes to {} files, {} fsync/fdatasync \
         ({} of directories), {} entries created, {} blob files ({} writes), \
         {} sync_file_range ignored, {} removed, {} data file syncs, {} (ACK, write) pairs excused \
         (another call in flight), {:.1} s",
        report.acks,
        report.changing_acks,
        report.read_only_acks,
        report.unsynced_at_read_only,
        report.writes,
        report.files_written,
        report.syncs,
        report.directory_syncs,
        report.created,
        report.blob_files,
        report.blob_writes,
        report.sync_file_ranges,
        report.removed,
        report.data_file_syncs,
        report.excused,
        started.elapsed().as_secs_f64()
    );
    if !report.violations.is_empty() {
        // Keep the trace for a closer look.
        let kept = dir.keep();
        eprintln!("the trace is kept in {}", kept.join("trace.txt").display());
        let shown: Vec<&String> = report.violations.iter().take(10).collect();
        panic!(
            "variant {variant}: {} durability violations (first {}):\n{}",
            report.violations.len(),
            shown.len(),
            shown
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(
        report.acks, acks,
        "variant {variant}: every ACK the child printed is in the trace"
    );
    // Opening, registering, then at least one call per step.
    let expected = (2 + SINGLE_CALLS + THREADS as u64 * CALLS_PER_THREAD) as usize;
    assert!(
        acks >= expected,
        "variant {variant}: {acks} ACKs, expected at least {expected}"
    );
    assert!(
        report.writes > 0 && report.syncs > 0,
        "variant {variant}: nothing traced"
    );
    assert!(Path::new(&root).join("db").exists());
    Some(report)
}

/// A new database: 8 MiB segments, no blob files.
#[test]
fn immediate_is_durable_past_power_loss() {
    if let Some(report) = run_variant("new") {
        assert_eq!(report.blob_files, 0, "a new database writes no blob files");
    }
}

/// An older database (512 KiB segments) with 16-30 KiB payloads: sled writes
/// pages to `blobs/` files, which must be synced with their directory.
#[test]
fn immediate_is_durable_past_power_loss_with_blob_files() {
    if let Some(report) = run_variant("blobs") {
        assert!(
            report.blob_files > 0,
            "the variant with small segments must make sled write blob files, else it proves nothing"
        );
    }
}
