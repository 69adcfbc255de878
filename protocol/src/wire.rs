//! The compact wire form of a [`Sample`]: the same fields under short map keys.
//!
//! A sample is sent every interval by every agent, so its keys are most of its bytes: with the
//! long names (`mem_available_bytes`, ...) a typical sample was ~600 bytes, with these keys it
//! is ~270. Everything else on the wire (hello, acks, ...) keeps its long names. The long names
//! remain the JSON names (`sentinel-agent --once`, the master's API); docs/PROTOCOL.md lists
//! both. These types exist only here, with explicit conversions from and to [`Sample`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::frame::{decode_body, encode_body, FrameError};
use crate::{Filesystem, Interface, Sample};

#[derive(Serialize, Deserialize)]
struct WireSample {
    #[serde(rename = "seq")]
    seq: u64,
    #[serde(rename = "ts")]
    ts_ms: u64,
    #[serde(rename = "drop")]
    dropped: u64,
    #[serde(rename = "cpu")]
    cpu_percent: f32,
    #[serde(rename = "usr")]
    cpu_user_percent: f32,
    #[serde(rename = "sys")]
    cpu_system_percent: f32,
    #[serde(rename = "iow")]
    cpu_iowait_percent: f32,
    #[serde(rename = "stl")]
    cpu_steal_percent: f32,
    #[serde(rename = "cores")]
    cpu_cores_percent: Vec<f32>,
    #[serde(rename = "l1")]
    load1: f32,
    #[serde(rename = "l5")]
    load5: f32,
    #[serde(rename = "l15")]
    load15: f32,
    #[serde(rename = "mt")]
    mem_total_bytes: u64,
    #[serde(rename = "ma")]
    mem_available_bytes: u64,
    #[serde(rename = "mu")]
    mem_used_bytes: u64,
    #[serde(rename = "swt")]
    swap_total_bytes: u64,
    #[serde(rename = "swu")]
    swap_used_bytes: u64,
    #[serde(rename = "fs")]
    filesystems: Vec<WireFilesystem>,
    #[serde(rename = "if")]
    interfaces: Vec<WireInterface>,
    #[serde(rename = "dr")]
    disk_read_bytes: u64,
    #[serde(rename = "dw")]
    disk_write_bytes: u64,
    #[serde(rename = "up")]
    uptime_s: u64,
    #[serde(rename = "boot")]
    boot_time_s: u64,
    #[serde(rename = "procs")]
    processes: u32,
}

#[derive(Serialize, Deserialize)]
struct WireFilesystem {
    #[serde(rename = "m")]
    mount: String,
    #[serde(rename = "t")]
    fs_type: String,
    #[serde(rename = "sz")]
    total_bytes: u64,
    #[serde(rename = "av")]
    available_bytes: u64,
    /// Optional (absent from 0.1.0 agents): see [`Filesystem::free_bytes`].
    #[serde(rename = "fr", default, skip_serializing_if = "Option::is_none")]
    free_bytes: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct WireInterface {
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "rx")]
    rx_bytes: u64,
    #[serde(rename = "tx")]
    tx_bytes: u64,
    /// Optional (0.2): true for a virtual interface, false for a physical one.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    is_virtual: Option<bool>,
}

