//! The power-cut filesystem's own tests (tests/common/cutfs.rs): what survives
//! a cut in each mode, through the kernel, with the same system calls the relay
//! and sled make. Each test mounts its own cutfs; outside CI a machine without
//! FUSE skips them loudly, under `CI=true` they fail.

#[path = "common/cutfs.rs"]
mod cutfs;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use cutfs::{CutFs, Mode, PAGE, SECTOR};

/// A cutfs on a fresh directory, with `d/` already durable (as a package's
/// directories are long before any cut).
struct Fixture {
    fs: CutFs,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).expect("mountpoint");
        let fs = cutfs::mount_or_skip(&mnt, test)?;
        fs::create_dir(fs.path().join("d")).expect("mkdir d");
        fs.sync_everything();
        Some(Fixture { fs, _dir: dir })
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.fs.path().join(rel)
    }

    fn cut(&mut self, mode: Mode, seed: u64) -> cutfs::CutReport {
        self.fs.cut(mode, seed).expect("cut")
    }

    fn names(&self, rel: &str) -> BTreeSet<String> {
        fs::read_dir(self.p(rel))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }
}

fn write(path: &Path, data: &[u8]) -> File {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(data).expect("write");
    f
}

fn sync_dir(path: &Path) {
    File::open(path)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync dir {}: {e}", path.display()));
}

fn read(path: &Path) -> Option<Vec<u8>> {
    fs::read(path).ok()
}

#[test]
fn strict_cut_loses_every_unsynced_byte_and_name() {
    let Some(mut fx) = Fixture::new("strict_cut_loses_every_unsynced_byte_and_name") else {
        return;
    };
    // Name synced, data not: comes back empty.
    drop(write(&fx.p("d/name-only"), b"name"));
    sync_dir(&fx.p("d"));
    // Both: survives whole.
    write(&fx.p("d/both"), b"both")
        .sync_data()
        .expect("fdatasync");
    // A synced file, changed afterwards: the change is lost, the old bytes stay.
    let mut changed = write(&fx.p("d/changed"), &[b'o'; 3 * PAGE]);
    changed.sync_all().expect("fsync");
    sync_dir(&fx.p("d"));
    // From here on the directory is never synced again.
    // Written, never synced.
    drop(write(&fx.p("d/unsynced"), b"gone"));
    // Data synced, name not.
    write(&fx.p("d/data-only"), b"data")
        .sync_all()
        .expect("fsync");
    // sync_file_range is not a sync: it never reaches a FUSE filesystem.
    let f = write(&fx.p("d/range-synced"), b"range");
    // SAFETY: a valid open descriptor.
    let r = unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            0,
            0,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    assert_eq!(r, 0, "sync_file_range: {}", std::io::Error::last_os_error());
    drop(f);
    changed.seek(SeekFrom::Start(PAGE as u64)).expect("seek");
    changed.write_all(b"new bytes").expect("write");
    changed.set_len(5 * PAGE as u64).expect("truncate up");
    drop(changed);
    // A new directory whose parent was not synced.
    fs::create_dir(fx.p("d/sub")).expect("mkdir");
    sync_dir(&fx.p("d/sub"));

    let stats = fx.fs.stats();
    assert!(stats.fsyncs >= 2 && stats.fdatasyncs >= 1, "{stats:?}");
    assert!(stats.fsyncdirs >= 3, "{stats:?}");

    let report = fx.cut(Mode::Strict, 1);
    assert_eq!(
        fx.names("d"),
        ["both", "changed", "name-only"]
            .map(String::from)
            .into_iter()
            .collect(),
        "{report:?}"
    );
    assert_eq!(read(&fx.p("d/both")).as_deref(), Some(&b"both"[..]));
    assert_eq!(read(&fx.p("d/name-only")).as_deref(), Some(&b""[..]));
    assert_eq!(read(&fx.p("d/changed")), Some(vec![b'o'; 3 * PAGE]));
    for gone in ["d/unsynced", "d/data-only", "d/range-synced", "d/sub"] {
        assert!(!fx.p(gone).exists(), "{gone} survived: {report:?}");
        assert!(
            report.lost_paths.contains(&format!("/{gone}")),
            "{gone}: {report:?}"
        );
    }
    assert!(report.changed_files.contains(&"/d/changed".to_string()));
    assert!(report.changed_files.contains(&"/d/name-only".to_string()));
}

#[test]
fn a_synced_file_survives_with_its_inode_number() {
    let Some(mut fx) = Fixture::new("a_synced_file_survives_with_its_inode_number") else {
        return;
    };
    let content: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 251) as u8).collect();
    // The pattern every careful writer uses: temporary name, fsync, rename,
    // fsync of the directory.
    let f = write(&fx.p("d/.tmp"), &content);
    f.sync_all().expect("fsync");
    drop(f);
    fs::rename(fx.p("d/.tmp"), fx.p("d/kept")).expect("rename");
    sync_dir(&fx.p("d"));
    let ino = fs::metadata(fx.p("d/kept")).expect("stat").ino();
    let dir_ino = fs::metadata(fx.p("d")).expect("stat").ino();
    for (i, mode) in [Mode::Strict, Mode::Reordered, Mode::Strict, Mode::Reordered]
        .into_iter()
        .enumerate()
    {
        let report = fx.cut(mode, 0x5eed + i as u64);
        assert_eq!(fx.names("d"), BTreeSet::from(["kept".to_string()]));
        assert_eq!(read(&fx.p("d/kept")), Some(content.clone()), "{report:?}");
        assert_eq!(fs::metadata(fx.p("d/kept")).expect("stat").ino(), ino);
        assert_eq!(fs::metadata(fx.p("d")).expect("stat").ino(), dir_ino);
        assert!(report.lost_paths.is_empty() && report.changed_files.is_empty());
    }
}

