//! The Prometheus remote-write 1.0 message (prometheus/prompb `types.proto` + `remote.proto`,
//! the subset a sender needs), encoded with prost and compressed with snappy's block format.

use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` first (the receiver requires it).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The request body: protobuf, then snappy (block format, not framed).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_standard_wire_bytes_and_roundtrips_through_snappy() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "m".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 2,
                }],
            }],
        };
        // Hand-assembled from remote.proto/types.proto: field 1 (LEN) TimeSeries { field 1
        // (LEN) Label { 1: "__name__", 2: "m" }, field 2 (LEN) Sample { 1: double 1.0, 2: 2 } }.
        let want: Vec<u8> = [
            &[0x0a, 0x1c, 0x0a, 0x0d, 0x0a, 0x08][..],
            b"__name__",
            &[0x12, 0x01, b'm', 0x12, 0x0b, 0x09],
            &1.0f64.to_le_bytes(),
            &[0x10, 0x02],
        ]
        .concat();
        assert_eq!(req.encode_to_vec(), want);
        let body = encode(&req);
        let back = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(WriteRequest::decode(&back[..]).unwrap(), req);
    }
}