impl From<&Sample> for WireSample {
    fn from(s: &Sample) -> Self {
        WireSample {
            seq: s.seq,
            ts_ms: s.ts_ms,
            dropped: s.dropped,
            cpu_percent: s.cpu_percent,
            cpu_user_percent: s.cpu_user_percent,
            cpu_system_percent: s.cpu_system_percent,
            cpu_iowait_percent: s.cpu_iowait_percent,
            cpu_steal_percent: s.cpu_steal_percent,
            cpu_cores_percent: s.cpu_cores_percent.clone(),
            load1: s.load1,
            load5: s.load5,
            load15: s.load15,
            mem_total_bytes: s.mem_total_bytes,
            mem_available_bytes: s.mem_available_bytes,
            mem_used_bytes: s.mem_used_bytes,
            swap_total_bytes: s.swap_total_bytes,
            swap_used_bytes: s.swap_used_bytes,
            filesystems: s
                .filesystems
                .iter()
                .map(|f| WireFilesystem {
                    mount: f.mount.clone(),
                    fs_type: f.fs_type.clone(),
                    total_bytes: f.total_bytes,
                    available_bytes: f.available_bytes,
                    free_bytes: f.free_bytes,
                })
                .collect(),
            interfaces: s
                .interfaces
                .iter()
                .map(|i| WireInterface {
                    name: i.name.clone(),
                    rx_bytes: i.rx_bytes,
                    tx_bytes: i.tx_bytes,
                    is_virtual: i.is_virtual,
                })
                .collect(),
            disk_read_bytes: s.disk_read_bytes,
            disk_write_bytes: s.disk_write_bytes,
            uptime_s: s.uptime_s,
            boot_time_s: s.boot_time_s,
            processes: s.processes,
        }
    }
}

impl From<WireSample> for Sample {
    fn from(w: WireSample) -> Self {
        Sample {
            seq: w.seq,
            ts_ms: w.ts_ms,
            dropped: w.dropped,
            cpu_percent: w.cpu_percent,
            cpu_user_percent: w.cpu_user_percent,
            cpu_system_percent: w.cpu_system_percent,
            cpu_iowait_percent: w.cpu_iowait_percent,
            cpu_steal_percent: w.cpu_steal_percent,
            cpu_cores_percent: w.cpu_cores_percent,
            load1: w.load1,
            load5: w.load5,
            load15: w.load15,
            mem_total_bytes: w.mem_total_bytes,
            mem_available_bytes: w.mem_available_bytes,
            mem_used_bytes: w.mem_used_bytes,
            swap_total_bytes: w.swap_total_bytes,
            swap_used_bytes: w.swap_used_bytes,
            filesystems: w
                .filesystems
                .into_iter()
                .map(|f| Filesystem {
                    mount: f.mount,
                    fs_type: f.fs_type,
                    total_bytes: f.total_bytes,
                    available_bytes: f.available_bytes,
                    free_bytes: f.free_bytes,
                })
                .collect(),
            interfaces: w
                .interfaces
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    rx_bytes: i.rx_bytes,
                    tx_bytes: i.tx_bytes,
                    is_virtual: i.is_virtual,
                })
                .collect(),
            disk_read_bytes: w.disk_read_bytes,
            disk_write_bytes: w.disk_write_bytes,
            uptime_s: w.uptime_s,
            boot_time_s: w.boot_time_s,
            processes: w.processes,
        }
    }
}

/// `#[serde(with)]` for one sample in a message.
pub(crate) mod sample {
    use super::*;

    pub fn serialize<S: Serializer>(s: &Sample, ser: S) -> Result<S::Ok, S::Error> {
        WireSample::from(s).serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Sample, D::Error> {
        WireSample::deserialize(de).map(Sample::from)
    }
}

/// `#[serde(with)]` for the samples of a batch.
pub(crate) mod samples {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[Sample], ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(v.iter().map(WireSample::from))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Sample>, D::Error> {
        Vec::<WireSample>::deserialize(de).map(|v| v.into_iter().map(Sample::from).collect())
    }
}

/// Encodes one sample alone in its wire form (e.g. for an agent's spool).
pub fn encode_sample(s: &Sample, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_body(&WireSample::from(s), out)
}

/// Appends the body of a `sample` message (`AgentMessage::Sample`) around a sample that
/// [`encode_sample`] wrote, byte for byte what encoding the message would give, without
/// decoding and re-encoding the sample: an agent spools its samples encoded and sends most of
/// them alone in the next frame.
pub fn sample_message_body(encoded_sample: &[u8], out: &mut Vec<u8>) {
    out.reserve(SAMPLE_MESSAGE_PREFIX.len() + encoded_sample.len());
    out.extend_from_slice(SAMPLE_MESSAGE_PREFIX);
    out.extend_from_slice(encoded_sample);
}

/// Decodes what [`encode_sample`] wrote.
pub fn decode_sample(body: &[u8]) -> Result<Sample, FrameError> {
    decode_body::<WireSample>(body).map(Sample::from)
}

/// A filesystem of a sample as [`decode_filesystems`] reads it, its strings borrowed from the
/// sample's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilesystemRef<'a> {
    pub mount: &'a str,
    pub fs_type: &'a str,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub free_bytes: Option<u64>,
}

