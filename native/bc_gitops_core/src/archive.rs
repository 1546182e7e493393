//! Tar archives, plain or gzip-compressed, read with the `tar` and `flate2`
//! crates: [`list`] gives every entry (name, type, link target) for the
//! caller's safety checks, and [`unpack`] writes them, with the same parser,
//! so that what was checked is what gets written.
//!
//! [`gunzip`] inflates a gzip stream held in memory (a hex registry file),
//! with a bound on what comes out: the one gunzip of bc_gitops.
//!
//! Both bound what they read: the entries' data may hold at most `max_data`
//! bytes in all ([`ArchiveError::TooLarge`], checked from each header before
//! its data is read), and the headers of one entry (GNU long names, pax
//! records) at most [`META_MAX`] bytes, since the `tar` crate reads those
//! into memory.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use thiserror::Error;

/// The most the headers of one entry (its own, GNU long names and links,
/// pax records) may take, in bytes.
pub const META_MAX: u64 = 1 << 20;

/// An entry's type, as the caller's checks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
    /// GNU sparse files, and type flags that no tar tool agrees on.
    Unsupported(u8),
}

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (after GNU long names and pax `path`).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Symbolic and hard links: the target as stored.
    pub link: Option<Vec<u8>>,
}

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("the entries' data exceeds {0} bytes")]
    TooLarge(u64),
    #[error("the headers of one entry exceed {META_MAX} bytes")]
    HeaderTooLarge,
    #[error("{0}")]
    Read(io::Error),
    #[error("{0}")]
    Write(io::Error),
    #[error("the tar crate refused to unpack {0}")]
    Refused(String),
}

/// Every entry of the archive at `path`, in order. pax global headers are
/// left out: nothing applies them, here or in [`unpack`].
pub fn list(path: &Path, max_data: u64) -> Result<Vec<Entry>, ArchiveError> {
    let mut archive = open(path)?;
    let mut out = Vec::new();
    for entry in archive.entries(max_data)? {
        let entry = entry?;
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::Regular,
            tar::EntryType::Directory => Kind::Directory,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::HardLink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            tar::EntryType::XGlobalHeader => continue,
            other => Kind::Unsupported(other.as_byte()),
        };
        let link = matches!(kind, Kind::Symlink | Kind::HardLink)
            .then(|| entry.link_name_bytes().map(|l| l.into_owned()))
            .flatten();
        out.push(Entry {
            path: entry.path_bytes().into_owned(),
            kind,
            link,
        });
    }
    Ok(out)
}

/// Unpacks the archive at `path` into the directory `dest`, which must
/// exist, as `tar::Archive::unpack` does (directories last, so that their
/// modes do not get in the way), with the bounds of [`list`]. Hard links
/// become hard links to their earlier target.
pub fn unpack(path: &Path, dest: &Path, max_data: u64) -> Result<(), ArchiveError> {
    let mut archive = open(path)?;
    let mut directories = Vec::new();
    for entry in archive.entries(max_data)? {
        let mut entry = entry?;
        if entry.header().entry_type().is_dir() {
            directories.push(entry);
        } else {
            unpack_in(&mut entry, dest)?;
        }
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut dir in directories {
        unpack_in(&mut dir, dest)?;
    }
    Ok(())
}

fn unpack_in(entry: &mut tar::Entry<'_, Budget>, dest: &Path) -> Result<(), ArchiveError> {
    match entry.unpack_in(dest) {
        Ok(true) => Ok(()),
        // A `..' or a name without a parent: the caller's checks refuse
        // those first, so this is a second line of defence.
        Ok(false) => Err(ArchiveError::Refused(
            String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
        )),
        Err(e) => Err(ArchiveError::Write(e)),
    }
}

/// `data` (one gzip member or several) inflated: at most `max` bytes come
/// out, else [`ArchiveError::TooLarge`]; what is not gzip is
/// [`ArchiveError::Read`].
pub fn gunzip(data: &[u8], max: u64) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::new();
    flate2::bufread::MultiGzDecoder::new(data)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(ArchiveError::Read)?;
    if out.len() as u64 > max {
        return Err(ArchiveError::TooLarge(max));
    }
    Ok(out)
}

/// A tar archive over a reader that [`Archive::entries`] refills with a
/// budget before each step.
struct Archive {
    tar: tar::Archive<Budget>,
    left: Rc<Cell<u64>>,
}

fn open(path: &Path) -> Result<Archive, ArchiveError> {
    let mut file = File::open(path)
        .map(BufReader::new)
        .map_err(|source| ArchiveError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let gzip = file
        .fill_buf()
        .map_err(ArchiveError::Read)?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let left = Rc::new(Cell::new(0));
    let mut tar = tar::Archive::new(Budget {
        inner: stream,
        left: Rc::clone(&left),
    });
    // Modes, yes (minus setuid and the like); owners, no.
    tar.set_preserve_permissions(false);
    tar.set_preserve_ownerships(false);
    Ok(Archive { tar, left })
}

impl Archive {
    fn entries(
        &mut self,
        max_data: u64,
    ) -> Result<impl Iterator<Item = Result<tar::Entry<'_, Budget>, ArchiveError>>, ArchiveError>
    {
        let left = Rc::clone(&self.left);
        // Reading past the budget is an error of the reader (see Budget),
        // which the tar crate passes on; it is told apart by `left` being 0.
        let error = {
            let left = Rc::clone(&left);
            move |e: io::Error| match left.get() {
                0 => ArchiveError::HeaderTooLarge,
                _ => ArchiveError::Read(e),
            }
        };
        left.set(META_MAX);
        let mut total: u64 = 0;
        let entries = self.tar.entries().map_err(&error)?;
        Ok(entries.map(move |entry| {
            let entry = entry.map_err(&error)?;
            total = total.saturating_add(entry.size());
            if total > max_data {
                return Err(ArchiveError::TooLarge(max_data));
            }
            // This entry's data and padding, then the next entry's headers.
            left.set(entry.size().div_ceil(512) * 512 + META_MAX);
            Ok(entry)
        }))
    }
}

/// The (decompressed) tar stream, which may yield no more than `left` bytes.
struct Budget {
    inner: Box<dyn Read>,
    left: Rc<Cell<u64>>,
}

impl Read for Budget {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 {
            return Err(io::Error::other("read budget exhausted"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}
