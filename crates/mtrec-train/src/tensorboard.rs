//! TensorBoard event files: what `tensorboard --logdir runs/` (and any reader of the format:
//! TensorBoard's `EventAccumulator`, `tbparse`, TensorFlow's `summary_iterator`) shows of a run.
//!
//! A run folder gets one `events.out.tfevents.<seconds>.<host>.<pid>.mtrec` file: TFRecord framing
//! (little-endian `u64` length, its masked CRC-32C, the bytes, their masked CRC-32C) around
//! `tensorflow.Event` protocol buffers — the first holds `file_version = "brain.Event:2"`, each
//! later one a `Summary` of scalar values (`simple_value`) at a step. [`EpochRecord`]s become scalars
//! at step = epoch ([`epoch_scalars`]); the trainer adds `step/…` scalars every
//! `train.log_every_steps` optimisation steps at step = the global step. Folders written this way
//! sit side by side under `runs/`, so TensorBoard lists the runs of a comparison as its runs.
//!
//! [`read_scalars`] reads a file back (checking both checksums of every record): the tests and the
//! report use it; `tests/tensorboard_python.rs` checks the same file with TensorBoard's own reader.

use std::{
    fs::File,
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use prost::Message;

use crate::{EpochRecord, TrainError};

/// `tensorflow.Event` (tensorflow/core/util/event.proto), the fields mtrec writes.
#[derive(Clone, PartialEq, Message)]
struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    wall_time: f64,
    /// The step the values belong to.
    #[prost(int64, tag = "2")]
    step: i64,
    /// The first event of a file: `"brain.Event:2"`.
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    /// Scalar values.
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary` (tensorflow/core/framework/summary.proto).
#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`: a tag and, here, always a `simple_value`.
#[derive(Clone, PartialEq, Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarEvent {
    /// The scalar's name (`valid/income/auc`).
    pub tag: String,
    /// Its step (the epoch for epoch scalars, the global step for `step/…` ones).
    pub step: i64,
    /// Seconds since the Unix epoch when it was written.
    pub wall_time: f64,
    /// The value (TensorBoard stores `f32`).
    pub value: f32,
}

/// The masked CRC-32C of TFRecord framing.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn io_error(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Io { path: path.to_path_buf(), source }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Appends scalars to a new TensorBoard event file in a folder.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `events.out.tfevents.<seconds>.<host>.<pid>.mtrec` in `dir` and writes its version
    /// record. Each writer makes a file of its own (a resumed run adds one; TensorBoard reads them
    /// in name order, so the later file's values of a step win).
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        let seconds = now() as u64;
        let mut n = 0;
        let path = loop {
            let suffix = if n == 0 { String::new() } else { format!(".{n}") };
            let path = dir.join(format!("events.out.tfevents.{seconds}.{host}.{}.mtrec{suffix}", std::process::id()));
            if !path.exists() {
                break path;
            }
            n += 1;
        };
        let file = File::create(&path).map_err(|e| io_error(&path, e))?;
        let mut writer = Self { file: BufWriter::new(file), path };
        let version = Event { wall_time: now(), step: 0, file_version: Some("brain.Event:2".into()), summary: None };
        writer.write_event(&version)?;
        writer.flush()?;
        Ok(writer)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `values` (tag, value) as one event at `step`; non-finite values are written as they
    /// are (TensorBoard shows NaN as a gap).
    pub fn scalars<'a>(
        &mut self,
        step: i64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<(), TrainError> {
        let value: Vec<SummaryValue> = values
            .into_iter()
            .map(|(tag, v)| SummaryValue { tag: tag.to_string(), simple_value: Some(v as f32) })
            .collect();
        if value.is_empty() {
            return Ok(());
        }
        let event = Event { wall_time: now(), step, file_version: None, summary: Some(Summary { value }) };
        self.write_event(&event)
    }

    /// Makes what was written readable (TensorBoard reads a growing file as it grows).
    pub fn flush(&mut self) -> Result<(), TrainError> {
        self.file.flush().map_err(|e| io_error(&self.path, e))
    }

    fn write_event(&mut self, event: &Event) -> Result<(), TrainError> {
        let data = event.encode_to_vec();
        let length = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&length);
        record.extend_from_slice(&masked_crc(&length).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file.write_all(&record).map_err(|e| io_error(&self.path, e))
    }
}

/// The scalars of an epoch, tagged as TensorBoard groups them (`train_loss/<task>`,
/// `task_weight/<task>`, `learning_rate/<group>`, `gradient_norm/<task>`, `gradient_cosine/<a~b>`,
/// `gradient_conflict/<a~b>`, `encoder_gradient_{norm,cosine,conflict}/…`, `valid/<task>/<metric>`, `valid/monitor`, `samples_per_sec`, `epoch_seconds`), at step = the epoch.
/// Validations within an epoch (`train.evals_per_epoch > 1`) are not repeated here: the end's are.
pub fn epoch_scalars(record: &EpochRecord) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut add = |prefix: &str, values: &std::collections::BTreeMap<String, f64>| {
        out.extend(values.iter().map(|(k, v)| (format!("{prefix}/{k}"), *v)));
    };
    add("train_loss", &record.train_loss);
    add("task_weight", &record.task_weights);
    add("learning_rate", &record.learning_rates);
    if let Some(norms) = &record.task_gradient_norms {
        add("gradient_norm", norms);
    }
    if let Some(cosines) = &record.task_gradient_cosines {
        add("gradient_cosine", cosines);
    }
    if let Some(conflicts) = &record.task_gradient_conflicts {
        add("gradient_conflict", conflicts);
    }
    for (prefix, values) in [
        ("encoder_gradient_norm", &record.encoder_gradient_norms),
        ("encoder_gradient_cosine", &record.encoder_gradient_cosines),
        ("encoder_gradient_conflict", &record.encoder_gradient_conflicts),
    ] {
        if let Some(values) = values {
            add(prefix, values);
        }
    }
    for (task, metrics) in &record.valid {
        out.extend(metrics.iter().map(|(m, v)| (format!("valid/{task}/{m}"), *v)));
    }
    out.push(("valid/monitor".into(), record.monitor));
    out.push(("samples_per_sec".into(), record.samples_per_sec));
    out.push(("epoch_seconds".into(), record.seconds));
    out
}

