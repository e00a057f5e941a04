//! `cargo xtask data census`: get the UCI Census-Income (KDD) files into a folder and verify them.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use mtrec_data::{CENSUS_FILES, census_md5_hex};

/// Where the UCI archive serves the two gzipped files (legacy folder, as in PROTOCOL.md).
const UCI_BASE: &str = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld";

/// Arguments of `cargo xtask data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    /// The dataset.
    dataset: Dataset,
    /// Copy the files from this folder instead of downloading them.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Destination folder.
    #[arg(long, default_value = "data/census-income")]
    dir: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Dataset {
    /// UCI Census-Income (KDD), for the census-mmoe protocol.
    Census,
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    let Dataset::Census = args.dataset;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    for (file, md5, _) in CENSUS_FILES {
        let dest = args.dir.join(file);
        if dest.exists() && census_md5_hex(&dest).is_ok_and(|h| h == md5) {
            println!("{}: present, md5 ok", dest.display());
            continue;
        }
        let part = args.dir.join(format!("{file}.part"));
        match &args.from {
            Some(src) => {
                let from = src.join(file);
                std::fs::copy(&from, &part).with_context(|| format!("copying {}", from.display()))?;
            }
            None => download(&format!("{UCI_BASE}/{file}"), &part)?,
        }
        let got = census_md5_hex(&part)?;
        if got != md5 {
            std::fs::remove_file(&part).ok();
            bail!("{file}: md5 of the decompressed data is {got}, expected {md5}; the file was not kept");
        }
        std::fs::rename(&part, &dest).with_context(|| format!("moving into {}", dest.display()))?;
        println!("{}: md5 ok", dest.display());
    }
    println!("census data ready in {} (train with --data-dir {})", args.dir.display(), args.dir.display());
    Ok(())
}

fn download(url: &str, dest: &Path) -> anyhow::Result<()> {
    println!("downloading {url}");
    let response = ureq::get(url).call().map_err(|e| {
        anyhow::anyhow!(
            "could not download {url}: {e}\n\
             If this machine is offline, copy census-income.data.gz and census-income.test.gz from \
             elsewhere and run `cargo xtask data census --from DIR`."
        )
    })?;
    let mut reader = response.into_body().into_reader();
    let mut file = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    io::copy(&mut reader, &mut file).with_context(|| format!("downloading {url}"))?;
    file.flush()?;
    Ok(())
}
