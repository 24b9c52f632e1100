//! AuditService: the audit trail, its verification, and the override report.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{action_from_pb, action_to_pb, json_to_struct, role_to_pb, timestamp};
use super::paging::{Query, STANDARD};
use super::pb::{self, audit_service_server::AuditService};
use super::principal;
use super::status::bad_field;
use crate::app::App;
use crate::app::AppError;

pub struct AuditApi {
    app: Arc<App>,
}

impl AuditApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListAuditEventsRequest { action, school_urn, page_size: size, page_token } = request.into_inner();
        let limit = STANDARD.of(size)?;
        let q = Query::new("ListAuditEvents", who.key_id, &(&action, &school_urn));
        // Keyset: the token holds the last sequence number shown.
        let after = q.position(&page_token)?.unwrap_or(0);
        let opt = |s: String| (!s.is_empty()).then_some(s);
        let action = match action {
            0 => None,
            v => Some(
                action_from_pb(v)
                    .ok_or_else(|| bad_field("action", "INVALID_VALUE", "action is not an AuditAction"))?,
            ),
        };
        let events = self.app.audit_events(&who, after, limit, action, opt(school_urn)).await?;
        let next_page_token = if events.len() == limit {
            events.last().map(|e| q.token(e.seq)).unwrap_or_default()
        } else {
            String::new()
        };
        let events = events
            .into_iter()
            .map(|e| pb::AuditEvent {
                seq: e.seq,
                event_time: Some(timestamp(e.event.at)),
                actor_key_id: e.event.actor_key_id,
                actor_role: role_to_pb(&e.event.actor_role) as i32,
                action: action_to_pb(e.event.action) as i32,
                school_urn: e.event.school_urn.unwrap_or_default(),
                subject: e.event.subject,
                details: Some(json_to_struct(&e.event.details)),
                prev_hash: e.prev_hash,
                hash: e.hash,
            })
            .collect();
        Ok(Response::new(pb::ListAuditEventsResponse { events, next_page_token }))
    }

    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        let who = principal(&request)?;
        let pb::VerifyAuditChainRequest { checkpoint } = request.into_inner();
        let checkpoint = checkpoint.map(|c| crate::audit::Checkpoint { seq: c.seq, hash: c.hash, mac: c.mac });
        let v = self.app.verify_audit(&who, checkpoint).await?;
        Ok(Response::new(match v.problem {
            None => pb::VerifyAuditChainResponse {
                ok: true,
                events_checked: v.events,
                first_broken_seq: 0,
                problem: String::new(),
            },
            Some(b) => pb::VerifyAuditChainResponse {
                ok: false,
                events_checked: v.events,
                first_broken_seq: b.seq,
                problem: b.problem,
            },
        }))
    }

    async fn get_audit_checkpoint(
        &self,
        request: Request<pb::GetAuditCheckpointRequest>,
    ) -> Result<Response<pb::AuditCheckpoint>, Status> {
        let who = principal(&request)?;
        let cp = self.app.audit_checkpoint(&who).await?;
        let cp = cp.ok_or_else(|| AppError::conflict("AUDIT_CHAIN_EMPTY", "the audit chain is empty"))?;
        Ok(Response::new(pb::AuditCheckpoint { seq: cp.seq, hash: cp.hash, mac: cp.mac }))
    }

    async fn get_override_report(
        &self,
        request: Request<pb::GetOverrideReportRequest>,
    ) -> Result<Response<pb::OverrideReport>, Status> {
        let who = principal(&request)?;
        let rows = self.app.override_report(&who).await?;
        Ok(Response::new(pb::OverrideReport {
            rows: rows
                .into_iter()
                .map(|r| pb::OverrideRow {
                    dimension: r.dimension,
                    value: r.value,
                    proposed: r.proposed as u32,
                    confirmed: r.confirmed as u32,
                    removed: r.removed as u32,
                    added: r.added as u32,
                    override_rate: r.override_rate,
                })
                .collect(),
        }))
    }
}
