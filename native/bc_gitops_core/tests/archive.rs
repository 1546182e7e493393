//! Tests of the tar reader (what the listing reports, the bounds, and what
//! unpacking writes) and of the bounded gunzip. The safety policy itself is
//! bc_gitops_tar's (tested by bc_gitops_release_SUITE).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bc_gitops_core::archive::{gunzip, list, unpack, ArchiveError, Entry, Kind, META_MAX};
use flate2::{write::GzEncoder, Compression};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tar::{Builder, EntryType, Header};

/// One archive entry to build: name, type, link target, data, mode.
struct Spec<'a>(&'a str, EntryType, &'a str, &'a [u8], u32);

fn tar_bytes(entries: &[Spec<'_>]) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    append(&mut b, entries);
    b.into_inner().unwrap()
}

fn append(b: &mut Builder<Vec<u8>>, entries: &[Spec<'_>]) {
    for Spec(name, kind, link, data, mode) in entries {
        let mut h = Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        if kind.is_symlink() || kind.is_hard_link() {
            b.append_link(&mut h, name, link).unwrap();
        } else {
            b.append_data(&mut h, name, *data).unwrap();
        }
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8], gzip: bool) -> PathBuf {
    let path = dir.join(name);
    let bytes = if gzip {
        let mut z = GzEncoder::new(Vec::new(), Compression::fast());
        z.write_all(bytes).unwrap();
        z.finish().unwrap()
    } else {
        bytes.to_vec()
    };
    std::fs::write(&path, bytes).unwrap();
    path
}

fn entry(path: &str, kind: Kind, link: Option<&str>) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        link: link.map(|l| l.as_bytes().to_vec()),
    }
}

#[test]
fn the_listing_gives_names_types_and_link_targets() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("top/{}/file", "d".repeat(300));
    let long_target = format!("../{}", "t".repeat(200));
    let mut b = Builder::new(Vec::new());
    // A pax global header applies to nothing here: it is not listed.
    let mut g = Header::new_ustar();
    g.set_entry_type(EntryType::XGlobalHeader);
    g.set_size(16);
    b.append_data(&mut g, "global", &b"16 comment=abc\n\n"[..])
        .unwrap();
    // A name given by a pax record.
    b.append_pax_extensions([("path", &b"top/from-pax"[..])])
        .unwrap();
    let mut h = Header::new_ustar();
    h.set_size(1);
    b.append_data(&mut h, "short", &b"x"[..]).unwrap();
    append(
        &mut b,
        &[
            Spec("top/", EntryType::Directory, "", b"", 0o755),
            Spec(&long, EntryType::Regular, "", b"data", 0o644),
            Spec("top/link", EntryType::Symlink, &long_target, b"", 0o777),
            Spec("top/hard", EntryType::Link, "top/from-pax", b"", 0o644),
            Spec("top/fifo", EntryType::Fifo, "", b"", 0o644),
            Spec("top/volume", EntryType::new(b'V'), "", b"", 0o644),
        ],
    );
    let path = write(dir.path(), "a.tar.gz", &b.into_inner().unwrap(), true);
    assert_eq!(
        list(&path, 1 << 20).unwrap(),
        vec![
            entry("top/from-pax", Kind::Regular, None),
            entry("top/", Kind::Directory, None),
            entry(&long, Kind::Regular, None),
            entry("top/link", Kind::Symlink, Some(&long_target)),
            entry("top/hard", Kind::HardLink, Some("top/from-pax")),
            entry("top/fifo", Kind::Fifo, None),
            entry("top/volume", Kind::Unsupported(b'V'), None),
        ]
    );
}

#[test]
fn the_data_is_bounded_from_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 600];
    let bytes = tar_bytes(&[
        Spec("a", EntryType::Regular, "", &big, 0o644),
        Spec("b", EntryType::Regular, "", &big, 0o644),
    ]);
    let path = write(dir.path(), "a.tar", &bytes, false);
    assert!(matches!(
        list(&path, 1199),
        Err(ArchiveError::TooLarge(1199))
    ));
    assert_eq!(list(&path, 1200).unwrap().len(), 2);
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    assert!(matches!(
        unpack(&path, &dest, 1199),
        Err(ArchiveError::TooLarge(1199))
    ));

    // A header that claims 1 TiB is refused before any data is read.
    let mut h = Header::new_gnu();
    h.set_size(1 << 40);
    h.set_path("huge").unwrap();
    h.set_cksum();
    let path = write(dir.path(), "huge.tar", h.as_bytes(), false);
    assert!(matches!(
        list(&path, 1 << 30),
        Err(ArchiveError::TooLarge(_))
    ));
}