#[test]
fn a_rename_whose_directory_was_not_synced_comes_back_under_its_old_name_or_not_at_all() {
    let Some(mut fx) = Fixture::new("rename_without_directory_sync") else {
        return;
    };
    // Synced under its old name, renamed without syncing the directory.
    let f = write(&fx.p("d/old"), b"synced content");
    f.sync_all().expect("fsync");
    sync_dir(&fx.p("d"));
    drop(f);
    fs::rename(fx.p("d/old"), fx.p("d/new")).expect("rename");
    // Never had a synced name: synced data, renamed, directory not synced.
    let f = write(&fx.p("d/tmp"), b"never named");
    f.sync_all().expect("fsync");
    drop(f);
    fs::rename(fx.p("d/tmp"), fx.p("d/final")).expect("rename");
    let report = fx.cut(Mode::Strict, 7);
    assert_eq!(
        fx.names("d"),
        BTreeSet::from(["old".to_string()]),
        "{report:?}"
    );
    assert_eq!(
        read(&fx.p("d/old")).as_deref(),
        Some(&b"synced content"[..])
    );
    assert!(report.revived_paths.contains(&"/d/old".to_string()));

    // Once the directory is synced, the new name is the one that stays.
    fs::rename(fx.p("d/old"), fx.p("d/new")).expect("rename");
    sync_dir(&fx.p("d"));
    fx.cut(Mode::Strict, 8);
    assert_eq!(fx.names("d"), BTreeSet::from(["new".to_string()]));
    assert_eq!(
        read(&fx.p("d/new")).as_deref(),
        Some(&b"synced content"[..])
    );

    // In mode (b) the rename is one journal entry: one name or the other,
    // never both, never neither, and over many seeds both outcomes happen.
    let mut outcomes = BTreeSet::new();
    for seed in 0..40u64 {
        let (from, to) = if fx.p("d/new").exists() {
            ("new", "renamed")
        } else {
            ("renamed", "new")
        };
        fs::rename(fx.p(&format!("d/{from}")), fx.p(&format!("d/{to}"))).expect("rename");
        let report = fx.cut(Mode::Reordered, seed);
        let names = fx.names("d");
        assert_eq!(names.len(), 1, "seed {seed}: {names:?} {report:?}");
        let name = names.into_iter().next().expect("one name");
        assert!(name == from || name == to, "seed {seed}: {name}");
        assert_eq!(
            read(&fx.p(&format!("d/{name}"))).as_deref(),
            Some(&b"synced content"[..]),
            "seed {seed}"
        );
        outcomes.insert(name == to);
    }
    assert_eq!(outcomes.len(), 2, "mode (b) never varied: {outcomes:?}");
}

#[test]
fn reordered_cut_keeps_an_ordered_prefix_of_metadata_operations() {
    let Some(mut fx) = Fixture::new("reordered_cut_keeps_an_ordered_prefix") else {
        return;
    };
    let mut prefixes_seen = BTreeSet::new();
    for seed in 0..30u64 {
        let states = metadata_operations(&fx);
        let report = fx.cut(Mode::Reordered, seed);
        let names = fx.names("d");
        let k = states.iter().position(|s| *s == names);
        assert!(
            k.is_some(),
            "seed {seed}: {names:?} is no prefix of the operations {states:?}; {report:?}"
        );
        assert_eq!(k, Some(report.kept_meta), "seed {seed}: {report:?}");
        prefixes_seen.insert(report.kept_meta);
        assert_names_hold_their_own_files(&fx, &names, seed);
    }
    assert!(
        prefixes_seen.len() >= 4,
        "mode (b) kept too few different prefixes: {prefixes_seen:?}"
    );
}

/// From a clean, fully synced d/: creates, renames, unlinks, a rename over a
/// name and a mkdir, unsynced; the names in d/ before and after each one.
fn metadata_operations(fx: &Fixture) -> Vec<BTreeSet<String>> {
    for name in fx.names("d") {
        let path = fx.p(&format!("d/{name}"));
        if path.is_dir() {
            fs::remove_dir(&path).expect("clean");
        } else {
            fs::remove_file(&path).expect("clean");
        }
    }
    fx.fs.sync_everything();
    let mut states: Vec<BTreeSet<String>> = vec![BTreeSet::new()];
    let mut now = BTreeSet::new();
    for i in 0..6 {
        let name = format!("f{i}");
        drop(write(&fx.p(&format!("d/{name}")), name.as_bytes()));
        now.insert(name);
        states.push(now.clone());
    }
    fs::rename(fx.p("d/f0"), fx.p("d/g0")).expect("rename");
    now.remove("f0");
    now.insert("g0".into());
    states.push(now.clone());
    fs::remove_file(fx.p("d/f1")).expect("unlink");
    now.remove("f1");
    states.push(now.clone());
    fs::rename(fx.p("d/f2"), fx.p("d/f3")).expect("rename over");
    now.remove("f2");
    states.push(now.clone());
    fs::create_dir(fx.p("d/sub")).expect("mkdir");
    now.insert("sub".into());
    states.push(now.clone());
    states
}