/// Writes `record`'s [`epoch_scalars`] at step = its epoch.
pub fn write_epoch(writer: &mut EventWriter, record: &EpochRecord) -> Result<(), TrainError> {
    let scalars = epoch_scalars(record);
    writer.scalars(record.epoch as i64, scalars.iter().map(|(t, v)| (t.as_str(), *v)))?;
    writer.flush()
}

/// The event files of a run folder, oldest first (the order TensorBoard reads them in).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("events.out.tfevents.")))
        .collect();
    files.sort();
    Ok(files)
}

/// Every scalar of an event file, in the order written; an error names the file and the byte
/// offset of a truncated record or one whose checksum does not match.
pub fn read_scalars(path: &Path) -> Result<Vec<ScalarEvent>, TrainError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| io_error(path, e))?;
    let bad = |offset: usize, what: &str| TrainError::Config(format!("{}: byte {offset}: {what}", path.display()));
    let (mut at, mut out) = (0usize, Vec::new());
    while at < bytes.len() {
        let header = bytes.get(at..at + 12).ok_or_else(|| bad(at, "truncated record header"))?;
        let (length, crc) = header.split_at(8);
        if masked_crc(length).to_le_bytes() != crc {
            return Err(bad(at, "length checksum does not match"));
        }
        let n = u64::from_le_bytes(length.try_into().expect("8 bytes")) as usize;
        let data = bytes.get(at + 12..at + 12 + n).ok_or_else(|| bad(at, "truncated record"))?;
        let crc = bytes.get(at + 12 + n..at + 16 + n).ok_or_else(|| bad(at, "truncated record checksum"))?;
        if masked_crc(data).to_le_bytes() != crc {
            return Err(bad(at, "data checksum does not match"));
        }
        let event = Event::decode(data).map_err(|e| bad(at, &format!("not an Event: {e}")))?;
        if let Some(summary) = event.summary {
            for v in summary.value {
                if let Some(value) = v.simple_value {
                    out.push(ScalarEvent { tag: v.tag, step: event.step, wall_time: event.wall_time, value });
                }
            }
        }
        at += 16 + n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C's check value (RFC 3720 B.4: 32 bytes of zeros → 0x8A9136AA) and TFRecord's mask
    /// by hand: ((c >> 15) | (c << 17)) = 0x6D551522, + 0xA282EAD8 mod 2³² = 0x0FD7FFFA.
    #[test]
    fn masked_crc_by_hand() {
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(masked_crc(&[0u8; 32]), 0x0FD7_FFFA);
    }

    /// A scalar event's bytes by hand from the protocol-buffer wire format: field 1 (double,
    /// wire type 1) = 0x09, field 2 (varint) = 0x10, field 5 (length-delimited) = 0x2a; inside,
    /// Summary.value = 0x0a, tag = 0x0a, simple_value (float, wire type 5) = 0x15.
    #[test]
    fn scalar_event_encodes_as_the_wire_format_says() {
        let event = Event {
            wall_time: 1.5,
            step: 3,
            file_version: None,
            summary: Some(Summary { value: vec![SummaryValue { tag: "a".into(), simple_value: Some(0.25) }] }),
        };
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.5f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 3, 0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15]);
        expected.extend_from_slice(&0.25f32.to_le_bytes());
        assert_eq!(event.encode_to_vec(), expected);
    }

    #[test]
    fn written_scalars_read_back_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(1, [("train_loss/income", 0.5), ("valid/income/auc", 0.9)]).unwrap();
        w.scalars(2, [("train_loss/income", 0.25)]).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        assert_eq!(event_files(dir.path()).unwrap(), vec![path.clone()]);
        let read = read_scalars(&path).unwrap();
        let got: Vec<(&str, i64, f32)> = read.iter().map(|s| (s.tag.as_str(), s.step, s.value)).collect();
        assert_eq!(
            got,
            vec![("train_loss/income", 1, 0.5), ("valid/income/auc", 1, 0.9), ("train_loss/income", 2, 0.25)]
        );
        // a second writer in the same second makes a file of its own
        let second = EventWriter::create(dir.path()).unwrap();
        assert_ne!(second.path(), path);
        // one flipped byte in the last record's data: its checksum no longer matches
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_scalars(&path).unwrap_err().to_string();
        assert!(err.contains("data checksum does not match") && err.contains(path.to_str().unwrap()), "{err}");
        std::fs::write(&path, &bytes[..n - 2]).unwrap();
        assert!(read_scalars(&path).unwrap_err().to_string().contains("truncated"));
    }
}
