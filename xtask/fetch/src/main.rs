//! `xtask-fetch URL DEST [MEMBER]`: downloads `URL` into the file `DEST` (HTTPS through ureq and
//! rustls); with `MEMBER`, the download is a zip archive and `DEST` gets that member of it.
//!
//! A binary of its own so that TLS and zip — ureq, rustls, ring, zip, a twentieth of a cold build —
//! are built only when `cargo xtask data` has something to download (it runs this with
//! `cargo run`), never for `cargo xtask train` or the tests. Exit status 0 when `DEST` holds the
//! whole body (or member), 1 with the reason on stderr otherwise (`DEST` is then removed), 2 for a
//! usage error.

use std::{
    fs::File,
    io::{Cursor, Read, Write},
    path::Path,
    process::ExitCode,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, dest, member) = match &args[..] {
        [url, dest] => (url, dest, None),
        [url, dest, member] => (url, dest, Some(member.as_str())),
        _ => {
            eprintln!("usage: xtask-fetch URL DEST [ZIP-MEMBER]");
            return ExitCode::from(2);
        }
    };
    let done = match member {
        None => fetch(url, Path::new(dest)),
        Some(member) => fetch_member(url, member, Path::new(dest)),
    };
    match done {
        Ok(bytes) => {
            eprintln!("{url}: {bytes} bytes");
            ExitCode::SUCCESS
        }
        Err(e) => {
            std::fs::remove_file(dest).ok();
            eprintln!("could not download {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the body of `GET url` to `dest`; returns its length.
fn fetch(url: &str, dest: &Path) -> Result<u64, String> {
    let response = ureq::get(url).call().map_err(|e| e.to_string())?;
    write_file(dest, &mut response.into_body().into_reader(), |e| e.to_string())
}

/// Writes `member` of the zip archive at `url` to `dest`; returns its length.
fn fetch_member(url: &str, member: &str, dest: &Path) -> Result<u64, String> {
    let response = ureq::get(url).call().map_err(|e| e.to_string())?;
    let mut archive = Vec::new();
    response.into_body().into_reader().read_to_end(&mut archive).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(Cursor::new(archive)).map_err(|e| format!("not a zip archive: {e}"))?;
    let mut entry = archive.by_name(member).map_err(|e| format!("the archive has no {member}: {e}"))?;
    write_file(dest, &mut entry, |e| format!("extracting {member}: {e}"))
}

/// Copies `source` into a new file `dest`; a read error is worded by `reading`. Returns the bytes
/// written.
fn write_file(dest: &Path, source: &mut impl Read, reading: impl Fn(std::io::Error) -> String) -> Result<u64, String> {
    let mut file = File::create(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let bytes = std::io::copy(source, &mut file).map_err(reading)?;
    file.flush().map_err(|e| format!("writing {}: {e}", dest.display()))?;
    Ok(bytes)
}
