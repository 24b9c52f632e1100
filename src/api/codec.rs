//! The protobuf codec for every riskid service: prost, plus limits on repeated fields that
//! are checked on the wire *before* a message is decoded.
//!
//! An empty protobuf message is two bytes on the wire but hundreds in memory once decoded,
//! so a size limit alone still lets 1 MB of input become hundreds of MB. Counting the
//! elements of the few repeated message fields that callers fill (pupils to score, records
//! in a batch) costs one pass over bytes already in hand and allocates nothing.

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A repeated (or single) message field, the most elements it may hold, and the limits
/// inside each element.
pub struct Repeated {
    pub field: u32,
    pub name: &'static str,
    pub max: usize,
    pub inner: &'static [Repeated],
}

/// Wire limits of one message type.
pub struct WireLimits {
    pub fields: &'static [Repeated],
    /// Most counted elements at every depth together.
    pub max_total: usize,
}

/// Most pupils in one ScoreRecords call: at this many, the FULL reply (every reason and its
/// evidence) still fits a default client's 4 MiB (tests/api/service.rs measures it).
pub const MAX_SCORE_PUPILS: usize = 1_500;
/// Most prior terms for one pupil: thirteen school years of three terms.
pub const MAX_PRIOR_TERMS: usize = 39;
/// Most records in one RecordBatch of a feed.
pub const MAX_BATCH_RECORDS: usize = 2_000;

const SCORE_RECORDS: WireLimits = WireLimits {
    fields: &[Repeated {
        field: 1,
        name: "pupils",
        max: MAX_SCORE_PUPILS,
        inner: &[Repeated { field: 3, name: "prior_terms", max: MAX_PRIOR_TERMS, inner: &[] }],
    }],
    // Pupils and prior terms together: decoded memory stays in the tens of MB.
    max_total: 50_000,
};

const SUBMIT_FEED: WireLimits = WireLimits {
    fields: &[Repeated {
        field: 3,
        name: "records",
        max: 1,
        inner: &[Repeated { field: 1, name: "records.records", max: MAX_BATCH_RECORDS, inner: &[] }],
    }],
    max_total: MAX_BATCH_RECORDS + 1,
};

/// Most elements in typed (not raw) tensor contents of one ModelInfer request.
pub const MAX_TYPED_ELEMENTS: usize = 500_000;

const MODEL_INFER: WireLimits = WireLimits {
    fields: &[
        Repeated {
            field: 5,
            name: "inputs",
            max: 64,
            inner: &[Repeated {
                field: 5,
                name: "inputs.contents",
                max: 1,
                inner: &[Repeated {
                    field: 8,
                    name: "inputs.contents.bytes_contents",
                    max: MAX_TYPED_ELEMENTS,
                    inner: &[],
                }],
            }],
        },
        Repeated { field: 7, name: "raw_input_contents", max: 64, inner: &[] },
        Repeated { field: 6, name: "outputs", max: 16, inner: &[] },
        Repeated { field: 4, name: "parameters", max: 16, inner: &[] },
    ],
    max_total: MAX_TYPED_ELEMENTS + 200,
};

/// The limits for a message type, by its protobuf name.
pub fn limits_for(full_name: &str) -> Option<&'static WireLimits> {
    match full_name {
        "riskid.v1.ScoreRecordsRequest" => Some(&SCORE_RECORDS),
        "riskid.v1.SubmitFeedRequest" => Some(&SUBMIT_FEED),
        "inference.ModelInferRequest" => Some(&MODEL_INFER),
        _ => None,
    }
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    prost::encoding::decode_varint(buf).ok()
}

