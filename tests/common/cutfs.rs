//! cutfs: a FUSE filesystem for power-cut tests, in the spirit of LazyFS.
//!
//! The whole filesystem lives in this process's memory as two images:
//! *current*, what processes see, and *durable*, what would survive a power cut.
//! Only these reach the durable image:
//!
//! - `fsync`/`fdatasync` of a file: that file's bytes and size (not its name);
//! - `fsync` of a directory: that directory's entries, name → inode (a new,
//!   renamed or removed name survives only once its directory is synced; a file
//!   whose name was synced but whose data was not comes back empty).
//!
//! `sync_file_range` does not count: it is not a FUSE operation at all (writes
//! reach us at once, there is no writeback cache), so it leaves nothing to see.
//! `sync()`/`syncfs()` would count for everything, but the kernel forwards
//! `syncfs` only to virtiofs (`fc->sync_fs`), never to a `/dev/fuse` server, so
//! it cannot be observed here; neither the relay nor sled calls them (the
//! harness models the administrator's `sync` with [`CutFs::sync_everything`]).
//!
//! [`CutFs::cut`] unmounts (the relay must be SIGKILLed first), replaces the
//! current image by what survives, and mounts again. Two modes:
//!
//! - [`Mode::Strict`] (a): every unsynced byte and every unsynced name is lost.
//! - [`Mode::Reordered`] (b), a journaling filesystem (ext4, xfs): metadata
//!   operations (create, mkdir, rename, unlink, rmdir, truncate) survive as an
//!   ordered prefix. Every fsync of anything commits the journal (all metadata
//!   before it survives); of the operations since, a random prefix survives.
//!   File data is what the file's last fsync saved plus a random subset of the
//!   4 KiB pages written since, taken at their latest content; the last
//!   surviving page of each file may be torn at a 512-byte boundary (its first
//!   sectors new, the rest old or zeros).
//!
//! Inode numbers are stable across cuts. Mounted without the writeback cache;
//! locks (`flock`, `fcntl`) are left to the kernel, local to the mount, as they
//! would not survive a cut anyway. Every choice of a cut comes from its seed.
//!
//! Include it with `#[path = "common/cutfs.rs"] mod cutfs;`. Mounting needs
//! root (or `fusermount3`) and `/dev/fuse`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

pub const PAGE: usize = 4096;
pub const SECTOR: usize = 512;
const ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(1);

/// What survives a cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// (a) Only what was fsynced: every unsynced byte and name is lost.
    Strict,
    /// (b) A journaling filesystem: an ordered prefix of the metadata
    /// operations since the last fsync, a random subset of the unsynced pages,
    /// the last one of a file possibly torn.
    Reordered,
}

/// What one cut did.
#[derive(Clone, Debug)]
pub struct CutReport {
    pub mode: Mode,
    pub seed: u64,
    /// Metadata operations since the last fsync, and how many survived.
    pub pending_meta: usize,
    pub kept_meta: usize,
    /// Unsynced 4 KiB pages, and how many survived (mode b).
    pub dirty_pages: usize,
    pub kept_pages: usize,
    /// Pages torn at a sector boundary (mode b).
    pub torn_pages: usize,
    /// Paths that existed before the cut and do not after it.
    pub lost_paths: Vec<String>,
    /// Paths that did not exist before the cut and do after it (a removed or
    /// renamed-away name coming back).
    pub revived_paths: Vec<String>,
    /// Files present before and after whose content changed.
    pub changed_files: Vec<String>,
}

/// Counters of the operations that reached the filesystem.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub writes: u64,
    pub bytes_written: u64,
    pub fsyncs: u64,
    pub fdatasyncs: u64,
    pub fsyncdirs: u64,
    pub creates: u64,
    pub mkdirs: u64,
    pub renames: u64,
    pub unlinks: u64,
    pub rmdirs: u64,
    pub truncates: u64,
    pub cuts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Files: the bytes.
    data: Vec<u8>,
    /// Directories: name → inode.
    entries: BTreeMap<OsString, u64>,
    /// Directories: the parent (for `..`).
    parent: u64,
    /// Whether a directory entry names it (an unlinked file may still be open).
    linked: bool,
}