fn assert_names_hold_their_own_files(fx: &Fixture, names: &BTreeSet<String>, seed: u64) {
    // A surviving name holds its own file (its data may not have made it:
    // never synced, so empty, or the page that reached the disk).
    for name in names
        .iter()
        .filter(|n| n.starts_with('f') || n.starts_with('g'))
    {
        let data = read(&fx.p(&format!("d/{name}"))).expect("read");
        // g0 is f0 renamed; f3 may have been replaced by f2's inode.
        let own: Vec<&[u8]> = match name.as_str() {
            "g0" => vec![b"f0"],
            "f3" => vec![b"f2", b"f3"],
            n => vec![n.as_bytes()],
        };
        assert!(
            data.is_empty() || own.contains(&data.as_slice()),
            "seed {seed}: {name} holds {data:?}"
        );
    }
}

#[test]
fn reordered_cut_keeps_whole_pages_and_tears_only_at_sector_boundaries() {
    let Some(mut fx) = Fixture::new("reordered_cut_keeps_whole_pages") else {
        return;
    };
    const PAGES: usize = 6;
    let (mut mixed, mut torn, mut all_old, mut all_new) = (0, 0, 0, 0);
    for seed in 0..40u64 {
        let mut f = write(&fx.p("d/pages"), &vec![b'A'; PAGES * PAGE]);
        f.sync_all().expect("fsync");
        sync_dir(&fx.p("d"));
        // Overwrite every page, unsynced.
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.write_all(&vec![b'B'; PAGES * PAGE]).expect("write");
        drop(f);
        let report = fx.cut(Mode::Reordered, seed);
        let mut data = Vec::new();
        File::open(fx.p("d/pages"))
            .expect("open")
            .read_to_end(&mut data)
            .expect("read");
        assert_eq!(data.len(), PAGES * PAGE, "seed {seed}: size changed");
        let mut torn_here = 0;
        for (i, page) in data.chunks(PAGE).enumerate() {
            let news = page.iter().take_while(|&&b| b == b'B').count();
            let rest = &page[news..];
            assert!(
                rest.iter().all(|&b| b == b'A'),
                "seed {seed} page {i}: not old bytes after new ones"
            );
            if news != 0 && news != PAGE {
                assert_eq!(news % SECTOR, 0, "seed {seed} page {i}: torn at {news}");
                torn_here += 1;
            }
        }
        assert!(torn_here <= 1, "seed {seed}: {torn_here} torn pages");
        assert_eq!(torn_here, report.torn_pages, "seed {seed}: {report:?}");
        torn += torn_here;
        match data.iter().filter(|&&b| b == b'B').count() {
            0 => all_old += 1,
            n if n == data.len() => all_new += 1,
            _ => mixed += 1,
        }
    }
    assert!(
        mixed > 0 && torn > 0 && all_old > 0 && all_new > 0,
        "mode (b) outcomes: mixed {mixed}, torn {torn}, all old {all_old}, all new {all_new}"
    );
}

#[test]
fn strict_cut_undoes_an_unsynced_truncate_and_unlink() {
    let Some(mut fx) = Fixture::new("strict_cut_undoes_an_unsynced_truncate_and_unlink") else {
        return;
    };
    let f = write(&fx.p("d/log"), &[b'L'; 2 * PAGE]);
    f.sync_all().expect("fsync");
    drop(write(&fx.p("d/victim"), b"victim"));
    fs::File::open(fx.p("d/victim"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    sync_dir(&fx.p("d"));
    f.set_len(10).expect("truncate");
    drop(f);
    fs::remove_file(fx.p("d/victim")).expect("unlink");
    let report = fx.cut(Mode::Strict, 3);
    assert_eq!(
        read(&fx.p("d/log")),
        Some(vec![b'L'; 2 * PAGE]),
        "{report:?}"
    );
    assert_eq!(read(&fx.p("d/victim")).as_deref(), Some(&b"victim"[..]));

    // Synced, both stick.
    let f = OpenOptions::new()
        .write(true)
        .open(fx.p("d/log"))
        .expect("open");
    f.set_len(10).expect("truncate");
    f.sync_all().expect("fsync");
    drop(f);
    fs::remove_file(fx.p("d/victim")).expect("unlink");
    sync_dir(&fx.p("d"));
    fx.cut(Mode::Strict, 4);
    assert_eq!(read(&fx.p("d/log")), Some(vec![b'L'; 10]));
    assert!(!fx.p("d/victim").exists());
}
