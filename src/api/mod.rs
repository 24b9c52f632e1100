//! The gRPC edge: generated types, conversions, status mapping, access layer, handlers.

mod audit;
pub mod codec;
mod cohort;
mod convert;
mod feed;
mod gateway;
mod inference;
mod limits;
mod model;
mod outcome;
mod paging;
mod risk;
mod status;

pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("riskid.v1");

    /// The Open Inference Protocol v2 (KServe), served beside riskid.v1.
    pub mod inference {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("inference");
    }

    /// Descriptor set of every riskid proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/riskid_descriptor.bin"));
}

pub use audit::AuditApi;
pub use cohort::CohortApi;
pub use convert::{
    action_from_pb, action_to_pb, record_cells, record_from_cells, records_to_csv, school_term_to_pb as school_term_pb,
    term_from_pb,
};
pub use feed::FeedApi;
pub use gateway::{Gate, GatewayLayer, gate, policy};
pub use inference::InferenceApi;
pub use model::ModelApi;
pub use outcome::{METHOD as OUTCOME_METHOD, OutcomeApi, outcomes_to_pb};
pub use risk::RiskApi;
pub use status::{REASONS as ERROR_REASONS, field_of, parse_field};

use crate::auth::Principal;

/// The authenticated caller, placed in the request by the gateway layer.
/// Its absence means the layer did not run, so the call is refused (fail closed).
pub(crate) fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| status::with_reason(tonic::Code::Unauthenticated, "API_KEY_MISSING", "an API key is required"))
}