impl Node {
    fn new(kind: Kind, perm: u16, uid: u32, gid: u32, parent: u64) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            data: Vec::new(),
            entries: BTreeMap::new(),
            parent,
            linked: true,
        }
    }

    /// The same inode without content: what a synced name of an unsynced
    /// inode brings back.
    fn empty_like(&self) -> Node {
        Node {
            data: Vec::new(),
            entries: BTreeMap::new(),
            ..self.clone()
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let size = match self.kind {
            Kind::File => self.data.len() as u64,
            Kind::Dir => 4096,
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: UNIX_EPOCH,
            kind: match self.kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            },
            perm: self.perm,
            nlink: match self.kind {
                Kind::File => u32::from(self.linked),
                Kind::Dir => 2,
            },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        }
    }
}

/// A metadata operation, as a journal records it.
#[derive(Clone, Debug)]
enum MetaOp {
    Create {
        parent: u64,
        name: OsString,
        ino: u64,
        kind: Kind,
    },
    Remove {
        parent: u64,
        name: OsString,
    },
    Rename {
        parent: u64,
        name: OsString,
        newparent: u64,
        newname: OsString,
    },
    Truncate {
        ino: u64,
        size: u64,
    },
}

/// The namespace alone (inode kinds and directory entries), as a journal
/// replays it.
#[derive(Clone, Debug)]
struct JNode {
    kind: Kind,
    entries: BTreeMap<OsString, u64>,
}

type Namespace = HashMap<u64, JNode>;

fn apply(ns: &mut Namespace, op: &MetaOp) {
    match op {
        MetaOp::Create {
            parent,
            name,
            ino,
            kind,
        } => {
            ns.insert(
                *ino,
                JNode {
                    kind: *kind,
                    entries: BTreeMap::new(),
                },
            );
            if let Some(p) = ns.get_mut(parent) {
                p.entries.insert(name.clone(), *ino);
            }
        }
        MetaOp::Remove { parent, name } => {
            if let Some(p) = ns.get_mut(parent) {
                p.entries.remove(name);
            }
        }
        MetaOp::Rename {
            parent,
            name,
            newparent,
            newname,
        } => {
            let moved = ns.get_mut(parent).and_then(|p| p.entries.remove(name));
            if let (Some(ino), Some(np)) = (moved, ns.get_mut(newparent)) {
                np.entries.insert(newname.clone(), ino);
            }
        }
        MetaOp::Truncate { .. } => {}
    }
}

/// xorshift64*: the cut's choices, from its seed.
struct CutRng(u64);