impl FilesystemRef<'_> {
    /// See [`Filesystem::used_bytes`].
    pub fn used_bytes(&self) -> u64 {
        crate::message::used_bytes(self.total_bytes, self.available_bytes, self.free_bytes)
    }

    /// See [`Filesystem::used_ratio`].
    pub fn used_ratio(&self) -> f64 {
        crate::message::used_ratio(self.total_bytes, self.available_bytes, self.free_bytes)
    }

    pub fn to_filesystem(&self) -> Filesystem {
        Filesystem {
            mount: self.mount.to_owned(),
            fs_type: self.fs_type.to_owned(),
            total_bytes: self.total_bytes,
            available_bytes: self.available_bytes,
            free_bytes: self.free_bytes,
        }
    }
}

/// Only the filesystems of a sample [`encode_sample`] wrote. The other fields are skipped
/// token by token (minicbor, no copies), not built: a fifth of the cost of [`decode_sample`],
/// which is what the master's fleet view pays per host. Unknown keys are skipped, as serde
/// would; a sample without `fs`, or with indefinite-length items where `fs` is read, is an
/// error (the caller may then decode the whole sample).
pub fn decode_filesystems(body: &[u8]) -> Result<Vec<FilesystemRef<'_>>, FrameError> {
    use minicbor::decode::{Decoder, Error};
    fn definite(n: Option<u64>) -> Result<u64, Error> {
        n.ok_or_else(|| Error::message("indefinite length"))
    }
    fn filesystem<'b>(d: &mut Decoder<'b>) -> Result<FilesystemRef<'b>, Error> {
        let (mut mount, mut fs_type, mut total, mut available) = (None, None, None, None);
        let mut free = None;
        for _ in 0..definite(d.map()?)? {
            match d.str()? {
                "m" => mount = Some(d.str()?),
                "t" => fs_type = Some(d.str()?),
                "sz" => total = Some(d.u64()?),
                "av" => available = Some(d.u64()?),
                "fr" => free = Some(d.u64()?),
                _ => d.skip()?,
            }
        }
        match (mount, fs_type, total, available) {
            (Some(mount), Some(fs_type), Some(total_bytes), Some(available_bytes)) => {
                Ok(FilesystemRef {
                    mount,
                    fs_type,
                    total_bytes,
                    available_bytes,
                    free_bytes: free,
                })
            }
            _ => Err(Error::message("filesystem without m, t, sz or av")),
        }
    }
    fn sample<'b>(d: &mut Decoder<'b>) -> Result<Vec<FilesystemRef<'b>>, Error> {
        let mut found = None;
        for _ in 0..definite(d.map()?)? {
            if d.str()? == "fs" {
                let n = definite(d.array()?)?;
                let mut list = Vec::with_capacity(n.min(64) as usize);
                for _ in 0..n {
                    list.push(filesystem(d)?);
                }
                found = Some(list);
            } else {
                d.skip()?;
            }
        }
        found.ok_or_else(|| Error::message("no fs"))
    }
    let mut d = Decoder::new(body);
    let list = sample(&mut d).map_err(|e| FrameError::Decode(e.to_string()))?;
    match body.len() - d.position() {
        0 => Ok(list),
        n => Err(FrameError::TrailingBytes(n)),
    }
}