/// Counts limited fields in `buf`. Malformed input returns `Ok`: prost's decoder then
/// reports it properly. Only a limit passed is an error.
fn scan(mut buf: &[u8], rules: &[Repeated], total: &mut usize, max_total: usize) -> Result<(), String> {
    let mut counts = [0usize; 4];
    while buf.has_remaining() {
        let Some(key) = varint(&mut buf) else { return Ok(()) };
        let (field, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => {
                if varint(&mut buf).is_none() {
                    return Ok(());
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Ok(());
                }
                buf.advance(n);
            }
            2 => {
                let Some(len) = varint(&mut buf) else { return Ok(()) };
                let Ok(len) = usize::try_from(len) else { return Ok(()) };
                if len > buf.len() {
                    return Ok(());
                }
                let (body, rest) = buf.split_at(len);
                buf = rest;
                if let Some((i, rule)) = rules.iter().enumerate().find(|(_, r)| r.field == field) {
                    let slot = i.min(counts.len() - 1);
                    counts[slot] += 1;
                    *total += 1;
                    if counts[slot] > rule.max {
                        return Err(format!("{} may hold at most {} entries", rule.name, rule.max));
                    }
                    if *total > max_total {
                        return Err(format!("the request may hold at most {max_total} entries in all"));
                    }
                    if !rule.inner.is_empty() {
                        // Each element's limits are counted afresh.
                        scan(body, rule.inner, total, max_total)?;
                    }
                }
            }
            // Groups (wire types 3 and 4) are never sent by proto3, and prost would skip one
            // without our count seeing what follows it: refuse them.
            3 | 4 => return Err("the request uses protobuf groups, which this API does not accept".into()),
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Checks a message's wire bytes against its type's limits.
pub fn check_wire(full_name: &str, bytes: &[u8]) -> Result<(), Status> {
    let Some(limits) = limits_for(full_name) else { return Ok(()) };
    let mut total = 0;
    scan(bytes, limits.fields, &mut total, limits.max_total)
        .map_err(|m| super::status::with_reason(tonic::Code::InvalidArgument, "MALFORMED_MESSAGE", m))
}

fn malformed(e: prost::DecodeError) -> Status {
    super::status::with_reason(tonic::Code::InvalidArgument, "MALFORMED_MESSAGE", format!("malformed message: {e}"))
}

/// prost with wire limits; the generated clients and servers use it (see build.rs).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + prost::Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = BoundedEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        BoundedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct BoundedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for BoundedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(buf).map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[derive(Debug)]
pub struct BoundedDecoder<U>(PhantomData<U>);

impl<U: Message + prost::Name + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        // tonic hands over one whole message, contiguous in memory.
        if buf.chunk().len() == buf.remaining() {
            check_wire(&U::full_name(), buf.chunk())?;
        } else {
            let bytes = buf.copy_to_bytes(buf.remaining());
            check_wire(&U::full_name(), &bytes)?;
            return U::decode(bytes).map(Some).map_err(malformed);
        }
        U::decode(buf).map(Some).map_err(malformed)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pb;

    fn empty_pupils(n: usize, priors: usize) -> Vec<u8> {
        let p = pb::PupilToScore { prior_terms: vec![pb::PriorTerm::default(); priors], ..Default::default() };
        pb::ScoreRecordsRequest { pupils: vec![p; n], ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn counts_hold_before_decoding() {
        let name = "riskid.v1.ScoreRecordsRequest";
        assert!(check_wire(name, &empty_pupils(MAX_SCORE_PUPILS, 0)).is_ok());
        let e = check_wire(name, &empty_pupils(MAX_SCORE_PUPILS + 1, 0)).unwrap_err();
        assert!(e.message().contains("pupils may hold at most 1500"), "{}", e.message());
        assert!(check_wire(name, &empty_pupils(1, MAX_PRIOR_TERMS)).is_ok());
        assert!(check_wire(name, &empty_pupils(1, MAX_PRIOR_TERMS + 1)).is_err());
        // Within each limit, but too many in all.
        assert!(check_wire(name, &empty_pupils(1_500, 33)).unwrap_err().message().contains("in all"));
    }

    #[test]
    fn a_batch_of_millions_of_empty_records_is_refused_unread() {
        let batch = pb::RecordBatch { records: vec![pb::PupilRecord::default(); MAX_BATCH_RECORDS + 1] };
        let msg = pb::SubmitFeedRequest { part: Some(pb::submit_feed_request::Part::Records(batch)) }.encode_to_vec();
        assert!(check_wire("riskid.v1.SubmitFeedRequest", &msg).is_err());
        let ok = pb::RecordBatch { records: vec![pb::PupilRecord::default(); MAX_BATCH_RECORDS] };
        let msg = pb::SubmitFeedRequest { part: Some(pb::submit_feed_request::Part::Records(ok)) }.encode_to_vec();
        assert!(check_wire("riskid.v1.SubmitFeedRequest", &msg).is_ok());
    }

    #[test]
    fn an_empty_group_cannot_hide_what_follows_from_the_count() {
        // Found in review: an empty group on field 15, then 2,000,000 empty pupils.
        let mut bytes = vec![0x7b, 0x7c];
        bytes.extend([0x0a_u8, 0x00].repeat(MAX_SCORE_PUPILS + 1));
        assert!(check_wire("riskid.v1.ScoreRecordsRequest", &bytes).is_err());
        let mut inner = vec![0x7b, 0x7c];
        inner.extend([0x1a_u8, 0x00].repeat(MAX_PRIOR_TERMS + 1));
        let mut one = vec![0x0a];
        prost::encoding::encode_varint(inner.len() as u64, &mut one);
        one.extend(inner);
        assert!(check_wire("riskid.v1.ScoreRecordsRequest", &one).is_err());
    }

    #[test]
    fn malformed_bytes_are_left_to_prost() {
        for bytes in [&[0xff_u8; 12][..], &[0x0a, 0x80], &[0x0a, 0x05, 1]] {
            assert!(check_wire("riskid.v1.ScoreRecordsRequest", bytes).is_ok());
            assert!(pb::ScoreRecordsRequest::decode(bytes).is_err());
        }
    }
}