impl CutRng {
    fn new(seed: u64) -> CutRng {
        CutRng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct State {
    /// What processes see, orphans (unlinked, still open) included.
    cur: HashMap<u64, Node>,
    /// What the explicit syncs saved: files' data, directories' entries.
    dur: HashMap<u64, Node>,
    /// Pages written (or changed by a truncate) since the file's last fsync.
    dirty: HashMap<u64, BTreeSet<usize>>,
    /// Truncates since the file's last fsync: (sequence, size).
    truncs: HashMap<u64, Vec<(u64, u64)>>,
    /// The namespace as of the last journal commit (any fsync).
    jns: Namespace,
    /// Metadata operations since then, with their sequence numbers.
    pending: Vec<(u64, MetaOp)>,
    /// Inodes removed from `cur` since the last commit: a cut in mode (b) may
    /// bring them back.
    graveyard: HashMap<u64, Node>,
    open: HashMap<u64, u32>,
    seq: u64,
    next_ino: u64,
    next_fh: u64,
    stats: Stats,
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

impl State {
    fn fresh() -> State {
        let mut s = State {
            next_ino: ROOT + 1,
            next_fh: 1,
            ..State::default()
        };
        let root = Node::new(Kind::Dir, 0o755, 0, 0, ROOT);
        s.cur.insert(ROOT, root.clone());
        s.dur.insert(ROOT, root);
        s.jns = namespace_of(&s.cur);
        s
    }

    fn log(&mut self, op: MetaOp) {
        self.seq += 1;
        if let MetaOp::Truncate { ino, size } = op {
            self.truncs.entry(ino).or_default().push((self.seq, size));
        }
        self.pending.push((self.seq, op));
    }

    /// A journal commit: every metadata operation so far is on disk.
    fn commit(&mut self) {
        for (_, op) in std::mem::take(&mut self.pending) {
            apply(&mut self.jns, &op);
        }
        self.graveyard.clear();
    }

    fn dir(&self, ino: u64) -> Result<&Node, Errno> {
        match self.cur.get(&ino) {
            Some(n) if n.kind == Kind::Dir => Ok(n),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<Option<u64>, Errno> {
        Ok(self.dir(parent)?.entries.get(name).copied())
    }

    fn mark_dirty(&mut self, ino: u64, from: usize, to: usize) {
        if to <= from {
            return;
        }
        let pages = self.dirty.entry(ino).or_default();
        for p in from / PAGE..=(to - 1) / PAGE {
            pages.insert(p);
        }
    }

    /// A new file or directory `name` in `parent`, owned by the caller, with
    /// the permission bits of `mode`; counted in the stats.
    fn create_node(
        &mut self,
        kind: Kind,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Result<u64, Errno> {
        let perm = (mode & 0o7777) as u16;
        let ino = self.new_node(
            parent,
            name,
            Node::new(kind, perm, req.uid(), req.gid(), parent),
        )?;
        match kind {
            Kind::File => self.stats.creates += 1,
            Kind::Dir => self.stats.mkdirs += 1,
        }
        Ok(ino)
    }

    /// Answers a mknod or mkdir with the new node's attributes.
    fn reply_new(&self, made: Result<u64, Errno>, reply: ReplyEntry) {
        match made.map(|ino| self.cur.get(&ino).map(|n| n.attr(ino))) {
            Ok(Some(attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Ok(None) => reply.error(Errno::EIO),
            Err(e) => reply.error(e),
        }
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.child(parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let kind = node.kind;
        self.cur.insert(ino, node);
        let p = self.cur.get_mut(&parent).expect("parent checked");
        p.entries.insert(name.to_os_string(), ino);
        p.mtime = SystemTime::now();
        self.log(MetaOp::Create {
            parent,
            name: name.to_os_string(),
            ino,
            kind,
        });
        Ok(ino)
    }

    /// The inode lost its last name: gone once no one has it open.
    /// Whether a rename may put `ino` in the place of `target`, as rename(2)
    /// decides by the two kinds.
    fn may_replace(&self, ino: u64, target: u64) -> Result<(), Errno> {
        let (Some(src), Some(dst)) = (self.cur.get(&ino), self.cur.get(&target)) else {
            return Err(Errno::EIO);
        };
        match (src.kind, dst.kind) {
            (Kind::File, Kind::Dir) => Err(Errno::EISDIR),
            (Kind::Dir, Kind::File) => Err(Errno::ENOTDIR),
            (Kind::Dir, Kind::Dir) if !dst.entries.is_empty() => Err(Errno::ENOTEMPTY),
            _ => Ok(()),
        }
    }

    fn unlinked(&mut self, ino: u64) {
        if let Some(n) = self.cur.get_mut(&ino) {
            n.linked = false;
        }
        self.drop_if_unused(ino);
    }

    fn drop_if_unused(&mut self, ino: u64) {
        let unused = self.cur.get(&ino).is_some_and(|n| !n.linked)
            && self.open.get(&ino).copied().unwrap_or(0) == 0;
        if unused {
            if let Some(n) = self.cur.remove(&ino) {
                self.graveyard.insert(ino, n);
            }
        }
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let node = self.cur.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if node.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        let old = node.data.len();
        let new = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
        node.data.resize(new, 0);
        node.mtime = SystemTime::now();
        node.ctime = node.mtime;
        self.mark_dirty(ino, old.min(new), old.max(new));
        self.log(MetaOp::Truncate { ino, size });
        self.stats.truncates += 1;
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let node = self.cur.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if node.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        let start = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
        let end = start + data.len();
        if node.data.len() < end {
            node.data.resize(end, 0);
        }
        node.data[start..end].copy_from_slice(data);
        node.mtime = SystemTime::now();
        self.mark_dirty(ino, start, end);
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        Ok(data.len())
    }

    /// fsync/fdatasync of a file: its bytes and size are on disk.
    fn fsync_file(&mut self, ino: u64) -> Result<(), Errno> {
        self.commit();
        let node = self.cur.get(&ino).ok_or(Errno::ENOENT)?;
        if node.kind == Kind::Dir {
            return self.fsync_dir(ino);
        }
        let dirty = self.dirty.remove(&ino).unwrap_or_default();
        let d = self.dur.entry(ino).or_insert_with(|| node.empty_like());
        let len = node.data.len();
        // Pages that were never dirtied are the same in both images.
        d.data.resize(len, 0);
        for p in dirty {
            let s = p * PAGE;
            if s >= len {
                continue;
            }
            let e = (s + PAGE).min(len);
            d.data[s..e].copy_from_slice(&node.data[s..e]);
        }
        d.perm = node.perm;
        d.uid = node.uid;
        d.gid = node.gid;
        d.mtime = node.mtime;
        self.truncs.remove(&ino);
        Ok(())
    }

    /// fsync of a directory: its entries are on disk; an entry's inode that
    /// was never synced comes back empty.
    fn fsync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        self.commit();
        let node = self.cur.get(&ino).ok_or(Errno::ENOENT)?;
        for child in node.entries.values() {
            if !self.dur.contains_key(child) {
                if let Some(c) = self.cur.get(child) {
                    self.dur.insert(*child, c.empty_like());
                }
            }
        }
        let entries = node.entries.clone();
        let d = self.dur.entry(ino).or_insert_with(|| node.empty_like());
        d.entries = entries;
        d.perm = node.perm;
        Ok(())
    }

    /// `sync`: everything is on disk.
    fn sync_everything(&mut self) {
        self.commit();
        self.dur = reachable(&self.cur);
        self.dirty.clear();
        self.truncs.clear();
    }

    fn cut(&mut self, mode: Mode, seed: u64) -> CutReport {
        let mut rng = CutRng::new(seed);
        let before = paths_of(&self.cur);
        let pending_meta = self.pending.len();
        let dirty_pages: usize = self.dirty.values().map(BTreeSet::len).sum();
        let mut report = CutReport {
            mode,
            seed,
            pending_meta,
            kept_meta: 0,
            dirty_pages,
            kept_pages: 0,
            torn_pages: 0,
            lost_paths: Vec::new(),
            revived_paths: Vec::new(),
            changed_files: Vec::new(),
        };
        let after = match mode {
            Mode::Strict => reachable(&self.dur),
            Mode::Reordered => self.reordered(&mut rng, &mut report),
        };
        let survived = paths_of(&after);
        for (path, ino) in &before {
            match survived.get(path) {
                None => report.lost_paths.push(path.clone()),
                Some(i) if i == ino => {
                    let (a, b) = (&self.cur[ino], &after[ino]);
                    if a.kind == Kind::File && a.data != b.data {
                        report.changed_files.push(path.clone());
                    }
                }
                Some(_) => report.changed_files.push(path.clone()),
            }
        }
        report.revived_paths = survived
            .keys()
            .filter(|p| !before.contains_key(*p))
            .cloned()
            .collect();
        self.cur = after.clone();
        self.dur = after;
        self.jns = namespace_of(&self.cur);
        self.pending.clear();
        self.dirty.clear();
        self.truncs.clear();
        self.graveyard.clear();
        self.open.clear();
        self.stats.cuts += 1;
        report
    }

    fn reordered(&mut self, rng: &mut CutRng, report: &mut CutReport) -> HashMap<u64, Node> {
        let k = rng.below(self.pending.len() as u64 + 1) as usize;
        report.kept_meta = k;
        let limit = self.pending.get(k).map_or(u64::MAX, |(seq, _)| *seq);
        let mut ns = self.jns.clone();
        for (_, op) in &self.pending[..k] {
            apply(&mut ns, op);
        }
        // How likely an unsynced page is to have reached the disk: from none
        // to all, chosen per cut.
        let keep_per_mille = [0, 100, 300, 500, 700, 900, 1000][rng.below(7) as usize];
        let mut out = HashMap::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if out.contains_key(&ino) {
                continue;
            }
            let Some(j) = ns.get(&ino) else { continue };
            let latest = self
                .cur
                .get(&ino)
                .or_else(|| self.graveyard.get(&ino))
                .or_else(|| self.dur.get(&ino));
            let Some(latest) = latest else { continue };
            let mut node = latest.empty_like();
            node.linked = true;
            match j.kind {
                Kind::Dir => {
                    node.kind = Kind::Dir;
                    node.entries = j.entries.clone();
                    stack.extend(node.entries.values().copied());
                }
                Kind::File => {
                    node.kind = Kind::File;
                    node.data =
                        self.file_after_cut(ino, latest, limit, keep_per_mille, rng, report);
                }
            }
            out.insert(ino, node);
        }
        let present: BTreeSet<u64> = out.keys().copied().collect();
        for n in out.values_mut() {
            n.entries.retain(|_, i| present.contains(i));
        }
        fix_parents(&mut out);
        out
    }

    /// A file's bytes after a cut: the synced bytes, the truncations the kept
    /// journal prefix replays, then a random subset of the unsynced pages
    /// (the last one possibly torn at a sector boundary).
    fn file_after_cut(
        &self,
        ino: u64,
        latest: &Node,
        limit: u64,
        keep_per_mille: u64,
        rng: &mut CutRng,
        report: &mut CutReport,
    ) -> Vec<u8> {
        let mut data = self
            .dur
            .get(&ino)
            .map(|d| d.data.clone())
            .unwrap_or_default();
        for (seq, size) in self.truncs.get(&ino).into_iter().flatten() {
            if *seq < limit {
                data.resize(*size as usize, 0);
            }
        }
        let pages: Vec<usize> = self
            .dirty
            .get(&ino)
            .into_iter()
            .flatten()
            .copied()
            .filter(|_| rng.below(1000) < keep_per_mille)
            .collect();
        report.kept_pages += pages.len();
        let src = &latest.data;
        for (i, &p) in pages.iter().enumerate() {
            let start = p * PAGE;
            if start >= src.len() {
                continue;
            }
            let page_end = (start + PAGE).min(src.len());
            let mut copy_end = page_end;
            if i + 1 == pages.len() && page_end - start > SECTOR && rng.below(2) == 0 {
                let sectors = (page_end - start).div_ceil(SECTOR) as u64;
                let keep = 1 + rng.below(sectors - 1) as usize;
                copy_end = start + keep * SECTOR;
                report.torn_pages += 1;
            }
            if data.len() < page_end {
                data.resize(page_end, 0);
            }
            data[start..copy_end].copy_from_slice(&src[start..copy_end]);
        }
        data
    }
}

/// The namespace of an image.
fn namespace_of(nodes: &HashMap<u64, Node>) -> Namespace {
    nodes
        .iter()
        .map(|(ino, n)| {
            (
                *ino,
                JNode {
                    kind: n.kind,
                    entries: n.entries.clone(),
                },
            )
        })
        .collect()
}

/// The inodes reachable from the root, with parents set and nothing unlinked.
fn reachable(nodes: &HashMap<u64, Node>) -> HashMap<u64, Node> {
    let mut out = HashMap::new();
    let mut stack = vec![ROOT];
    while let Some(ino) = stack.pop() {
        if out.contains_key(&ino) {
            continue;
        }
        let Some(n) = nodes.get(&ino) else { continue };
        let mut n = n.clone();
        n.linked = true;
        stack.extend(n.entries.values().copied());
        out.insert(ino, n);
    }
    // A synced entry whose inode is missing cannot happen (fsync_dir inserts
    // it), but never leave a dangling name.
    let present: BTreeSet<u64> = out.keys().copied().collect();
    for n in out.values_mut() {
        n.entries.retain(|_, i| present.contains(i));
    }
    fix_parents(&mut out);
    out
}

fn fix_parents(nodes: &mut HashMap<u64, Node>) {
    let links: Vec<(u64, u64)> = nodes
        .iter()
        .flat_map(|(p, n)| n.entries.values().map(move |c| (*c, *p)))
        .collect();
    for (child, parent) in links {
        if let Some(c) = nodes.get_mut(&child) {
            c.parent = parent;
        }
    }
}

/// Every path (relative to the root) of an image, to its inode.
fn paths_of(nodes: &HashMap<u64, Node>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(ROOT, String::new())];
    while let Some((ino, prefix)) = stack.pop() {
        let Some(n) = nodes.get(&ino) else { continue };
        for (name, child) in &n.entries {
            let path = format!("{prefix}/{}", name.to_string_lossy());
            out.insert(path.clone(), *child);
            if nodes.get(child).is_some_and(|c| c.kind == Kind::Dir) {
                stack.push((*child, path));
            }
        }
    }
    out
}

/// The FUSE side: every operation takes the state's lock.
struct Ops {
    state: Arc<Mutex<State>>,
}

impl Ops {
    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for Ops {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = self.st();
        match st.child(parent.0, name) {
            Ok(Some(ino)) => match st.cur.get(&ino) {
                Some(n) => reply.entry(&TTL, &n.attr(ino), Generation(0)),
                None => reply.error(Errno::EIO),
            },
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.st();
        match st.cur.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &n.attr(ino.0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.st();
        let ino = ino.0;
        if !st.cur.contains_key(&ino) {
            return reply.error(Errno::ENOENT);
        }
        if let Some(size) = size {
            if let Err(e) = st.truncate(ino, size) {
                return reply.error(e);
            }
        }
        let n = st.cur.get_mut(&ino).expect("checked");
        if let Some(mode) = mode {
            n.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            n.uid = uid;
        }
        if let Some(gid) = gid {
            n.gid = gid;
        }
        if let Some(t) = atime {
            n.atime = time_of(t);
        }
        if let Some(t) = mtime {
            n.mtime = time_of(t);
        }
        n.ctime = SystemTime::now();
        reply.attr(&TTL, &n.attr(ino));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let mut st = self.st();
        let made = st.create_node(Kind::File, req, parent.0, name, mode & !umask);
        st.reply_new(made, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.st();
        let made = st.create_node(Kind::Dir, req, parent.0, name, mode & !umask);
        st.reply_new(made, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let ino = match st.child(parent.0, name) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match st.cur.get(&ino) {
            Some(n) if n.kind == Kind::Dir => return reply.error(Errno::EISDIR),
            Some(_) => {}
            None => return reply.error(Errno::EIO),
        }
        let Some(p) = st.cur.get_mut(&parent.0) else {
            return reply.error(Errno::EIO);
        };
        p.entries.remove(name);
        p.mtime = SystemTime::now();
        st.log(MetaOp::Remove {
            parent: parent.0,
            name: name.to_os_string(),
        });
        st.stats.unlinks += 1;
        st.unlinked(ino);
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let ino = match st.child(parent.0, name) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        let Some(n) = st.cur.get(&ino) else {
            return reply.error(Errno::EIO);
        };
        if n.kind != Kind::Dir {
            return reply.error(Errno::ENOTDIR);
        }
        if !n.entries.is_empty() {
            return reply.error(Errno::ENOTEMPTY);
        }
        st.cur
            .get_mut(&parent.0)
            .expect("checked")
            .entries
            .remove(name);
        st.log(MetaOp::Remove {
            parent: parent.0,
            name: name.to_os_string(),
        });
        st.stats.rmdirs += 1;
        st.unlinked(ino);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let ino = match st.child(parent.0, name) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        let target = match st.child(newparent.0, newname) {
            Ok(t) => t,
            Err(e) => return reply.error(e),
        };
        if let Some(t) = target {
            if t == ino {
                return reply.ok();
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            if let Err(e) = st.may_replace(ino, t) {
                return reply.error(e);
            }
        }
        st.cur
            .get_mut(&parent.0)
            .expect("checked")
            .entries
            .remove(name);
        st.cur
            .get_mut(&newparent.0)
            .expect("checked")
            .entries
            .insert(newname.to_os_string(), ino);
        if let Some(n) = st.cur.get_mut(&ino) {
            if n.kind == Kind::Dir {
                n.parent = newparent.0;
            }
            n.ctime = SystemTime::now();
        }
        st.log(MetaOp::Rename {
            parent: parent.0,
            name: name.to_os_string(),
            newparent: newparent.0,
            newname: newname.to_os_string(),
        });
        st.stats.renames += 1;
        if let Some(t) = target {
            st.unlinked(t);
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.st();
        if !st.cur.contains_key(&ino.0) {
            return reply.error(Errno::ENOENT);
        }
        let is_file = st.cur.get(&ino.0).is_some_and(|n| n.kind == Kind::File);
        if flags.0 & libc::O_TRUNC != 0 && is_file {
            if let Err(e) = st.truncate(ino.0, 0) {
                return reply.error(e);
            }
        }
        *st.open.entry(ino.0).or_default() += 1;
        let fh = st.next_fh;
        st.next_fh += 1;
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.st();
        let ino = match st.child(parent.0, name) {
            Ok(Some(_)) if flags & libc::O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Ok(Some(ino)) => {
                if st.cur.get(&ino).is_none_or(|n| n.kind == Kind::Dir) {
                    return reply.error(Errno::EISDIR);
                }
                if flags & libc::O_TRUNC != 0 {
                    if let Err(e) = st.truncate(ino, 0) {
                        return reply.error(e);
                    }
                }
                ino
            }
            Ok(None) => match st.create_node(Kind::File, req, parent.0, name, mode & !umask) {
                Ok(ino) => ino,
                Err(e) => return reply.error(e),
            },
            Err(e) => return reply.error(e),
        };
        *st.open.entry(ino).or_default() += 1;
        let fh = st.next_fh;
        st.next_fh += 1;
        let Some(attr) = st.cur.get(&ino).map(|n| n.attr(ino)) else {
            return reply.error(Errno::EIO);
        };
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(fh),
            FopenFlags::empty(),
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.st();
        let Some(n) = st.cur.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind == Kind::Dir {
            return reply.error(Errno::EISDIR);
        }
        let start = (offset as usize).min(n.data.len());
        let end = (start + size as usize).min(n.data.len());
        reply.data(&n.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.st().write(ino.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        if let Some(c) = st.open.get_mut(&ino.0) {
            *c = c.saturating_sub(1);
        }
        st.drop_if_unused(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        if datasync {
            st.stats.fdatasyncs += 1;
        } else {
            st.stats.fsyncs += 1;
        }
        match st.fsync_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.st();
        let dir = match st.dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (dir.parent, FileType::Directory, "..".into()),
        ];
        for (name, child) in &dir.entries {
            let kind = match st.cur.get(child).map(|c| c.kind) {
                Some(Kind::Dir) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        st.stats.fsyncdirs += 1;
        match st.fsync_dir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.st();
        let used: u64 = st
            .cur
            .values()
            .map(|n| (n.data.len() as u64).div_ceil(PAGE as u64))
            .sum();
        let blocks = 1u64 << 22; // 16 GiB
        let free = blocks.saturating_sub(used);
        reply.statfs(
            blocks,
            free,
            free,
            1 << 20,
            1 << 19,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut st = self.st();
        let len = st.cur.get(&ino.0).map_or(0, |n| n.data.len() as u64);
        if offset + length > len {
            if let Err(e) = st.truncate(ino.0, offset + length) {
                return reply.error(e);
            }
        }
        reply.ok();
    }
}

/// A mounted cutfs. Dropping it unmounts.
pub struct CutFs {
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    /// The FUSE connection's number under /sys/fs/fuse/connections.
    conn: Option<u64>,
}

impl CutFs {
    /// Mounts an empty cutfs on `mountpoint` (an existing, empty directory).
    pub fn mount(mountpoint: &Path) -> io::Result<CutFs> {
        let mut fs = CutFs {
            mountpoint: mountpoint.canonicalize()?,
            state: Arc::new(Mutex::new(State::fresh())),
            session: None,
            conn: None,
        };
        fs.remount()?;
        Ok(fs)
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    pub fn is_mounted(&self) -> bool {
        self.session.is_some()
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mounts again (after [`CutFs::unmount`]), with the state as it is.
    pub fn remount(&mut self) -> io::Result<()> {
        if self.session.is_some() {
            return Ok(());
        }
        let before = std::fs::metadata(&self.mountpoint)?.dev();
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("cutfs".into()),
            MountOption::Subtype("cutfs".into()),
        ];
        config.n_threads = Some(2);
        let ops = Ops {
            state: self.state.clone(),
        };
        let session = fuser::spawn_mount(ops, &self.mountpoint, &config)?;
        self.session = Some(session);
        let dev = std::fs::metadata(&self.mountpoint)?.dev();
        if dev == before {
            let _ = self.unmount();
            return Err(io::Error::other("cutfs: the mount did not take"));
        }
        self.conn = Some(((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u64);
        Ok(())
    }

    /// Unmounts; every process using the mount must have exited. Waits for the
    /// FUSE session to end, aborting the connection if it does not.
    pub fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let path = CString::new(self.mountpoint.as_os_str().as_bytes())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut unmounted = false;
        let mut last = None;
        for _ in 0..100 {
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
                unmounted = true;
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) {
                last = Some(e);
                break;
            }
            last = Some(e);
            std::thread::sleep(Duration::from_millis(30));
        }
        if !unmounted {
            eprintln!(
                "cutfs: umount {} failed ({last:?}); detaching it",
                self.mountpoint.display()
            );
            // SAFETY: as above.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(session.join());
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            if let Some(conn) = self.conn {
                eprintln!("cutfs: session did not end; aborting connection {conn}");
                let _ = std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
            }
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| io::Error::other("cutfs: the FUSE session did not end"))?
                .ok();
        }
        if unmounted {
            Ok(())
        } else {
            Err(last.unwrap_or_else(|| io::Error::other("umount failed")))
        }
    }

    /// A power cut: unmounts (the processes using the filesystem must have
    /// been killed), keeps what survives under `mode` with the choices drawn
    /// from `seed`, and mounts again.
    pub fn cut(&mut self, mode: Mode, seed: u64) -> io::Result<CutReport> {
        // A detached (busy) mount still loses its unsynced state: the report
        // says what it was, and the mount after it starts from the durable one.
        let unmounted = self.unmount();
        let report = self.st().cut(mode, seed);
        self.remount()?;
        unmounted.map(|()| report)
    }

    /// `sync`: makes everything durable, as an administrator's `sync` or the
    /// time between installing a package and the first power cut would.
    pub fn sync_everything(&self) {
        self.st().sync_everything();
    }

    pub fn stats(&self) -> Stats {
        self.st().stats.clone()
    }

    /// Bytes held in memory by the current image (for reports).
    pub fn bytes(&self) -> usize {
        self.st().cur.values().map(|n| n.data.len()).sum()
    }
}

impl Drop for CutFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("cutfs: unmount of {}: {e}", self.mountpoint.display());
        }
    }
}

/// Mounts a cutfs on `mountpoint` for a test: `None` (with a loud message) if
/// FUSE is not available here, unless `CI=true`, where that fails the test.
pub fn mount_or_skip(mountpoint: &Path, test: &str) -> Option<CutFs> {
    match CutFs::mount(mountpoint) {
        Ok(fs) => Some(fs),
        Err(e) => {
            let why = format!(
                "cutfs: cannot mount a FUSE filesystem on {} ({e}); needs /dev/fuse and root \
                 (or fusermount3 from the fuse3 package)",
                mountpoint.display()
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}: under CI=true the power-cut tests must run");
            }
            eprintln!("\n!!!!!!!!\n!!! SKIPPED {test}: {why}\n!!!!!!!!\n");
            None
        }
    }
}