#[test]
fn the_headers_of_one_entry_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // A GNU long name is read into memory whole: past META_MAX it is refused.
    let name = |len: usize| format!("{}/f", "n".repeat(len));
    let ok = tar_bytes(&[Spec(&name(4096), EntryType::Regular, "", b"", 0o644)]);
    let path = write(dir.path(), "ok.tar.gz", &ok, true);
    assert_eq!(list(&path, 1).unwrap().len(), 1);
    let bomb_len = usize::try_from(META_MAX).unwrap() * 2;
    let bomb = tar_bytes(&[Spec(&name(bomb_len), EntryType::Regular, "", b"", 0o644)]);
    let path = write(dir.path(), "bomb.tar.gz", &bomb, true);
    assert!(std::fs::metadata(&path).unwrap().len() < 64 * 1024);
    assert!(matches!(list(&path, 1), Err(ArchiveError::HeaderTooLarge)));
}

#[test]
fn unpacking_writes_modes_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tar_bytes(&[
        // A read-only directory: its mode is set after its files are written.
        Spec("app/", EntryType::Directory, "", b"", 0o555),
        Spec("app/bin/run", EntryType::Regular, "", b"#!/bin/sh\n", 0o755),
        Spec("app/bin/up", EntryType::Symlink, "../bin/run", b"", 0o777),
        Spec("app/copy", EntryType::Link, "app/bin/run", b"", 0o644),
    ]);
    let path = write(dir.path(), "a.tar.gz", &bytes, true);
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    unpack(&path, &dest, 1 << 20).unwrap();
    let run = std::fs::metadata(dest.join("app/bin/run")).unwrap();
    assert_eq!(run.permissions().mode() & 0o777, 0o755);
    let app = std::fs::metadata(dest.join("app")).unwrap();
    assert_eq!(app.permissions().mode() & 0o777, 0o555);
    assert_eq!(
        std::fs::read_link(dest.join("app/bin/up")).unwrap(),
        Path::new("../bin/run")
    );
    let copy = std::fs::metadata(dest.join("app/copy")).unwrap();
    assert_eq!((copy.ino(), copy.nlink()), (run.ino(), 2));
    std::fs::set_permissions(dest.join("app"), PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn what_is_not_a_tar_archive_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "junk", &[b'j'; 1000], false);
    assert!(matches!(list(&path, 1), Err(ArchiveError::Read(_))));
    let path = write(dir.path(), "junk.gz", &[b'j'; 1000], true);
    assert!(matches!(list(&path, 1), Err(ArchiveError::Read(_))));
    let missing = dir.path().join("missing.tar");
    assert!(matches!(list(&missing, 1), Err(ArchiveError::Open { .. })));
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut z = GzEncoder::new(Vec::new(), Compression::fast());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

#[test]
fn gunzip_inflates_within_its_bound() {
    let data = b"hex registry payload ".repeat(1000);
    assert_eq!(gunzip(&gz(&data), data.len() as u64).unwrap(), data);
    // Two members, as `cat a.gz b.gz` makes: both come out.
    let two = [gz(b"one "), gz(b"two")].concat();
    assert_eq!(gunzip(&two, 100).unwrap(), b"one two");
}

#[test]
fn gunzip_refuses_a_bomb_and_what_is_not_gzip() {
    // 64 MiB of zeros compress to ~64 KiB; the bound stops the inflating.
    let bomb = gz(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    assert!(matches!(gunzip(&bomb, 1 << 20), Err(ArchiveError::TooLarge(m)) if m == 1 << 20));
    assert!(matches!(
        gunzip(b"not gzip at all", 1000),
        Err(ArchiveError::Read(_))
    ));
    let truncated = &gz(b"cut short")[..10];
    assert!(matches!(
        gunzip(truncated, 1000),
        Err(ArchiveError::Read(_))
    ));
}