/// The CBOR that starts the body of a `sample` message: a map of one entry keyed "sample".
const SAMPLE_MESSAGE_PREFIX: &[u8] = b"\xa1\x66sample";

/// The wire form of the sample inside the body of a `sample` message (what [`decode_sample`]
/// reads), without decoding it; `None` if `body` is not a `sample` message in the canonical
/// shape. The caller must still decode the body to validate it.
pub fn sample_in_body(body: &[u8]) -> Option<&[u8]> {
    body.strip_prefix(SAMPLE_MESSAGE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_inside_a_sample_message_is_its_wire_form() {
        let s = Sample {
            seq: 3,
            cpu_cores_percent: vec![1.5],
            filesystems: vec![Filesystem {
                mount: "/".into(),
                fs_type: "ext4".into(),
                total_bytes: 10 << 30,
                available_bytes: 4 << 30,
                free_bytes: Some(5 << 30),
            }],
            ..Sample::default()
        };
        let mut body = Vec::new();
        encode_body(&crate::AgentMessage::Sample(s.clone()), &mut body).unwrap();
        let inner = sample_in_body(&body).expect("a sample message");
        let mut alone = Vec::new();
        encode_sample(&s, &mut alone).unwrap();
        assert_eq!(inner, &alone[..]);
        assert_eq!(decode_sample(inner).unwrap(), s);
        let fs: Vec<_> = decode_filesystems(inner)
            .unwrap()
            .iter()
            .map(FilesystemRef::to_filesystem)
            .collect();
        assert_eq!(fs, s.filesystems);
        // The long-key form (`encode_body` of a Sample) has no "fs": an error, not an empty list.
        let mut long = Vec::new();
        encode_body(&s, &mut long).unwrap();
        assert!(decode_filesystems(&long).is_err());
        let mut goodbye = Vec::new();
        let bye = crate::Goodbye {
            last_seq: 3,
            reason: "stop".into(),
        };
        encode_body(&crate::AgentMessage::Goodbye(bye), &mut goodbye).unwrap();
        assert_eq!(sample_in_body(&goodbye), None);
    }

    #[test]
    fn a_sample_message_built_around_an_encoded_sample_is_the_encoded_message() {
        let s = Sample {
            seq: 77,
            cpu_cores_percent: vec![3.5],
            interfaces: vec![Interface {
                name: "eth0".into(),
                rx_bytes: 1,
                tx_bytes: 2,
                is_virtual: None,
            }],
            ..Sample::default()
        };
        let mut encoded = Vec::new();
        encode_sample(&s, &mut encoded).unwrap();
        let mut ours = Vec::new();
        sample_message_body(&encoded, &mut ours);
        let mut theirs = Vec::new();
        crate::frame::encode_body(&crate::AgentMessage::Sample(s.clone()), &mut theirs).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_sample_survives_the_wire_form_and_is_much_smaller() {
        let s = Sample {
            seq: 9,
            cpu_cores_percent: vec![1.5, 2.5],
            filesystems: vec![Filesystem {
                mount: "/".into(),
                fs_type: "ext4".into(),
                total_bytes: 10,
                available_bytes: 5,
                free_bytes: None,
            }],
            interfaces: vec![Interface {
                name: "eth0".into(),
                rx_bytes: 1,
                tx_bytes: 2,
                is_virtual: None,
            }],
            ..Sample::default()
        };
        let (mut short, mut long) = (Vec::new(), Vec::new());
        encode_sample(&s, &mut short).unwrap();
        encode_body(&s, &mut long).unwrap();
        assert_eq!(decode_sample(&short).unwrap(), s);
        assert!(
            short.len() * 2 < long.len(),
            "{} vs {} bytes",
            short.len(),
            long.len()
        );
    }
}
